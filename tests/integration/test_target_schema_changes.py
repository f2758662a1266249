"""Targets follow their sources' schema changes (``[[targets]] schema_changes``).

The database targets get events carrying a ``schema_change`` record, as the event log gives
them back, and stop with the ALTER TABLE to run, add the missing columns with mapped types,
or leave them out; the jsonl target writes the record on its own line, once, across a crash.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from cdc.config import Settings, TargetSettings
from cdc.model import Event, RowChange, SourceColumn, TableShape, TxnBegin
from cdc.pipeline.versioner import Versioner
from cdc.state.store import StateStore
from cdc.state.table_shapes import TableShapeRecord
from cdc.targets import TargetError
from cdc.targets.jsonl import JsonlTarget
from cdc.targets.mysql import MysqlTarget
from cdc.targets.postgres import PostgresTarget
from cdc.values import compact_json
from tests.helpers import CdcSetup

_counter = itertools.count(1)
TS = "2026-12-03T10:00:00.000000+00:00"


def _record(columns: list[tuple[str, str]], kind: str, schema: str, added: list[str]) -> dict[str, Any]:
    return {
        "op": "schema_change",
        "source": "crm",
        "schema": schema,
        "table": "customers",
        "columns": [{"name": name, "type": column_type} for name, column_type in columns],
        "position": "0/100",
        "commit_ts": TS,
        "added": added,
        "dropped": [],
        "retyped": [],
        "source_kind": kind,
    }


def _event(
    n: int, key: int, after: dict[str, Any] | None, schema: str = "public", record: dict | None = None, native=True
) -> Event:
    """An upsert (or, without ``after``, a delete) of customers as the event log gives it back;
    ``native``: from a PostgreSQL source, whose values (given as their text) travel as text."""
    op = "insert" if after is not None else "delete"
    doc: dict[str, Any] = {
        "event_id": f"crm:0/{n}:0",
        "source": "crm",
        "schema": schema,
        "table": "customers",
        "op": op,
        "key": {"id": key},
        "version": 1,
        "before": None,
        "after": after,
        "changed": [],
        "txid": None,
        "commit_ts": TS,
        "position": f"0/{n}",
        "writer": None,
    }
    if record is not None:
        doc["schema_change"] = record
    doc["conflicts"] = []
    text = None if after is None else {k: None if v is None else str(v) for k, v in after.items()}
    form = {"key": {"id": str(key)}, "after": text} if native else None
    return Event(
        "crm",
        f"{n:016d}",
        0,
        f"crm:0/{n}:0",
        schema,
        "customers",
        op,
        compact_json({"id": key}),
        TS,
        compact_json(doc),
        form,
    )


# -- the postgres target ----------------------------------------------------------------

PG_TARGET = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text);
"""
PG_BEFORE = [("id", "bigint"), ("name", "text")]


@pytest.fixture
def pg_target_db(pg_server) -> Iterator[str]:
    name = f"schemachange_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute(PG_TARGET)
    yield pg_server.dsn(name)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _pg_target(dsn: str, mode: str, store: StateStore | None = None) -> PostgresTarget:
    target = PostgresTarget(TargetSettings(name="dwh", kind="postgres", dsn=dsn, schema_changes=mode), store=store)
    target.open()
    return target


def _pg(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def _pg_types(dsn: str) -> dict[str, str]:
    return dict(
        _pg(
            dsn,
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.customers'::regclass AND attnum > 0 AND NOT attisdropped",
        )
    )


def test_stop_names_target_table_column_and_the_alter_to_run(pg_target_db: str, tmp_path: Path) -> None:
    record = _record([*PG_BEFORE, ("farbe", "character varying(20)")], "postgres", "public", ["farbe"])
    target = _pg_target(pg_target_db, "stop")
    with pytest.raises(TargetError) as raised:
        target.apply("crm", [_event(1, 1, {"id": 1, "name": "Ann", "farbe": "rot"}, record=record)])
    message = str(raised.value)
    assert raised.value.fatal and "\n" not in message
    assert message.startswith("target dwh: table public.customers has no column 'farbe' of crm:public.customers")
    assert 'ALTER TABLE "public"."customers" ADD COLUMN IF NOT EXISTS "farbe" character varying(20)' in message
    assert 'schema_changes = "add_columns" (or "ignore")' in message
    assert target.position("crm") is None and _pg(pg_target_db, "SELECT count(*) FROM customers") == [(0,)]

    # an old event holding a column the table lacks, without a record: the type the store recorded
    store = StateStore(tmp_path)
    store.set_table_shape("crm", "public", "customers", TableShapeRecord(compact_json(record["columns"])))
    target = _pg_target(pg_target_db, "stop", store)
    with pytest.raises(
        TargetError, match=r"has no column 'farbe'.*ADD COLUMN IF NOT EXISTS \"farbe\" character varying\(20\)"
    ):
        target.apply("crm", [_event(2, 2, {"id": 2, "name": "Bo", "farbe": "blau"})])
    target.close()


def test_add_columns_keeps_postgres_types_the_target_has(pg_target_db: str) -> None:
    added = [
        ("note", "text"),
        ("code", "character varying(20)"),
        ("price", "numeric(12,2)"),
        ("feeling", "mood"),
        ("mail", "public.email"),
        ("seen", "timestamp with time zone"),
        ("colour", "public.colour"),  # an enum only the source has
        ("shades", "public.colour[]"),
    ]
    record = _record([*PG_BEFORE, *added], "postgres", "public", [name for name, _ in added])
    row = {
        "id": 1,
        "name": "Ann",
        "note": "n",
        "code": "C-1",
        "price": "12.50",
        "feeling": "happy",
        "mail": "ann@example.com",
        "seen": "2026-12-03 10:00:00.123456+00",
        "colour": "red",
        "shades": '{red,"dark blue"}',
    }
    target = _pg_target(pg_target_db, "add_columns")
    target.apply("crm", [_event(1, 1, row, record=record), _event(2, 2, {**row, "id": 2, "feeling": "sad"})])
    types = _pg_types(pg_target_db)
    assert {name: types[name] for name, _ in added} == {
        "note": "text",
        "code": "character varying(20)",
        "price": "numeric(12,2)",
        "feeling": "mood",
        "mail": "email",
        "seen": "timestamp with time zone",
        "colour": "text",
        "shades": "text[]",
    }
    assert _pg(pg_target_db, "SELECT id, price, feeling::text, mail, seen, shades FROM customers ORDER BY id") == [
        (
            1,
            Decimal("12.50"),
            "happy",
            "ann@example.com",
            datetime(2026, 12, 3, 10, 0, 0, 123456, UTC),
            ["red", "dark blue"],
        ),
        (
            2,
            Decimal("12.50"),
            "sad",
            "ann@example.com",
            datetime(2026, 12, 3, 10, 0, 0, 123456, UTC),
            ["red", "dark blue"],
        ),
    ]
    assert target.position("crm") == ("0000000000000002", 0)
    target.close()


def test_add_columns_maps_mariadb_types(pg_target_db: str) -> None:
    added = [
        ("code", "varchar(20)"),
        ("price", "decimal(10,2)"),
        ("seen", "datetime(6)"),
        ("stage", "enum('new','won')"),
        ("doc", "json"),
    ]
    record = _record([("id", "int(11)"), ("name", "varchar(50)"), *added], "mysql", "public", [n for n, _ in added])
    row = {
        "id": 1,
        "name": "Ann",
        "code": "C-1",
        "price": "12.50",
        "seen": "2026-12-03T10:00:00.123456",
        "stage": "won",
        "doc": {"a": [1, "x"]},
    }
    target = _pg_target(pg_target_db, "add_columns")
    target.apply("crm", [_event(1, 1, row, record=record, native=False)])
    types = _pg_types(pg_target_db)
    assert {name: types[name] for name, _ in added} == {
        "code": "character varying(20)",
        "price": "numeric(10,2)",
        "seen": "timestamp(6) without time zone",
        "stage": "text",
        "doc": "jsonb",
    }
    assert _pg(pg_target_db, "SELECT code, price, seen, stage, doc FROM customers") == [
        ("C-1", Decimal("12.50"), datetime(2026, 12, 3, 10, 0, 0, 123456), "won", {"a": [1, "x"]})
    ]
    target.close()


def test_add_columns_without_a_record_takes_the_recorded_type_else_text(pg_target_db: str, tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    recorded = [{"name": "id", "type": "bigint"}, {"name": "fax", "type": "character varying(30)"}]
    store.set_table_shape("crm", "public", "customers", TableShapeRecord(compact_json(recorded)))
    target = _pg_target(pg_target_db, "add_columns", store)
    target.apply("crm", [_event(1, 1, {"id": 1, "name": "Ann", "fax": "0301", "pager": "7"})])
    types = _pg_types(pg_target_db)
    assert (types["fax"], types["pager"]) == ("character varying(30)", "text")
    assert _pg(pg_target_db, "SELECT fax, pager FROM customers") == [("0301", "7")]
    target.close()


def test_a_rolled_back_batch_takes_its_columns_back_and_the_next_try_adds_them(pg_target_db: str) -> None:
    with psycopg.connect(pg_target_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE customers ADD CHECK (name <> 'bad')")
    record = _record([*PG_BEFORE, ("note", "text")], "postgres", "public", ["note"])
    first = _event(1, 1, {"id": 1, "name": "Ann", "note": "n"}, record=record)
    target = _pg_target(pg_target_db, "add_columns")
    with pytest.raises(TargetError):
        target.apply("crm", [first, _event(2, 2, {"id": 2, "name": "bad", "note": "x"})])
    assert "note" not in _pg_types(pg_target_db)
    target.apply("crm", [_event(3, 3, {"id": 3, "name": "Cy", "note": "c"})])  # without the record now
    target.apply("crm", [first])
    assert _pg(pg_target_db, "SELECT id, note FROM customers ORDER BY id") == [(1, "n"), (3, "c")]
    target.close()


def test_ignore_leaves_the_column_out_also_after_a_restart(pg_target_db: str) -> None:
    record = _record([*PG_BEFORE, ("note", "text")], "postgres", "public", ["note"])
    target = _pg_target(pg_target_db, "ignore")
    target.apply("crm", [_event(1, 1, {"id": 1, "name": "Ann", "note": "n"}, record=record)])
    target.close()
    restarted = _pg_target(pg_target_db, "ignore")  # the record is long gone: an event holding the column
    restarted.apply("crm", [_event(2, 2, {"id": 2, "name": "Bo", "note": "m"}, native=False)])
    restarted.apply("crm", [_event(3, 1, {"id": 1, "name": "Anna", "note": "o"})])
    assert "note" not in _pg_types(pg_target_db)
    assert _pg(pg_target_db, "SELECT id, name FROM customers ORDER BY id") == [(1, "Anna"), (2, "Bo")]
    restarted.close()


def test_a_held_events_schema_change_is_still_applied(pg_target_db: str) -> None:
    record = _record([*PG_BEFORE, ("note", "text")], "postgres", "public", ["note"])
    held = _event(1, 1, {"id": 1, "name": "Ann", "note": "n"}, record=record)
    held.held = True
    target = _pg_target(pg_target_db, "add_columns")
    target.apply("crm", [held])
    assert _pg_types(pg_target_db)["note"] == "text"
    assert _pg(pg_target_db, "SELECT count(*) FROM customers") == [(0,)]
    assert target.position("crm") == ("0000000000000001", 0)
    target.close()


# -- the mysql target ----------------------------------------------------------------


@pytest.fixture
def mydb(mariadb_server):
    """A fresh MariaDB database with a customers table; yields its name and a query helper."""
    name = f"schemachange_{os.getpid()}_{next(_counter)}"
    conn = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user="root",
        password="",
        autocommit=True,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
    )

    def sql(statement: str) -> list[tuple]:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())

    sql(f"CREATE DATABASE `{name}`")
    sql(f"CREATE TABLE `{name}`.customers (id INT PRIMARY KEY, name VARCHAR(50))")
    sql.db = name  # type: ignore[attr-defined]
    yield sql
    sql(f"DROP DATABASE `{name}`")
    conn.close()


def _mysql_target(mariadb_server, db: str, mode: str) -> MysqlTarget:
    settings = TargetSettings(
        name="mirror",
        kind="mysql",
        dsn=mariadb_server.dsn(),
        position_table=f"{db}.applied_positions",
        schema_changes=mode,
    )
    target = MysqlTarget(settings)
    target.open()
    return target


def _mysql_types(mydb) -> dict[str, str]:
    return dict(
        mydb(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS"
            f" WHERE TABLE_SCHEMA = '{mydb.db}' AND TABLE_NAME = 'customers'"
        )
    )


MYSQL_BEFORE = [("id", "int(11)"), ("name", "varchar(50)")]


def test_mysql_stop_names_the_alter_to_run(mariadb_server, mydb) -> None:
    db = mydb.db
    record = _record([*MYSQL_BEFORE, ("phone", "varchar(20)")], "mysql", db, ["phone"])
    target = _mysql_target(mariadb_server, db, "stop")
    with pytest.raises(TargetError) as raised:
        target.apply("crm", [_event(1, 1, {"id": 1, "name": "Ann", "phone": "1"}, db, record, native=False)])
    message = str(raised.value)
    assert raised.value.fatal and "\n" not in message
    assert f"target mirror: table {db}.customers has no column 'phone' of crm:{db}.customers" in message
    assert f"ALTER TABLE `{db}`.`customers` ADD COLUMN IF NOT EXISTS `phone` varchar(20) NULL" in message
    assert 'schema_changes = "add_columns"' in message
    assert mydb(f"SELECT count(*) FROM `{db}`.customers") == [(0,)]
    target.close()


def test_mysql_add_columns_from_mariadb(mariadb_server, mydb) -> None:
    db = mydb.db
    added = [
        ("code", "varchar(20)"),
        ("price", "decimal(10,2)"),
        ("seen", "datetime(6)"),
        ("stage", "enum('new','won')"),
        ("doc", "json"),
    ]
    record = _record([*MYSQL_BEFORE, *added], "mysql", db, [name for name, _ in added])
    row = {
        "id": 1,
        "name": "Ann",
        "code": "C-1",
        "price": "12.50",
        "seen": "2026-12-03T10:00:00.123456",
        "stage": "won",
        "doc": {"a": 1},
    }
    target = _mysql_target(mariadb_server, db, "add_columns")
    target.apply("crm", [_event(1, 1, row, db, record, native=False), _event(2, 2, {**row, "id": 2}, db, native=False)])
    types = _mysql_types(mydb)
    assert {name: types[name] for name, _ in added} == {
        "code": "varchar(20)",
        "price": "decimal(10,2)",
        "seen": "datetime(6)",
        "stage": "enum('new','won')",
        "doc": "longtext",  # MariaDB's JSON
    }
    assert mydb(f"SELECT id, code, price, seen, stage, doc FROM `{db}`.customers ORDER BY id") == [
        (1, "C-1", Decimal("12.50"), datetime(2026, 12, 3, 10, 0, 0, 123456), "won", '{"a":1}'),
        (2, "C-1", Decimal("12.50"), datetime(2026, 12, 3, 10, 0, 0, 123456), "won", '{"a":1}'),
    ]
    target.close()


def test_mysql_add_columns_from_postgres(mariadb_server, mydb) -> None:
    db = mydb.db
    added = [
        ("note", "text"),
        ("code", "character varying(20)"),
        ("price", "numeric(12,2)"),
        ("feeling", "mood"),
        ("seen", "timestamp with time zone"),
    ]
    record = _record(
        [("id", "integer"), ("name", "character varying(50)"), *added], "postgres", db, [name for name, _ in added]
    )
    row = {
        "id": 1,
        "name": "Ann",
        "note": "n",
        "code": "C-1",
        "price": "12.50",
        "feeling": "happy",
        "seen": "2026-12-03T11:00:00.123456+01:00",
    }
    target = _mysql_target(mariadb_server, db, "add_columns")
    target.apply("crm", [_event(1, 1, row, db, record)])
    types = _mysql_types(mydb)
    assert {name: types[name] for name, _ in added} == {
        "note": "longtext",
        "code": "varchar(20)",
        "price": "decimal(12,2)",
        "feeling": "longtext",
        "seen": "datetime(6)",
    }
    assert mydb(f"SELECT note, code, price, feeling, seen FROM `{db}`.customers") == [
        ("n", "C-1", Decimal("12.50"), "happy", datetime(2026, 12, 3, 10, 0, 0, 123456))
    ]
    target.close()


def test_mysql_ignore_and_a_held_events_schema_change(mariadb_server, mydb) -> None:
    db = mydb.db
    record = _record([*MYSQL_BEFORE, ("phone", "varchar(20)")], "mysql", db, ["phone"])
    target = _mysql_target(mariadb_server, db, "ignore")
    target.apply("crm", [_event(1, 1, {"id": 1, "name": "Ann", "phone": "1"}, db, record, native=False)])
    target.close()
    restarted = _mysql_target(mariadb_server, db, "ignore")
    restarted.apply("crm", [_event(2, 2, {"id": 2, "name": "Bo", "phone": "2"}, db, native=False)])
    restarted.close()
    assert "phone" not in _mysql_types(mydb)
    assert mydb(f"SELECT id, name FROM `{db}`.customers ORDER BY id") == [(1, "Ann"), (2, "Bo")]

    held = _event(3, 3, {"id": 3, "name": "Cy", "phone": "3"}, db, record, native=False)
    held.held = True
    adding = _mysql_target(mariadb_server, db, "add_columns")
    adding.apply("crm", [held])
    assert _mysql_types(mydb)["phone"] == "varchar(20)"
    assert mydb(f"SELECT count(*) FROM `{db}`.customers") == [(2,)]
    assert adding.position("crm") == ("0000000000000003", 0)
    adding.close()


# -- the jsonl target -------------------------------------------------------------------

COLUMNS = (SourceColumn("id", "bigint"), SourceColumn("name", "text"))
WIDER = (*COLUMNS, SourceColumn("farbe", "character varying(20)"))


def _logged_events(tmp_path: Path) -> tuple[StateStore, list[Event]]:
    """Two events stored by the versioner, the second carrying the table's schema change."""
    settings = Settings(
        state_dir=tmp_path,
        sources=[{"name": "crm", "kind": "postgres", "dsn": "postgresql://x/crm", "tables": ["public.customers"]}],
    )
    store = StateStore(tmp_path)
    versioner = Versioner(settings, store, "crm")
    events = []
    for n, (columns, row) in enumerate(
        [(COLUMNS, {"id": 1, "name": "Ann"}), (WIDER, {"id": 2, "name": "Bo", "farbe": "rot"})], 1
    ):
        versioner.shape(TableShape("public", "customers", columns))
        txn = TxnBegin(f"{n:016d}", f"0/{n:X}", str(n), datetime(2026, 12, 3, 10, n, tzinfo=UTC))
        with store.transaction():
            events += versioner.version_all(
                txn, [(0, RowChange("public", "customers", "insert", {"id": row["id"]}, None, row))]
            )
    assert events[0].schema_change is None and events[1].schema_change is not None
    return store, events


def _jsonl(path: Path, store: StateStore) -> JsonlTarget:
    target = JsonlTarget(TargetSettings(name="audit", kind="jsonl", path=path), store)
    target.open()
    return target


def test_jsonl_writes_the_record_line_before_its_event_once_across_a_crash(tmp_path: Path) -> None:
    store, (first, carrier) = _logged_events(tmp_path / "state")
    path = tmp_path / "audit.jsonl"
    positions = path.with_name("audit.jsonl.pos")
    target = _jsonl(path, store)
    target.apply("crm", [first])
    target.checkpoint()
    checkpointed = positions.read_text()
    target.apply("crm", [carrier])
    target.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line).get("event_id") for line in lines] == [first.event_id, None, carrier.event_id]
    assert json.loads(lines[1]) == carrier.schema_change and json.loads(lines[1])["op"] == "schema_change"
    whole = path.read_bytes()

    # a crash after both lines reached the file, before their position did: nothing is written twice
    positions.write_text(checkpointed)
    target = _jsonl(path, store)
    assert target.position("crm") == carrier.position
    target.apply("crm", [first, carrier])
    target.close()
    assert path.read_bytes() == whole

    # a crash in the middle of the batch's write: the record's line alone is cut off, then written with its event
    positions.write_text(checkpointed)
    with open(path, "r+b") as file:
        file.truncate(len(whole) - len(lines[2]) - 1 + 10)
    target = _jsonl(path, store)
    assert target.position("crm") == first.position
    target.apply("crm", [first, carrier])
    target.close()
    assert path.read_bytes() == whole


# -- a real PostgreSQL source stream ------------------------------------------------------

SOURCE = "CREATE TYPE mood AS ENUM ('happy', 'sad'); CREATE TABLE public.customers (id bigint PRIMARY KEY, name text);"


def _streaming(pg_server, tmp_path: Path, mode: str) -> CdcSetup:
    crm = CdcSetup(pg_server, tmp_path, SOURCE, ["public.customers"])
    target = f'dsn = "{crm.target_dsn}"\n'
    crm.config.write_text(crm.config.read_text().replace(target, f'{target}schema_changes = "{mode}"\n'))
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'Ann')")
    crm.drain()
    with crm.source() as conn:
        conn.execute("ALTER TABLE customers ADD COLUMN code varchar(20), ADD COLUMN feeling mood")
        conn.execute("INSERT INTO customers VALUES (2, 'Bo', 'C-2', 'sad')")
    return crm


def test_a_streamed_add_column_reaches_the_targets(pg_server, tmp_path: Path) -> None:
    crm = _streaming(pg_server, tmp_path, "add_columns")
    crm.drain()
    with crm.target() as conn:
        assert conn.execute("SELECT id, name, code, feeling::text FROM customers ORDER BY id").fetchall() == [
            (1, "Ann", None, None),
            (2, "Bo", "C-2", "sad"),
        ]
    ops = [event.get("op") for event in crm.events()]
    assert ops == ["insert", "schema_change", "insert"]
    assert crm.events()[1]["added"] == ["code", "feeling"]


def test_a_streamed_add_column_stops_the_daemon_with_the_alter_to_run(pg_server, tmp_path: Path) -> None:
    crm = _streaming(pg_server, tmp_path, "stop")
    result = crm.cdc("run", "--drain")
    assert result.returncode == 3, result.stdout[-2000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])  # the daemon's one error
    assert last["level"] == "error"
    assert last["msg"] == (
        "target dwh: table public.customers has no columns 'code', 'feeling' of crm:public.customers: run 'ALTER"
        ' TABLE "public"."customers" ADD COLUMN IF NOT EXISTS "code" character varying(20), ADD COLUMN IF NOT EXISTS'
        ' "feeling" public.mood\' on the target, map it with column_map, or set schema_changes = "add_columns"'
        ' (or "ignore") for target dwh'
    )
    with crm.target() as conn:
        assert conn.execute("SELECT id FROM customers").fetchall() == [(1,)]
