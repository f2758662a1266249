"""The conflict rules on hand-made histories (no server): each anomaly fires, benign workloads stay quiet."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from cdc.conflicts.model import Change, TableRules
from cdc.conflicts.rules import detect, duplicate_natural_key, natural_key_values

T0 = datetime(2026, 11, 22, 10, 2, 11, tzinfo=UTC)
WINDOW = timedelta(minutes=10)
_ids = itertools.count(1)
WRITERS = TableRules(writer_column="updated_by", ignore_columns=frozenset({"updated_at"}))


def change(
    op, before, after, seconds=0, writer=None, source="crm", txid=None, table="public.customers", key='{"id":42}'
):
    n = next(_ids)
    if after is None:
        changed = frozenset()
    elif before is None:
        changed = frozenset(after)
    else:
        changed = frozenset(name for name, value in after.items() if before.get(name) != value)
    return Change(
        f"{source}:0/{n}:0",
        source,
        table,
        key,
        op,
        before,
        after,
        T0 + timedelta(seconds=seconds),
        writer,
        txid or str(n),
        changed,
    )


def run(history, rules, window=WINDOW):
    """Feed changes in order; return every conflict with the index of the change that raised it."""
    found = []
    for i, current in enumerate(history):
        previous = history[i - 1] if i else None
        for conflict in detect(current, previous, history[:i], rules, window):
            found.append((i, conflict))
    return found


def row(**values):
    base = {
        "id": 42,
        "phone": "555-0100",
        "email": "a@x.io",
        "stage": "lead",
        "updated_by": None,
        "updated_at": "t0",
        "lock_version": 1,
    }
    base.update(values)
    return base


def test_stale_full_row_save_is_a_lost_update_with_a_clear_explanation():
    r0 = row(updated_by="import")
    w1 = row(phone="555-0199", updated_by="sales-app", updated_at="t1")
    w2 = row(email="b@x.io", updated_by="erp-sync", updated_at="t2")  # phone back to 555-0100 from a stale copy
    history = [
        change("insert", None, r0, writer="import"),
        change("update", r0, w1, 0, "sales-app"),
        change("update", w1, w2, 3, "erp-sync"),
    ]
    found = run(history, WRITERS)
    assert [(i, c.type, c.fields) for i, c in found] == [(2, "lost_update", ("phone",))]
    conflict = found[0][1]
    assert conflict.severity == "error"
    assert conflict.explanation == (
        "phone set by sales-app at 10:02:11 was reverted by erp-sync at 10:02:14 from a copy read before it"
    )
    assert [e.event_id for e in conflict.events] == [history[1].event_id, history[2].event_id]
    assert conflict.evidence == {"lost": {"phone": "555-0199"}, "restored": {"phone": "555-0100"}}


def test_version_column_that_does_not_advance_is_a_lost_update():
    rules = TableRules(version_column="lock_version")
    r1 = row(lock_version=1)
    w1 = row(phone="1", lock_version=2)
    w2 = row(phone="1", email="c@x.io", lock_version=2)  # read version 1, wrote 2 again
    found = run([change("insert", None, r1), change("update", r1, w1, 1), change("update", w1, w2, 2)], rules)
    assert [(i, c.type, c.fields, c.evidence) for i, c in found] == [
        (2, "lost_update", ("lock_version",), {"previous_version": 2, "new_version": 2})
    ]


def test_two_writers_on_the_same_field_are_a_concurrent_overwrite():
    r0 = row()
    w1 = row(phone="555-1111", updated_by="sales-app")
    w2 = row(phone="555-2222", updated_by="erp-sync")
    found = run(
        [change("insert", None, r0), change("update", r0, w1, 1, "sales-app"), change("update", w1, w2, 5, "erp-sync")],
        WRITERS,
    )
    assert [(i, c.type, c.fields, c.severity) for i, c in found] == [(2, "concurrent_overwrite", ("phone",), "warning")]
    assert found[0][1].explanation == "phone set by sales-app at 10:02:12 was overwritten by erp-sync at 10:02:16"


def test_outside_the_window_nothing_fires():
    r0 = row()
    w1 = row(phone="555-1111", updated_by="sales-app")
    w2 = row(phone="555-2222", updated_by="erp-sync")
    history = [
        change("insert", None, r0),
        change("update", r0, w1, 1, "sales-app"),
        change("update", w1, w2, 1000, "erp-sync"),
    ]
    assert run(history, WRITERS) == []


def test_delete_racing_an_update_and_status_moving_back():
    rules = TableRules(writer_column="updated_by", status_column="stage", status_order=("lead", "qualified", "won"))
    r0 = row(stage="qualified")
    w1 = row(stage="won", updated_by="sales-app")
    w2 = row(stage="qualified", updated_by="sales-app")
    history = [
        change("insert", None, r0),
        change("update", r0, w1, 1, "sales-app"),
        change("update", w1, w2, 2, "sales-app"),
        change("delete", w2, None, 3, "cleanup-job"),
    ]
    found = run(history, rules)
    assert [(i, c.type, c.fields) for i, c in found] == [
        (2, "state_regression", ("stage",)),
        (3, "update_delete", ("stage",)),
    ]
    assert found[0][1].explanation.startswith('public.customers {"id":42}: stage moved back from won to qualified')


def test_missed_change_is_a_stream_gap_and_reinsert_of_a_live_key_a_duplicate():
    r0 = row()
    seen_by_nobody = row(phone="555-7777")
    w2 = row(phone="555-8888")
    history = [change("insert", None, r0), change("update", seen_by_nobody, w2, 5)]
    found = run(history, TableRules())
    assert [(i, c.type, c.fields, c.severity) for i, c in found] == [(1, "stream_gap", ("phone",), "critical")]
    again = run([change("insert", None, r0), change("insert", None, row(), 1)], TableRules())
    assert [(i, c.type, c.fields) for i, c in again] == [(1, "duplicate_key", ("id",))]
    after_delete = [change("insert", None, r0), change("delete", r0, None, 1), change("insert", None, r0, 2)]
    assert run(after_delete, TableRules()) == []


def test_natural_key_duplicates():
    rules = TableRules(natural_keys=(("email",), ("phone",)))
    owner = change("insert", None, row(), 0, "crm-import")
    newcomer = change("insert", None, row(id=43, phone=None), 4, source="erp", key='{"id":43}')
    keys = natural_key_values(newcomer.after, rules)
    assert keys == [(("email",), ("a@x.io",))]
    conflict = duplicate_natural_key(newcomer, owner, *keys[0])
    assert (conflict.type, conflict.fields, conflict.evidence["owner_key"]) == (
        "duplicate_key",
        ("email",),
        '{"id":42}',
    )


def test_benign_counter_and_own_undo_stay_quiet():
    # x = x + delta by many transactions, one delta cancelling the previous one
    counter = TableRules()
    states = [5, 6, 5, 9, 9 - 4, 7]
    history = [change("insert", None, {"id": 1, "x": states[0]}, key='{"id":1}')]
    for i in range(1, len(states)):
        history.append(change("update", {"id": 1, "x": states[i - 1]}, {"id": 1, "x": states[i]}, i, key='{"id":1}'))
    assert run(history, counter) == []
    # one writer edits its own row repeatedly and undoes its own edit
    r0 = row(updated_by="sales-app")
    w1 = row(phone="1", email="e1", updated_by="sales-app")
    w2 = row(phone="555-0100", email="e2", updated_by="sales-app")
    own = [
        change("insert", None, r0, 0, "sales-app"),
        change("update", r0, w1, 1, "sales-app"),
        change("update", w1, w2, 2, "sales-app"),
    ]
    assert run(own, WRITERS) == []
