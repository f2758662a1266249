"""The one event shape: the values a target takes from an event in memory are those it would
read from the event's document in the log, for every kind of value a source produces."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.config import Settings
from cdc.model import Event, RowChange, TxnBegin
from cdc.pipeline.versioner import Versioner
from cdc.state.store import StateStore
from cdc.targets.convert import FAMILIES, column_converter, old_key_and_after
from cdc.values import RawJson, Verbatim, encode_value, event_row, event_value, load_doc


def _same(a: Any, b: Any) -> bool:
    """Equal in type and digits (``Decimal("1.0") == Decimal("1.00")``, which a target would
    store differently, is not the same here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return repr(a) == repr(b)


_json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
_offsets = st.timedeltas(min_value=timedelta(hours=-14), max_value=timedelta(hours=14)).map(
    lambda d: timezone(timedelta(minutes=int(d.total_seconds() // 60)))
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53 - 3, max_value=2**64)
    | st.floats()
    | st.decimals()
    | st.text()
    | st.text().map(Verbatim)
    | st.binary(max_size=40)
    | st.datetimes()
    | st.datetimes(timezones=_offsets)
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | _json_documents.map(lambda doc: RawJson(json.dumps(doc)))
)
source_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=10)


@given(source_values)
@settings(max_examples=600, deadline=None)
def test_a_value_in_memory_is_the_value_its_document_holds(value: Any) -> None:
    assert _same(event_value(value), load_doc(encode_value(value)))


@given(st.dictionaries(st.text(min_size=1, max_size=8), source_values, max_size=6))
@settings(max_examples=200, deadline=None)
def test_a_row_in_memory_is_the_row_its_document_holds(row: dict[str, Any]) -> None:
    from cdc.values import dumps_row

    assert _same(event_row(row), load_doc(dumps_row(row)))


@given(source_values, st.sampled_from(sorted(FAMILIES)))
@settings(max_examples=600, deadline=None)
def test_every_converter_gives_a_target_the_same_parameter_from_memory_and_from_the_log(
    value: Any, family: str
) -> None:
    convert = column_converter(family)

    def outcome(loaded: Any) -> Any:
        try:
            return ("ok", convert(loaded))
        except Exception as exc:  # a refusal must be the same refusal
            return ("refused", type(exc).__name__, str(exc))

    in_memory, from_log = outcome(event_value(value)), outcome(load_doc(encode_value(value)))
    assert repr(in_memory) == repr(from_log)


def test_an_event_gives_targets_the_same_images_in_memory_and_read_back_from_the_log(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        sources=[{"name": "erp", "kind": "mysql", "dsn": "mysql://x/erp", "server_id": 7, "tables": ["erp.customers"]}],
    )
    store = StateStore(tmp_path)
    versioner = Versioner(settings, store, "erp")
    before = {
        "id": 2**60,
        "name": 'Zoë "quoted" \\ name',
        "balance": Decimal("1234.50"),
        "ratio": 0.1,
        "huge": 1e300,
        "photo": b"\x00\xffbytes",
        "born": date(1970, 1, 2),
        "seen": datetime(2026, 12, 3, 10, 0, 0, 123456),
        "at": time(23, 59, 58, 1),
        "wait": timedelta(days=-1, seconds=5),
        "tags": ["a", "b"],
        "doc": RawJson('{"n": 1.10, "big": 123456789012345678901234567890}'),
        "uid": uuid.UUID(int=7),
        "none": None,
    }
    after = {**before, "id": 2**60 + 1, "ratio": float("nan"), "balance": Decimal("-0.000")}
    change = RowChange("erp", "customers", "update", {"id": 2**60 + 1}, before, after)
    txn = TxnBegin("0000000001", "0-1-1", None, datetime(2026, 12, 3, tzinfo=UTC))
    with store.transaction():
        event = versioner.version(txn, 0, change)
        store.append([event])
    [logged] = store.events_after("erp", ("", -1), "~", 10)
    assert logged.change is None and event.change is change
    assert _same(event.images().key, logged.images().key)
    assert _same(event.images().before, logged.images().before)
    assert _same(event.images().after, logged.images().after)
    assert repr(old_key_and_after(event)) == repr(old_key_and_after(logged))
    assert old_key_and_after(event)[0] == {"id": str(2**60)}  # the row as it was: its key before the update
    assert logged.doc == event.doc and logged.key_json == event.key_json


def test_a_conflict_found_when_a_batch_is_settled_reaches_the_event_in_memory(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        sources=[{"name": "crm", "kind": "postgres", "dsn": "postgresql://x/crm", "tables": ["public.customers"]}],
        tables=[{"match": "public.customers", "natural_keys": [["email"]]}],
    )
    store = StateStore(tmp_path)
    versioner = Versioner(settings, store, "crm")
    events: list[Event] = []
    with store.transaction():
        for seq, key in enumerate((1, 2)):
            row = {"id": key, "email": "same@example.com"}
            change = RowChange("public", "customers", "insert", {"id": key}, None, row)
            txn = TxnBegin("0000000001", "0/1", "7", datetime(2026, 12, 3, tzinfo=UTC))
            event = versioner.version(txn, seq, change)
            store.append([event])
            events.append(event)
    logged = store.events_after("crm", ("", -1), "~", 10)
    assert [e.doc for e in events] == [e.doc for e in logged]
    assert json.loads(events[1].doc)["conflicts"], "the duplicate natural key is in the event itself"
