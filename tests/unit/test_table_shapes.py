"""Schema changes seen by the versioner: the first description of a table is recorded quietly,
a changed one rides on the table's next event (and only once, across restarts too), and the
detector takes no column a DDL touched for a missed change."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cdc.config import Settings
from cdc.model import RowChange, SourceColumn, TableShape, TxnBegin
from cdc.pipeline.shapes import reread_key, rewrites_rows, widening
from cdc.pipeline.versioner import Versioner
from cdc.state.store import StateStore

COLUMNS = (SourceColumn("id", "bigint"), SourceColumn("name", "text"))
WIDER = (*COLUMNS, SourceColumn("farbe", "character varying(20)"))


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path,
        sources=[{"name": "crm", "kind": "postgres", "dsn": "postgresql://x/crm", "tables": ["public.customers"]}],
    )


def _txn(n: int) -> TxnBegin:
    return TxnBegin(f"{n:016d}", f"0/{n:X}", str(n), datetime(2026, 12, 3, 10, n, tzinfo=UTC))


def _stored(store: StateStore, versioner: Versioner, txn: TxnBegin, *changes: RowChange):
    with store.transaction():
        events = versioner.version_all(txn, list(enumerate(changes)))
    return events


def test_a_changed_shape_rides_on_the_next_event_once(tmp_path: Path) -> None:
    settings, store = _settings(tmp_path), StateStore(tmp_path)
    versioner = Versioner(settings, store, "crm")
    versioner.shape(TableShape("public", "customers", COLUMNS))
    row = {"id": 1, "name": "Ann"}
    [first] = _stored(store, versioner, _txn(1), RowChange("public", "customers", "insert", {"id": 1}, None, row))
    assert first.schema_change is None and '"schema_change"' not in first.doc

    versioner.shape(TableShape("public", "customers", WIDER, rewrites=True))
    wider = {**row, "farbe": "rot"}
    update = RowChange("public", "customers", "update", {"id": 1}, wider, {**wider, "name": "Anna"})
    [carrier] = _stored(store, versioner, _txn(2), update)
    record = carrier.schema_change
    assert record is not None and json.loads(carrier.doc)["schema_change"] == record
    assert record["op"] == "schema_change" and record["added"] == ["farbe"] and record["source_kind"] == "postgres"
    assert record["columns"][-1] == {"name": "farbe", "type": "character varying(20)"}
    assert carrier.doc.endswith('"conflicts":[]}')
    assert carrier.doc.count('"conflicts":') == 1
    assert json.loads(carrier.doc)["conflicts"] == []  # the new column's default is no stream_gap
    assert store.get_meta(reread_key("crm", "public", "customers")) is not None

    restarted = Versioner(settings, store, "crm")  # the stream describes the table again after a restart
    restarted.shape(TableShape("public", "customers", WIDER))
    [later] = _stored(store, restarted, _txn(3), RowChange("public", "customers", "delete", {"id": 1}, wider, None))
    assert later.schema_change is None
    [logged] = [e for e in store.events_after("crm", ("", -1), "~", 10) if e.event_id == carrier.event_id]
    assert logged.schema_change == record  # read back from the log, as a target behind gets it


def test_which_schema_changes_rewrite_rows() -> None:
    shape = TableShape("public", "customers", WIDER)
    assert not rewrites_rows(shape, ["farbe"], [], [])  # a new column without a default: NULL everywhere
    assert rewrites_rows(TableShape("public", "customers", WIDER, filled=frozenset({"farbe"})), ["farbe"], [], [])
    assert rewrites_rows(shape, ["colour"], ["farbe"], [])  # a rename: the new column holds the old values
    assert not rewrites_rows(shape, [], [], [("character varying(20)", "character varying(40)")])
    assert not rewrites_rows(shape, [], [], [("varchar(20)", "varchar(40)"), ("numeric(10,2)", "numeric(12,2)")])
    assert rewrites_rows(shape, [], [], [("character varying(40)", "character varying(20)")])
    assert rewrites_rows(shape, [], [], [("text", "integer")])  # ALTER COLUMN TYPE ... USING
    assert rewrites_rows(shape, [], [], [("numeric(10,2)", "numeric(10,3)")])
    assert widening("varchar(20)", "text")
