"""The pipeline's table plans, and the entity change the versioner makes without parsing its document."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cdc.config import Settings
from cdc.conflicts.history import change_from_doc
from cdc.conflicts.model import Change
from cdc.model import RowChange, TxnBegin
from cdc.pipeline.entities import EntitySync, written_tables
from cdc.pipeline.plan import Plan, TablePlan, entity_members
from cdc.pipeline.versioner import Versioner
from cdc.state.store import StateStore
from cdc.values import RawJson


def _settings(tmp_path: Path, detect: bool = True) -> Settings:
    return Settings(
        state_dir=tmp_path,
        sources=[
            {
                "name": "crm",
                "kind": "postgres",
                "dsn": "postgresql://x/crm",
                "tables": ["public.customers", "public.orders", "public.notes"],
            },
            {
                "name": "erp",
                "kind": "mysql",
                "dsn": "mysql://x/erp",
                "server_id": 7,
                "tables": ["erp.customers", "public.orders"],
            },
        ],
        tables=[
            {"match": "public.customers", "writer_column": "updated_by", "repair": "write"},
            {"match": "crm:public.orders", "writer_column": "who", "policy": "manual"},
        ],
        entities=[{"name": "customer", "members": ["crm:public.customers", "erp:erp.customers"]}],
        conflicts={"detect": detect},
    )


def test_a_configured_table_gets_its_settings_writer_column_entity_and_repair(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    plan = Plan(settings, "crm")
    customers = plan.table("public", "customers")
    assert customers == TablePlan(
        qualified="public.customers",
        settings=settings.tables[0],
        writer_column="updated_by",
        entity=settings.entities[0],
        repair_write=True,
    )
    orders = plan.table("public", "orders")
    assert orders.settings is settings.tables[1] and orders.writer_column == "who"
    assert orders.entity is None and not orders.repair_write
    erp = Plan(settings, "erp")
    assert erp.table("erp", "customers").entity is settings.entities[0]
    assert erp.table("erp", "customers").settings is None
    assert erp.table("public", "orders").settings is None  # "crm:public.orders" is crm's only


def test_an_unconfigured_table_gets_an_empty_plan(tmp_path: Path) -> None:
    plan = Plan(_settings(tmp_path), "crm").table("public", "notes")
    assert plan == TablePlan(
        qualified="public.notes", settings=None, writer_column=None, entity=None, repair_write=False
    )


def test_a_table_plan_is_built_once_and_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    plan = Plan(settings, "crm")
    first = plan.table("public", "customers")
    settings.tables.clear()  # a rebuilt plan would now find no settings
    assert plan.table("public", "customers") is first
    assert Plan(settings, "crm").table("public", "customers").settings is None
    with pytest.raises(AttributeError):
        first.writer_column = "other"  # type: ignore[misc]


def test_plans_and_entity_sync_find_the_same_entities(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    sync = EntitySync(settings, StateStore(tmp_path))
    members = entity_members(settings)
    assert members == {
        ("crm", "public", "customers"): settings.entities[0],
        ("erp", "erp", "customers"): settings.entities[0],
    }
    for source, schema, table in [
        ("crm", "public", "customers"),
        ("erp", "erp", "customers"),
        ("crm", "public", "orders"),
        ("erp", "public", "orders"),
    ]:
        assert Plan(settings, source).table(schema, table).entity is sync.entity_of(source, schema, table)
        assert sync.entity_of(source, schema, table) is settings.entity_of(source, schema, table)
    assert written_tables(settings, "crm") == [("public", "customers")]
    assert written_tables(settings, "erp") == []


class _Spy(EntitySync):
    """Keeps the changes the versioner hands to the entity bookkeeping."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        super().__init__(settings, store)
        self.seen: list[Change] = []

    def observe(self, entity: Any, change: Change, *args: Any) -> list[str]:
        self.seen.append(change)
        return super().observe(entity, change, *args)


@pytest.mark.parametrize("xid", ["771", None])
def test_without_detection_an_entity_change_equals_the_one_read_from_its_document(
    tmp_path: Path, xid: str | None
) -> None:
    settings = _settings(tmp_path, detect=False)
    store = StateStore(tmp_path)
    sync = _Spy(settings, store)
    versioner = Versioner(settings, store, "crm", sync=sync)
    commit_ts = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    row = {
        "id": 1,
        "name": "Ann ü",
        "limit": Decimal("10.50"),
        "seen": commit_ts - timedelta(days=1),
        "blob": b"\x00\xff",
        "doc": RawJson('{"a": [1, 2.50]}'),
        "big": 2**60,
        "ratio": 0.1,
        "updated_by": "alice",
    }
    changes = [
        RowChange("public", "customers", "insert", {"id": 1}, None, row),
        RowChange("public", "customers", "update", {"id": 1}, row, {**row, "name": "Bo", "updated_by": 42}),
        RowChange("public", "customers", "delete", {"id": 1}, {**row, "name": "Bo", "updated_by": 42}, None),
    ]
    for n, change in enumerate(changes, 1):
        txn = TxnBegin(f"{n:08d}", f"0/{n}", xid, commit_ts + timedelta(seconds=n))
        with store.transaction():
            event = versioner.version(txn, 0, change)
            store.append([event])
        built = sync.seen[-1]
        parsed = change_from_doc(json.loads(event.doc), event.key_json)
        assert built == parsed
        for name in Change.__slots__:
            if not name.startswith("_") and name not in ("before_text", "after_text"):
                assert getattr(built, name) == getattr(parsed, name), name
        assert (built.before, built.after) == (parsed.before, parsed.after)
        assert built.commit_ts.isoformat() == parsed.commit_ts.isoformat()
        assert {c: built.after_value(c) for c in row} == {c: parsed.after_value(c) for c in row}
        assert {c: built.before_value(c) for c in row} == {c: parsed.before_value(c) for c in row}
    assert [c.op for c in sync.seen] == ["insert", "update", "delete"]
    assert sync.seen[1].writer == 42 and sync.seen[0].writer == "alice"
