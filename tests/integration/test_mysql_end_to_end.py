"""MariaDB to the postgres, mysql and jsonl targets, and PostgreSQL to the mysql target, over every type."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from tests.helpers import CdcSetup, MysqlCdcSetup, add_mysql_mirror

TYPES = """CREATE TABLE customers (
    id BIGINT UNSIGNED PRIMARY KEY, small SMALLINT, whole INT, neg BIGINT, amount DECIMAL(40,20),
    ratio FLOAT, measure DOUBLE, seen DATETIME(6), changed_at TIMESTAMP(6) NULL, born DATE, opens TIME(3),
    built YEAR, name VARCHAR(100), notes MEDIUMTEXT, photo BLOB, code BINARY(4), stage ENUM('lead','won'),
    tags SET('vip','new','old'), flags BIT(8), doc JSON)"""
PG_TARGET = """CREATE TABLE public.customers (
    id numeric(20) PRIMARY KEY, small smallint, whole integer, neg bigint, amount numeric(40,20),
    ratio real, measure double precision, seen timestamp(6), changed_at timestamptz, born date, opens time(3),
    built smallint, name text, notes text, photo bytea, code bytea, stage text, tags text[], flags integer,
    doc jsonb);"""
ROW = (
    "INSERT INTO customers VALUES (18446744073709551615, -32768, 2147483647, -9223372036854775808,"
    " '12345678901234567890.12345678901234567890', 1.5, 0.1, '2026-11-22 10:00:00.123456',"
    " '2026-11-22 10:00:00.654321', '2026-11-22', '10:00:00.5', 2026, 'Zoë 😀 日本語', REPEAT('ü', 70000),"
    " x'00ff10', x'01020304', 'won', 'vip,old', b'00000101', '{\"a\": [1, 2.50], \"n\": 1.000000000000000000001}')"
)


def _json(text: str | None):
    return None if text is None else json.loads(text, parse_float=Decimal)


def test_mariadb_every_type_to_postgres_mysql_and_jsonl(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, [TYPES], ["customers"], target_sql=PG_TARGET)
    mirror = f"{erp.source_db}_mirror"
    add_mysql_mirror(erp, mariadb_server, mirror, TYPES, {f"{erp.source_db}.customers": "customers"})
    erp.setup()
    erp.execute(
        "SET time_zone = '+00:00'",
        ROW,
        "INSERT INTO customers (id, tags) VALUES (2, '')",
        "INSERT INTO customers (id) VALUES (3)",
        "UPDATE customers SET name = 'Zoë updated', amount = amount + 1 WHERE id = 18446744073709551615",
        "UPDATE customers SET ratio = 2.5 WHERE id = 3",
        "DELETE FROM customers WHERE id = 2",
    )
    erp.drain()

    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM customers ORDER BY id")
        source = [tuple(row) for row in cur.fetchall()]
    with erp.mysql(mirror) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM customers ORDER BY id")
        mirrored = [tuple(row) for row in cur.fetchall()]
    for got, want in zip(mirrored, source):  # the JSON column (MariaDB: LONGTEXT) compares as JSON
        assert got[:-1] == want[:-1] and _json(got[-1]) == _json(want[-1])
    assert len(mirrored) == len(source)

    with erp.target() as dst:
        target = dst.execute("SELECT * FROM customers ORDER BY id").fetchall()
    assert len(target) == 2
    big = target[1]
    assert big[:11] == (
        Decimal(18446744073709551615),
        -32768,
        2147483647,
        -9223372036854775808,
        Decimal("12345678901234567891.12345678901234567890"),
        1.5,
        0.1,
        datetime(2026, 11, 22, 10, 0, 0, 123456),
        datetime(2026, 11, 22, 10, 0, 0, 654321, tzinfo=UTC),
        date(2026, 11, 22),
        time(10, 0, 0, 500000),
    )
    assert big[11:] == (
        2026,
        "Zoë updated",
        "ü" * 70000,
        b"\x00\xff\x10",
        b"\x01\x02\x03\x04",
        "won",
        ["old", "vip"],
        5,
        {"a": [1, 2.5], "n": 1.0},
    )
    assert target[0][:6] == (3, None, None, None, None, 2.5)

    events = erp.events()
    assert [(e["op"], e["key"], e["version"]) for e in events] == [
        ("insert", {"id": "18446744073709551615"}, 1),
        ("insert", {"id": 2}, 1),
        ("insert", {"id": 3}, 1),
        ("update", {"id": "18446744073709551615"}, 2),
        ("update", {"id": 3}, 2),
        ("delete", {"id": 2}, 2),
    ]
    first = events[0]["after"]
    assert first == {
        "id": "18446744073709551615",
        "small": -32768,
        "whole": 2147483647,
        "neg": "-9223372036854775808",
        "amount": "12345678901234567890.12345678901234567890",
        "ratio": 1.5,
        "measure": 0.1,
        "seen": "2026-11-22T10:00:00.123456",
        "changed_at": "2026-11-22T10:00:00.654321+00:00",
        "born": "2026-11-22",
        "opens": "10:00:00.500000",
        "built": 2026,
        "name": "Zoë 😀 日本語",
        "notes": "ü" * 70000,
        "photo": base64.b64encode(b"\x00\xff\x10").decode(),
        "code": base64.b64encode(b"\x01\x02\x03\x04").decode(),
        "stage": "won",
        "tags": ["old", "vip"],
        "flags": 5,
        "doc": first["doc"],
    }
    raw = erp.jsonl.read_text(encoding="utf-8").splitlines()[0]
    assert '"n": 1.000000000000000000001' in raw and '"a": [1, 2.50]' in raw
    assert events[1]["after"]["tags"] == [] and events[2]["after"]["tags"] is None
    assert events[3]["changed"] == ["amount", "name"] and events[3]["before"] == first
    assert all(e["position"] == e["txid"] and e["event_id"] == f"erp:{e['position']}:0" for e in events)


PG_SCHEMA = """
CREATE TYPE stage AS ENUM ('lead', 'won');
CREATE TABLE public.customers (id bigint PRIMARY KEY, amount numeric(40,20), ratio double precision,
    active boolean, name text, seen timestamp(6), changed_at timestamptz, born date, opens time(6),
    ref uuid, doc jsonb, photo bytea, stage stage, labels text[], term interval);
"""
MYSQL_TARGET = """CREATE TABLE customers (id BIGINT PRIMARY KEY, amount DECIMAL(40,20), ratio DOUBLE,
    active TINYINT(1), name TEXT, seen DATETIME(6), changed_at DATETIME(6), born DATE, opens TIME(6),
    ref CHAR(36), doc JSON, photo BLOB, stage ENUM('lead','won'), labels JSON, term VARCHAR(64))"""


def test_postgres_every_type_to_mysql(pg_server, mariadb_server, tmp_path):
    import pymysql

    crm = CdcSetup(pg_server, tmp_path, PG_SCHEMA, ["public.customers"], target_sql="SELECT 1")
    database = f"mirror_{crm.source_db}"
    conn = pymysql.connect(
        host=mariadb_server.host, port=mariadb_server.port, user="root", autocommit=True, charset="utf8mb4"
    )
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute(f"USE `{database}`")
        cur.execute(MYSQL_TARGET)
    crm.config.write_text(
        crm.config.read_text().replace(
            'kind = "postgres"\ndsn = "' + crm.target_dsn + '"',
            f'kind = "mysql"\ndsn = "{mariadb_server.dsn(database)}"\n'
            f'table_map = {{ "public.customers" = "{database}.customers" }}',
        )
    )
    crm.setup()
    with crm.source() as src:
        src.execute(
            "INSERT INTO customers VALUES (1, '12345678901234567890.12345678901234567890', 0.1, true,"
            " 'Zoë 😀', '2026-11-22 10:00:00.123456', '2026-11-22 12:00:00.5+02', '2026-11-22',"
            " '10:00:00.25', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2.5]}', '\\x00ff',"
            " 'won', '{\"a b\",NULL}', '1 day 02:03:04')"
        )
        src.execute("INSERT INTO customers (id) VALUES (2)")
        src.execute("UPDATE customers SET name = 'Bob', active = false WHERE id = 2")
        src.execute("INSERT INTO customers (id, name) VALUES (3, 'gone')")
        src.execute("DELETE FROM customers WHERE id = 3")
    crm.drain()
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM `{database}`.customers ORDER BY id")
        rows = cur.fetchall()
    conn.close()
    assert rows == (
        (
            1,
            Decimal("12345678901234567890.12345678901234567890"),
            0.1,
            1,
            "Zoë 😀",
            datetime(2026, 11, 22, 10, 0, 0, 123456),
            datetime(2026, 11, 22, 10, 0, 0, 500000),
            date(2026, 11, 22),
            timedelta(hours=10, microseconds=250000),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            '{"a":[1,2.5]}',
            b"\x00\xff",
            "won",
            '["a b",null]',
            "P1DT2H3M4S",
        ),
        (2, None, None, 0, "Bob", None, None, None, None, None, None, None, None, None, None),
    )
