"""Settling a transaction's natural keys at once finds the owners that noting them change by change would."""

from datetime import UTC, datetime

from cdc.conflicts.model import Change
from cdc.conflicts.natural_keys import HeldKey, NaturalKeyBatch, StoredHolder

TABLE = ("public", "customers")
EMAIL = '["email"]'


def _held(row_id: int, email: str, n: int, report: bool = True) -> HeldKey:
    key, event_id = f'{{"id":{row_id}}}', f"crm:0/{n}:0"
    change = Change(
        event_id,
        "crm",
        "public.customers",
        key,
        "insert",
        None,
        {"id": row_id, "email": email},
        datetime(2026, 11, 22, 10, 0, n, tzinfo=UTC),
        "app",
        str(n),
    )
    return HeldKey(
        (*TABLE, EMAIL, f'["{email}"]', key, event_id), ("email",), (email,), change, (f"{n:08d}", 0), report
    )


def _owners(settled) -> list[tuple[str, str | None]]:
    """Each held key's row and the row owning the key before it (None: none), in the order held."""
    found = [(held, owner.key) for held, owner in settled.owned] + [(held, None) for held in settled.unowned]
    return [(held.key, owner) for held, owner in sorted(found, key=lambda pair: pair[0].position)]


def test_keys_no_other_row_holds_are_all_kept():
    batch = NaturalKeyBatch()
    first, second = _held(1, "a@x", 1), _held(2, "b@x", 2)
    batch.hold(first)
    batch.hold(second)
    assert batch.lookups() == {(TABLE, EMAIL): ['["a@x"]', '["b@x"]']}
    settled = batch.settle({})
    assert _owners(settled) == [('{"id":1}', None), ('{"id":2}', None)]
    assert settled.kept == [first.stored, second.stored] and settled.dropped_rows == []


def test_a_key_a_stored_row_holds_names_that_row():
    batch = NaturalKeyBatch()
    batch.hold(_held(2, "a@x", 2))
    settled = batch.settle({(TABLE, EMAIL, '["a@x"]'): [StoredHolder('{"id":1}', "crm:0/1:0")]})
    assert _owners(settled) == [('{"id":2}', '{"id":1}')]
    assert settled.owned[0][1].event_id == "crm:0/1:0"
    assert [row[4] for row in settled.kept] == ['{"id":2}']  # the stored holder stays as stored


def test_the_second_of_two_rows_given_one_key_in_a_transaction_meets_the_first():
    batch = NaturalKeyBatch()
    batch.hold(_held(1, "a@x", 1))
    batch.hold(_held(2, "a@x", 2))
    settled = batch.settle({})
    assert _owners(settled) == [('{"id":1}', None), ('{"id":2}', '{"id":1}')]
    assert settled.owned[0][1].change.event_id == "crm:0/1:0"  # the change of the row holding it first
    assert [row[4] for row in settled.kept] == ['{"id":1}', '{"id":2}']


def test_a_row_that_let_its_key_go_earlier_in_the_transaction_holds_it_no_more():
    batch = NaturalKeyBatch()
    batch.drop(TABLE, '{"id":1}')  # the stored holder is deleted, then another row takes its e-mail
    batch.hold(_held(2, "a@x", 2))
    settled = batch.settle({(TABLE, EMAIL, '["a@x"]'): [StoredHolder('{"id":1}', "crm:0/1:0")]})
    assert _owners(settled) == [('{"id":2}', None)]
    assert settled.dropped_rows == [(TABLE, '{"id":1}')]
    assert [row[4] for row in settled.kept] == ['{"id":2}']


def test_only_a_rows_last_keys_are_kept_and_a_later_holder_of_its_old_key_is_no_duplicate():
    batch = NaturalKeyBatch()
    batch.hold(_held(1, "a@x", 1))  # a new row
    batch.drop(TABLE, '{"id":1}')  # its e-mail changes
    batch.hold(_held(1, "b@x", 2))
    batch.hold(_held(2, "a@x", 3))  # another row takes the old one
    batch.hold(_held(3, "b@x", 4))  # and a third the new one
    settled = batch.settle({})
    assert _owners(settled) == [('{"id":1}', None), ('{"id":1}', None), ('{"id":2}', None), ('{"id":3}', '{"id":1}')]
    assert sorted((row[3], row[4]) for row in settled.kept) == [
        ('["a@x"]', '{"id":2}'),
        ('["b@x"]', '{"id":1}'),
        ('["b@x"]', '{"id":3}'),
    ]
    assert settled.dropped_rows == [(TABLE, '{"id":1}')]


def test_a_row_holding_its_key_again_is_not_its_own_duplicate():
    batch = NaturalKeyBatch()
    batch.drop(TABLE, '{"id":1}')  # an update of a stored row that keeps its e-mail
    batch.hold(_held(1, "a@x", 2))
    settled = batch.settle({(TABLE, EMAIL, '["a@x"]'): [StoredHolder('{"id":1}', "crm:0/1:0")]})
    assert _owners(settled) == [('{"id":1}', None)]
    assert [row[4] for row in settled.kept] == ['{"id":1}']
