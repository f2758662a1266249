"""The entity and repair bookkeeping in the state store, without servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cdc.config import Settings
from cdc.conflicts.model import Change
from cdc.conflicts.vectors import (
    EntityRow,
    Side,
    differing_fields,
    dominates,
    observe,
    resolve,
    same_value,
)
from cdc.model import sync_source
from cdc.pipeline.entities import EntitySync
from cdc.state.store import StateStore


def _settings(tmp_path: Path, **extra) -> Settings:
    return Settings(
        state_dir=tmp_path,
        sources=[{"name": "crm", "kind": "postgres", "dsn": "postgresql://x/crm", "tables": ["public.customers"]}],
        **extra,
    )


def test_a_repair_is_dropped_when_the_row_changed_again_before_it_was_written(tmp_path):
    store = StateStore(tmp_path)
    sync = EntitySync(_settings(tmp_path), store)
    key = '{"id":1}'
    cause = Change(
        "crm:0/1:0",
        "crm",
        "public.customers",
        key,
        "update",
        {"id": 1},
        {"id": 1, "phone": "2"},
        datetime.now(UTC),
        "erp-sync",
        "7",
    )
    with store.transaction():
        version = store.next_version("crm", "public", "customers", key, cause.event_id, live=True)
        sync.repair("crm", key, {"id": 1, "phone": "1"}, cause, version)
    [event] = store.events_after(sync_source("crm"), ("", -1), "~", 10)
    doc = json.loads(event.doc)
    assert doc["after"] == {"id": 1, "phone": "1"} and not sync.not_to_write(doc, {})
    with store.transaction():
        store.next_version("crm", "public", "customers", key, "crm:0/2:0", live=True)
    assert sync.not_to_write(doc, {})


def test_vectors_tell_ordered_from_concurrent_changes():
    state = EntityRow()
    first = observe(state, "crm")
    assert not first.concurrent and first.vector == {"crm": 1}
    state.vector, state.seen["crm"] = first.vector, first.mine
    second = observe(state, "erp")  # erp never received crm's change
    assert second.concurrent and second.unseen == ("crm",) and second.vector == {"crm": 1, "erp": 1}
    state.seen["erp"] = {"crm": 1}  # now it has
    third = observe(state, "erp")
    assert not third.concurrent and dominates(third.mine, state.vector)


def test_resolution_policies_between_two_sources():
    base = {"id": 1, "phone": "1", "limit": "10"}
    crm = Side("crm", {"id": 1, "phone": "2", "limit": "10"}, "2026-11-22T10:00:01+00:00", base)
    erp = Side("erp", {"id": 1, "phone": "3", "limit": "99"}, "2026-11-22T10:00:00", base)
    assert resolve("last_writer_wins", crm, erp, [], {}) == (crm.row, "crm")
    assert resolve("source_priority", crm, erp, ["erp", "crm"], {"phone": "crm"}) == (
        {"id": 1, "phone": "2", "limit": "99"},
        "merged",
    )
    assert resolve("field_merge", erp, crm, [], {})[0] == {"id": 1, "phone": "2", "limit": "99"}
    assert same_value("10.00", 10) and same_value("2026-11-22T10:00:00", "2026-11-22T10:00:00+00:00")
    assert differing_fields(crm.row, erp.row, frozenset({"limit"})) == ["phone"]


def test_row_history_in_memory_is_bounded_by_the_detection_window(tmp_path):
    from datetime import timedelta

    from cdc.conflicts.detector import Detector
    from cdc.model import RowChange
    from cdc.values import dumps_row

    settings = _settings(tmp_path)
    settings.conflicts.window_seconds = 60
    store = StateStore(tmp_path)
    detector = Detector(settings, store, "crm")
    start = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    before = None
    with store.transaction():
        for n in range(40):  # one change of the row every 30 seconds, for 20 minutes
            after = {"id": 1, "n": n}
            row = RowChange("public", "customers", "insert" if n == 0 else "update", {"id": 1}, before, after)
            detector.check(
                row,
                f"crm:0/{n}:0",
                '{"id":1}',
                dumps_row(before),
                dumps_row(after),
                start + timedelta(seconds=30 * n),
                None,
                str(n),
                ["n"],
                (f"{n:08d}", 0),
                None if n == 0 else True,
            )
            before = after
    assert detector.changes_in_memory <= 3  # the window's (60 s) changes and the last one


def test_pruning_keeps_the_events_that_natural_keys_point_to(tmp_path):
    import sqlite3
    import time
    from datetime import timedelta

    from cdc.model import RowChange, TxnBegin
    from cdc.pipeline.versioner import Versioner

    settings = _settings(tmp_path, tables=[{"match": "public.customers", "natural_keys": [["email"]]}])
    with sqlite3.connect(tmp_path / "state.db") as old:  # a store from before pruning found them by row
        old.execute(
            "CREATE TABLE natural_keys (source TEXT, schema_name TEXT, table_name TEXT, names TEXT,"
            " vals TEXT, key TEXT, event_id TEXT, PRIMARY KEY (source, schema_name, table_name, names, vals,"
            " key)) WITHOUT ROWID"
        )
        old.execute("CREATE INDEX natural_keys_by_event ON natural_keys (event_id)")
    store = StateStore(tmp_path)
    assert not store._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'natural_keys_by_event'").fetchall()
    versioner = Versioner(settings, store, "crm")
    start = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    ids = {}

    def commit(n: int, *changes: tuple[str, dict | None, dict | None]) -> list:
        txn = TxnBegin(f"{n:08d}", f"0/{n}", str(n), start + timedelta(seconds=n))
        with store.transaction():
            events = [
                versioner.version(
                    txn, seq, RowChange("public", "customers", op, {"id": (after or before)["id"]}, before, after)
                )
                for seq, (op, before, after) in enumerate(changes)
            ]
            store.append(events)
        for event in events:
            ids[(n, event.key["id"])] = event.event_id
        return [json.loads(store.event_doc(event.event_id)) for event in events]  # as stored when committed

    one, two = {"id": 1, "email": "a@x", "phone": "1"}, {"id": 2, "email": "b@x", "phone": "1"}
    commit(1, ("insert", None, one), ("insert", None, two))
    commit(2, ("update", two, {**two, "phone": "2"}))  # the natural key stays with the insert's event
    commit(3, ("update", {**two, "phone": "2"}, {**two, "phone": "2", "email": "c@x"}))  # now with this one
    store.record_target_position("dwh", "crm", ("00000003", 0))
    with store.transaction():
        store.prune_events(time.time() + 1, 100)
    kept = [row[0] for row in store._db.execute("SELECT event_id FROM events ORDER BY log_id")]
    assert kept == [ids[(1, 1)], ids[(3, 2)]]
    [doc] = commit(4, ("insert", None, {"id": 3, "email": "a@x", "phone": "9"}))
    [conflict] = store.conflicts(conflict_id=doc["conflicts"][0])
    assert conflict["type"] == "duplicate_key" and conflict["events"][0]["event_id"] == ids[(1, 1)]


def test_natural_keys_are_settled_when_their_transaction_commits(tmp_path):
    from cdc.model import RowChange, TxnBegin
    from cdc.pipeline.versioner import Versioner

    settings = _settings(tmp_path, tables=[{"match": "public.customers", "natural_keys": [["email"]]}])
    store = StateStore(tmp_path)
    versioner = Versioner(settings, store, "crm")
    start = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

    def changes(n: int, *rows: tuple[str, dict | None, dict | None]) -> list:
        txn = TxnBegin(f"{n:08d}", f"0/{n}", str(n), start)
        events = [
            versioner.version(
                txn, seq, RowChange("public", "customers", op, {"id": (after or before)["id"]}, before, after)
            )
            for seq, (op, before, after) in enumerate(rows)
        ]
        store.append(events)
        return events

    def held() -> list[tuple[str, str]]:
        return store._db.execute("SELECT key, vals FROM natural_key_rows ORDER BY key").fetchall()

    try:
        with store.transaction():
            changes(1, ("insert", None, {"id": 1, "email": "a@x"}))
            raise RuntimeError("the transaction fails")
    except RuntimeError:
        pass
    assert held() == []  # nothing noted in a transaction rolled back is stored, then or later
    with store.transaction():
        first, second = changes(
            2, ("insert", None, {"id": 1, "email": "a@x"}), ("insert", None, {"id": 2, "email": "a@x"})
        )
        assert held() == []  # noted, not yet stored
    assert held() == [('{"id":1}', '["a@x"]'), ('{"id":2}', '["a@x"]')]
    [conflict] = store.conflicts(type="duplicate_key")
    assert [e["event_id"] for e in conflict["events"]] == [first.event_id, second.event_id]
    assert json.loads(store.event_doc(second.event_id))["conflicts"] == [conflict["id"]]  # the stored event says so
    assert json.loads(store.event_doc(first.event_id))["conflicts"] == []
    with store.transaction():  # row 1 lets the e-mail go and row 3 takes it: row 2 holds it still
        changes(3, ("delete", {"id": 1, "email": "a@x"}, None))
        [third_row] = changes(4, ("insert", None, {"id": 3, "email": "a@x"}))
    assert held() == [('{"id":2}', '["a@x"]'), ('{"id":3}', '["a@x"]')]
    [again] = store.conflicts(conflict_id=f"duplicate_key:{third_row.event_id}")
    assert again["events"][0]["event_id"] == second.event_id


def test_natural_keys_of_a_schema_1_store_are_migrated_into_their_sets(tmp_path):
    import sqlite3

    import pytest

    from cdc.state.store import StateStoreError

    with sqlite3.connect(tmp_path / "state.db") as old:  # as cdc kept natural keys before their sets
        old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        old.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        old.execute(
            "CREATE TABLE natural_keys (source TEXT NOT NULL, schema_name TEXT NOT NULL, table_name TEXT NOT"
            " NULL, names TEXT NOT NULL, vals TEXT NOT NULL, key TEXT NOT NULL, event_id TEXT NOT NULL,"
            " PRIMARY KEY (source, schema_name, table_name, names, vals, key)) WITHOUT ROWID"
        )
        old.executemany(
            "INSERT INTO natural_keys VALUES ('crm', 'public', 'customers', ?, ?, ?, ?)",
            [
                ('["email"]', '["a@x"]', '{"id":1}', "crm:0/1:0"),
                ('["phone"]', '["1"]', '{"id":1}', "crm:0/1:0"),
                ('["email"]', '["b@x"]', '{"id":2}', "crm:0/2:0"),
            ],
        )
    store = StateStore(tmp_path)
    assert store.natural_key_holders("crm", "public", "customers", '["email"]', ['["a@x"]', '["b@x"]', '["c@x"]']) == {
        '["a@x"]': [('{"id":1}', "crm:0/1:0")],
        '["b@x"]': [('{"id":2}', "crm:0/2:0")],
    }
    assert store.natural_key_holders("crm", "public", "customers", '["phone"]', ['["1"]']) == {
        '["1"]': [('{"id":1}', "crm:0/1:0")]
    }
    assert not store._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'natural_keys'").fetchall()
    with store.transaction():  # the row lets both its keys go, whatever their sets
        store.drop_natural_keys("crm", "public", "customers", '{"id":1}')
    assert store._db.execute("SELECT key, vals FROM natural_key_rows").fetchall() == [('{"id":2}', '["b@x"]')]
    store.close()
    with sqlite3.connect(tmp_path / "state.db") as migrated:  # as a later cdc would leave it
        migrated.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(StateStoreError, match="written by a newer cdc"):
        StateStore(tmp_path)
