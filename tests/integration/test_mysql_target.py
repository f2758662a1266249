"""The mysql target against a throwaway MariaDB, and the postgres target fed events without a native form."""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pymysql
import pytest

from cdc.config import TargetSettings
from cdc.model import Event
from cdc.targets import TargetError
from cdc.targets.mysql import MysqlTarget
from cdc.targets.postgres import PostgresTarget
from cdc.values import RawJson, Verbatim, dumps_row
from devtools.servers import free_port

_counter = itertools.count(1)
_dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Events:
    """Events read back from the event log, built the way the versioner builds them (no native form: a MySQL source)."""

    def __init__(self, source: str, schema: str) -> None:
        self.source, self.schema = source, schema
        self.txn = 0
        self.log_id = 0

    def txn_events(self, *changes: tuple[str, str, dict, dict | None, dict | None]) -> list[Event]:
        """One transaction of (table, op, key, before, after) changes."""
        self.txn += 1
        txn_key = f"{self.txn:016d}"
        events = []
        for seq, (table, op, key, before, after) in enumerate(changes):
            self.log_id += 1
            event_id = f"{self.source}:0-1-{self.txn}:{seq}"
            key_json = dumps_row(key)
            doc = (
                f'{{"event_id":{_dump(event_id)},"source":{_dump(self.source)},'
                f'"schema":{_dump(self.schema)},"table":{_dump(table)},"op":"{op}",'
                f'"key":{key_json},"version":1,"before":{dumps_row(before)},'
                f'"after":{dumps_row(after)},"changed":[],"txid":null,'
                f'"commit_ts":"2026-11-22T10:00:00.000000+00:00","position":"0-1-{self.txn}",'
                f'"writer":null,"conflicts":[]}}'
            )
            events.append(
                Event(
                    self.source,
                    txn_key,
                    seq,
                    event_id,
                    self.schema,
                    table,
                    op,
                    key_json,
                    "2026-11-22T10:00:00.000000+00:00",
                    doc,
                    log_id=self.log_id,
                )
            )
        return events


@pytest.fixture
def mydb(mariadb_server):
    """A fresh MariaDB database; yields its name and a query helper (UTC session)."""
    name = f"mirror_{os.getpid()}_{next(_counter)}"
    conn = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user="root",
        password="",
        charset="utf8mb4",
        autocommit=True,
        init_command="SET time_zone = '+00:00'",
    )

    def sql(statement: str, args: Any = None) -> list[tuple]:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())

    sql(f"CREATE DATABASE `{name}`")
    sql.db = name  # type: ignore[attr-defined]
    yield sql
    sql(f"DROP DATABASE `{name}`")
    conn.close()


def mysql_target(mariadb_server, db: str, name: str = "mirror", **settings: Any) -> MysqlTarget:
    settings.setdefault("position_table", f"{db}.applied_positions")
    target = MysqlTarget(TargetSettings(name=name, kind="mysql", dsn=mariadb_server.dsn(), **settings))
    target.open()
    return target


CUSTOMERS = "CREATE TABLE `{db}`.customers (id INT PRIMARY KEY, email VARCHAR(100), phone VARCHAR(5))"


def test_changes_land_and_position_survives_reopen(mariadb_server, mydb):
    db = mydb.db
    mydb(CUSTOMERS.format(db=db))
    ev = Events("erp", db)
    target = mysql_target(mariadb_server, db)
    assert target.position("erp") is None
    a1 = {"id": 1, "email": "a@x.io", "phone": "100"}
    a2 = {"id": 2, "email": "b@x.io", "phone": "200"}
    a1b = {**a1, "phone": "199"}
    target.apply(
        "erp",
        ev.txn_events(
            ("customers", "insert", {"id": 1}, None, a1),
            ("customers", "insert", {"id": 2}, None, a2),
            ("customers", "insert", {"id": 3}, None, {"id": 3, "email": None, "phone": None}),
        ),
    )
    target.apply(
        "erp", ev.txn_events(("customers", "update", {"id": 1}, a1, a1b), ("customers", "delete", {"id": 2}, a2, None))
    )
    assert mydb(f"SELECT id, email, phone FROM `{db}`.customers ORDER BY id") == [(1, "a@x.io", "199"), (3, None, None)]

    moved = {**a1b, "id": 10}  # the key changes: the old row goes
    last = ev.txn_events(("customers", "update", {"id": 10}, a1b, moved))
    target.apply("erp", last)
    assert mydb(f"SELECT id, phone FROM `{db}`.customers ORDER BY id") == [(3, None), (10, "199")]
    assert target.position("erp") == (last[-1].txn_key, last[-1].seq)
    target.close()

    reopened = mysql_target(mariadb_server, db)
    assert reopened.position("erp") == (last[-1].txn_key, last[-1].seq)
    assert reopened.position("crm") is None
    assert mydb(f"SELECT source, txn_key, seq, event_id FROM `{db}`.applied_positions WHERE target = 'mirror'") == [
        ("erp", last[-1].txn_key, 0, last[-1].event_id)
    ]

    reopened.apply("erp", ev.txn_events(("customers", "truncate", {}, None, None)))
    assert mydb(f"SELECT COUNT(*) FROM `{db}`.customers") == [(0,)]
    reopened.close()


def test_types_round_trip_exactly(mariadb_server, mydb):
    db = mydb.db
    mydb(f"""CREATE TABLE `{db}`.types (
        id BIGINT UNSIGNED PRIMARY KEY, amount DECIMAL(65,30), measure DOUBLE, seen DATETIME(6),
        changed_at TIMESTAMP(6) NULL, born DATE, opens TIME(6), yr YEAR, name VARCHAR(100), notes MEDIUMTEXT,
        photo BLOB, code VARBINARY(16), stage ENUM('lead','won'), tags SET('a','b','c'), flags BIT(8),
        doc JSON, active TINYINT(1), ratio FLOAT)""")
    amount = Decimal("12345678901234567890123456789012345.123456789012345678901234567890")
    full = {
        "id": 2**64 - 1,
        "amount": amount,
        "measure": 0.1,
        "seen": datetime(2026, 11, 22, 10, 0, 0, 123456),
        "changed_at": datetime(2026, 11, 22, 8, 0, 0, 654321, tzinfo=UTC),
        "born": date(2026, 11, 22),
        "opens": time(10, 0, 0, 500000),
        "yr": 2026,
        "name": "Zoë 😀 日本語",
        "notes": "x" * 70000,
        "photo": b"\x00\xff\x10" * 1000,
        "code": b"\x01\x02\x00",
        "stage": "won",
        "tags": ["a", "c"],
        "flags": 0b10100101,
        "doc": RawJson('{"a": [1, 2.50], "n": 1.000000000000000000001, "s": "é"}'),
        "active": True,
        "ratio": 1.5,
    }
    odd = {
        "id": 1,
        "opens": Verbatim("-838:59:59.000000"),
        "doc": RawJson('"just a string"'),
        "tags": [],
        "measure": -1e300,
        "changed_at": datetime(2026, 11, 22, 12, 0, tzinfo=timezone(timedelta(hours=4))),
    }
    nulls = {name: None for name in full} | {"id": 0}
    ev = Events("erp", db)
    target = mysql_target(mariadb_server, db)
    target.apply(
        "erp", ev.txn_events(*[("types", "insert", {"id": row["id"]}, None, row) for row in (full, odd, nulls)])
    )
    target.close()
    rows = {row[0]: row for row in mydb(f"SELECT *, CAST(doc AS CHAR) FROM `{db}`.types")}
    assert rows[2**64 - 1] == (
        2**64 - 1,
        amount,
        0.1,
        datetime(2026, 11, 22, 10, 0, 0, 123456),
        datetime(2026, 11, 22, 8, 0, 0, 654321),
        date(2026, 11, 22),
        timedelta(hours=10, microseconds=500000),
        2026,
        "Zoë 😀 日本語",
        "x" * 70000,
        b"\x00\xff\x10" * 1000,
        b"\x01\x02\x00",
        "won",
        "a,c",
        b"\xa5",
        '{"a":[1,2.50],"n":1.000000000000000000001,"s":"é"}',
        1,
        1.5,
        '{"a":[1,2.50],"n":1.000000000000000000001,"s":"é"}',
    )
    assert rows[1][6] == -timedelta(hours=838, minutes=59, seconds=59)
    assert rows[1][15] == '"just a string"'
    assert rows[1][13] == ""
    assert rows[1][2] == -1e300
    assert rows[1][4] == datetime(2026, 11, 22, 8, 0)
    assert rows[0][0] == 0 and all(value is None for value in rows[0][1:])  # id 0 stays 0 (AUTO_VALUE)


def test_a_failing_batch_leaves_neither_rows_nor_position(mariadb_server, mydb):
    db = mydb.db
    mydb(CUSTOMERS.format(db=db))
    ev = Events("erp", db)
    target = mysql_target(mariadb_server, db)
    first = ev.txn_events(("customers", "insert", {"id": 1}, None, {"id": 1, "email": "a", "phone": "1"}))
    target.apply("erp", first)
    # three statements: the first two succeed, the third fails; the transaction undoes all
    bad = ev.txn_events(
        ("customers", "insert", {"id": 2}, None, {"id": 2, "email": "b", "phone": "2"}),
        ("customers", "delete", {"id": 1}, {"id": 1, "email": "a", "phone": "1"}, None),
        ("customers", "insert", {"id": 3}, None, {"id": 3, "phone": "too long for five"}),
    )
    with pytest.raises(TargetError, match=r"target mirror: .*phone") as raised:
        target.apply("erp", bad)
    assert raised.value.fatal  # strict mode refuses to truncate: no retry will help
    assert mydb(f"SELECT id, phone FROM `{db}`.customers") == [(1, "1")]
    assert target.position("erp") == (first[0].txn_key, 0)
    assert mydb(f"SELECT txn_key FROM `{db}`.applied_positions") == [(first[0].txn_key,)]
    # the connection is still usable after the rollback
    good = ev.txn_events(("customers", "insert", {"id": 2}, None, {"id": 2, "email": "b", "phone": "2"}))
    target.apply("erp", good)
    assert mydb(f"SELECT COUNT(*) FROM `{db}`.customers") == [(2,)]
    target.close()


def test_missing_table_column_and_unstorable_value_are_fatal_and_clear(mariadb_server, mydb):
    db = mydb.db
    mydb(CUSTOMERS.format(db=db))
    mydb(f"CREATE TABLE `{db}`.measures (id INT PRIMARY KEY, value DOUBLE)")
    ev = Events("erp", db)
    target = mysql_target(mariadb_server, db)
    with pytest.raises(TargetError, match=rf"table {db}\.deals does not exist .*create it") as raised:
        target.apply("erp", ev.txn_events(("deals", "insert", {"id": 1}, None, {"id": 1})))
    assert raised.value.fatal
    with pytest.raises(TargetError, match=rf"table {db}\.customers has no column 'fax'.*column_map") as raised:
        target.apply("erp", ev.txn_events(("customers", "insert", {"id": 1}, None, {"id": 1, "fax": "1"})))
    assert raised.value.fatal
    with pytest.raises(TargetError, match="column 'value': NaN cannot be stored") as raised:
        target.apply("erp", ev.txn_events(("measures", "insert", {"id": 1}, None, {"id": 1, "value": float("nan")})))
    assert raised.value.fatal
    assert target.position("erp") is None
    assert mydb(f"SELECT COUNT(*) FROM `{db}`.customers") == [(0,)]
    target.close()


def test_table_and_column_map(mariadb_server, mydb):
    db = mydb.db
    mydb(f"CREATE TABLE `{db}`.clients (id INT PRIMARY KEY, Telephone VARCHAR(20))")
    ev = Events("erp", "erp")
    target = mysql_target(
        mariadb_server,
        db,
        table_map={"erp:erp.customers": f"{db}.clients"},
        column_map={"erp.customers": {"phone": "telephone"}},
    )
    target.apply("erp", ev.txn_events(("customers", "insert", {"id": 1}, None, {"id": 1, "phone": "555"})))
    assert mydb(f"SELECT id, Telephone FROM `{db}`.clients") == [(1, "555")]
    target.close()


def test_identifiers_with_backticks_and_percent_signs(mariadb_server, mydb):
    db = mydb.db
    mydb(f"CREATE TABLE `{db}`.`we``ird` (`k``ey` INT PRIMARY KEY, `100%s` VARCHAR(10), `a``b` INT)")
    ev = Events("erp", db)
    target = mysql_target(mariadb_server, db, position_table=f"{db}.pos`%s")
    row = {"k`ey": 1, "100%s": "x", "a`b": 2}
    target.apply(
        "erp",
        ev.txn_events(
            ("we`ird", "insert", {"k`ey": 1}, None, row), ("we`ird", "insert", {"k`ey": 2}, None, {**row, "k`ey": 2})
        ),
    )
    target.apply("erp", ev.txn_events(("we`ird", "delete", {"k`ey": 2}, {**row, "k`ey": 2}, None)))
    assert mydb(f"SELECT * FROM `{db}`.`we``ird`") == [(1, "x", 2)]
    target.close()
    assert mysql_target(mariadb_server, db, position_table=f"{db}.pos`%s").position("erp") is not None


def test_an_unreachable_server_is_retryable():
    settings = TargetSettings(name="down", kind="mysql", dsn=f"mysql://root@127.0.0.1:{free_port()}/x")
    with pytest.raises(TargetError, match=r"target down \(root@127\.0\.0\.1:\d+/x\): \(2003\)") as raised:
        MysqlTarget(settings).open()
    assert not raised.value.fatal


def test_postgres_target_converts_events_without_native_form(pg_server):
    db = f"pgmirror_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    with psycopg.connect(pg_server.dsn(db), autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA erp; CREATE TABLE erp.items (id bigint PRIMARY KEY, data bytea, doc jsonb,"
            " nums int[], at timestamptz, active boolean, price numeric, ratio float8, tags text[],"
            " opens time, label text)"
        )
    target = PostgresTarget(TargetSettings(name="dwh", kind="postgres", dsn=pg_server.dsn(db)))
    target.open()
    ev = Events("erp", "erp")
    row = {
        "id": 1,
        "data": b"\x00\xff\x10",
        "doc": RawJson('{"n": 1.000000000000000000001, "l": [1, "x"]}'),
        "nums": [1, None, 3],
        "at": datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=UTC),
        "active": 1,
        "price": Decimal("12345678901234567890.123456789"),
        "ratio": float("nan"),
        "tags": ["a b", "c,d", None],
        "opens": time(10, 0, 0, 500000),
        "label": None,
    }
    target.apply("erp", ev.txn_events(("items", "insert", {"id": 1}, None, row)))
    moved = {**row, "id": 2, "label": "moved"}
    target.apply("erp", ev.txn_events(("items", "update", {"id": 2}, row, moved)))
    target.close()
    with psycopg.connect(pg_server.dsn(db)) as conn:
        rows = conn.execute(
            "SELECT id, data, doc::text, nums, at, active, price, ratio::text, tags, opens, label FROM erp.items"
        ).fetchall()
    assert rows == [
        (
            2,
            b"\x00\xff\x10",
            '{"l": [1, "x"], "n": 1.000000000000000000001}',
            [1, None, 3],
            datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=UTC),
            True,
            Decimal("12345678901234567890.123456789"),
            "NaN",
            ["a b", "c,d", None],
            time(10, 0, 0, 500000),
            "moved",
        )
    ]
