"""A postgres target stores what PostgreSQL's own logical replication stores, type by type.

The same changes reach a native subscription (CREATE SUBSCRIPTION into a database of the
same server) and cdc's postgres target; both tables must then read back the same, one row
change per transaction (statement by statement) and in large transactions (set-based,
through a staging table). A value PostgreSQL cannot hold stops the daemon with one line
that names the table, the key and the column.
"""

from __future__ import annotations

import json
import os

import psycopg
from psycopg import sql

from tests.helpers import CdcSetup, MysqlCdcSetup, wait_for

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TYPE stage AS ENUM ('lead', 'won', 'lost');
CREATE TYPE address AS (street text, city text, zip integer);
CREATE DOMAIN amount AS numeric(12, 2) CHECK (VALUE > 0);
CREATE TABLE kinds (
    id integer PRIMARY KEY,
    home address, homes address[], price amount, stage stage, span int4range, spans int4multirange,
    attrs hstore, fee money, flags bit varying(16), host inet, mac macaddr, doc json, body jsonb,
    exact numeric, at timestamptz, term interval, blob bytea, labels text[]
);
CREATE TABLE by_address (k address PRIMARY KEY, note text);
CREATE TABLE by_stage (stage stage, n integer, note text, PRIMARY KEY (stage, n));
"""
TABLES = ["public.kinds", "public.by_address", "public.by_stage"]

# each column of kinds as an expression of i; the second set changes every column
KINDS = """
    i,
    ROW('1 "Main" St, (rear) ' || i, NULL, i)::address,
    ARRAY[ROW('a,b', 'c"d\\e', i)::address, NULL, ROW('', NULL, NULL)::address],
    (i + 0.5)::amount,
    'won'::stage,
    int4range(i, i + 10, '(]'),
    int4multirange(int4range(1, 3), int4range(i + 5, i + 9)),
    hstore(ARRAY['a', 'b c', 'q"x', 'n'], ARRAY[i::text, 'x,y', 'y=>z', NULL]),
    (i * 100 + 0.25)::money,
    B'1011'::varbit || i::bit(4)::varbit,
    ('10.1.2.' || (i % 250) || '/24')::inet,
    '08:00:2b:01:02:03'::macaddr,
    ('{"b": 1,  "a": [1, 2.50], "a": ' || i || '}')::json,
    ('{"n": 1.000000000000000000001, "s": "\\u00fc\\"", "i": ' || i || '}')::jsonb,
    ('12345678901234567890.123456789012345678' || i)::numeric,
    '2026-11-22 10:00:00.123456+02'::timestamptz + i * interval '1 second',
    interval '1 year 2 mons -3 days 04:05:06.5' * i,
    ('\\x00ff' || lpad(to_hex(i % 256), 2, '0'))::bytea,
    ARRAY['a"b', 'c,d', NULL, '', 'NULL', '{x}', 'back\\slash', 'n' || i]
"""
CHANGES = [
    ("home", "ROW(NULL, 'Zürich', -1)::address"),
    ("homes", "ARRAY[]::address[]"),
    ("price", "price + 1"),
    ("stage", "'lost'"),
    ("span", "'empty'"),
    ("spans", "'{}'"),
    ("attrs", "attrs || hstore('new', 'v\"')"),
    ("fee", "fee + 1::money"),
    ("flags", "B''"),
    ("host", "'::1/128'"),
    ("mac", "'ff:ff:ff:ff:ff:ff'"),
    ("doc", "'[1, 1.0, \"x\"]'"),
    ("body", "'{\"a\": null}'"),
    ("exact", "'NaN'"),
    ("at", "'infinity'"),
    ("term", "'-1 day -00:00:01'"),
    ("blob", "''"),
    ("labels", "ARRAY[NULL, '\"', ',', '}']"),
]
PRINT = {
    "kinds": "SELECT t::text FROM kinds t ORDER BY id",
    "by_address": "SELECT t::text FROM by_address t ORDER BY k",
    "by_stage": "SELECT t::text FROM by_stage t ORDER BY stage, n",
}


class Subscription:
    """A native subscription of the source's tables into a third database of the same server."""

    def __init__(self, pg_server, crm: CdcSetup) -> None:
        self.crm = crm
        self.name = f"native_{os.getpid()}_{crm.slot}"
        self.database = f"{crm.source_db}_native"
        self.admin_dsn = pg_server.dsn()
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self.dsn = pg_server.dsn(self.database)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
        with crm.source() as conn:
            tables = sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in TABLES)
            conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(self.name), tables))
            # CREATE SUBSCRIPTION cannot create its slot on the server it runs on
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.name,))
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}"
                    " WITH (create_slot = false, slot_name = {}, copy_data = false)"
                ).format(
                    sql.Identifier(self.name),
                    sql.Literal(crm.source_dsn),
                    sql.Identifier(self.name),
                    sql.Literal(self.name),
                )
            )

    def wait(self) -> None:
        """Until the subscription has applied everything the source has written so far."""
        with self.crm.source() as conn:
            end = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]

            def caught_up() -> bool:
                row = conn.execute(
                    "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                    (end, self.name),
                ).fetchone()
                return bool(row and row[0])

            wait_for(caught_up, timeout=60, what="the native subscription")

    def drop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SUBSCRIPTION IF EXISTS {}").format(sql.Identifier(self.name)))


def _dump(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as conn:
        return {table: [row[0] for row in conn.execute(query)] for table, query in PRINT.items()}


def _transactions(crm: CdcSetup, *transactions: list[str]) -> None:
    with crm.source() as conn:
        for statements in transactions:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)


def _kinds(first: int, last: int) -> str:
    return f"INSERT INTO kinds SELECT {KINDS} FROM generate_series({first}, {last}) i"


def _addresses(first: int, last: int) -> str:
    return (
        "INSERT INTO by_address SELECT ROW('st, \"' || i || '\"', NULL, i)::address, 'n' || i"
        f" FROM generate_series({first}, {last}) i"
    )


def _stages(first: int, last: int) -> str:
    return (
        "INSERT INTO by_stage SELECT (ARRAY['lead', 'won', 'lost'])[1 + i % 3]::stage, i, 'n' || i"
        f" FROM generate_series({first}, {last}) i"
    )


def _one_row_transactions() -> list[list[str]]:
    """Single-row transactions that alternate between the tables, so that the target applies
    each change by itself."""
    txns = [
        [_kinds(1, 1)],
        [_addresses(1, 1)],
        [_kinds(2, 2)],
        [_stages(1, 1)],
        ["INSERT INTO kinds (id) VALUES (3)"],
        [_addresses(2, 2)],
        [_stages(2, 2)],
    ]
    for number, (column, value) in enumerate(CHANGES):
        txns.append([f"UPDATE kinds SET {column} = {value} WHERE id = 1"])
        txns.append([f"UPDATE by_stage SET note = 'change {number}' WHERE n = 1"])
        txns.append([f"UPDATE kinds SET {column} = {value} WHERE id = 3"])
        txns.append([f"UPDATE by_address SET note = 'change {number}' WHERE (k).zip = 1"])
    txns += [
        ["UPDATE kinds SET id = 20 WHERE id = 2"],
        ["UPDATE by_address SET k = ROW('new, \"k\"', 'x', 7)::address WHERE (k).zip = 2"],
        ["UPDATE by_stage SET stage = 'lost' WHERE n = 2"],
        ["DELETE FROM kinds WHERE id = 3"],
        ["DELETE FROM by_address WHERE (k).zip = 1"],
        ["DELETE FROM by_stage WHERE n = 1"],
    ]
    return txns


def _large_transactions() -> list[list[str]]:
    every_column = ", ".join(f"{column} = {value}" for column, value in CHANGES)
    return [
        [_kinds(100, 199), _addresses(100, 199), _stages(100, 199)],
        [
            f"UPDATE kinds SET {every_column} WHERE id % 2 = 0",
            "UPDATE by_address SET note = note || ' changed'",
            "UPDATE by_stage SET note = note || ' changed', stage = 'won'",
        ],
        [
            "UPDATE kinds SET id = id + 1000 WHERE id % 3 = 0",
            "UPDATE by_address SET k = ROW((k).street || ' moved', 'y', (k).zip) WHERE (k).zip % 2 = 0",
            "DELETE FROM kinds WHERE id % 5 = 0",
            "DELETE FROM by_address WHERE (k).zip % 7 = 0",
            "DELETE FROM by_stage WHERE n % 7 = 0",
        ],
    ]


def test_every_type_is_stored_as_a_native_subscription_stores_it(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, TABLES)
    crm.setup()
    native = Subscription(pg_server, crm)
    try:
        for transactions in (_one_row_transactions(), _large_transactions()):
            _transactions(crm, *transactions)
            crm.drain()
            native.wait()
            expected = _dump(native.dsn)
            assert expected == _dump(crm.source_dsn)  # the subscription copies the source exactly
            assert _dump(crm.target_dsn) == expected
    finally:
        native.drop()


def test_a_nul_in_a_mariadb_text_names_target_table_key_and_column(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(
        mariadb_server,
        pg_server,
        tmp_path,
        ["CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)"],
        ["notes"],
        target_sql="CREATE TABLE public.notes (id integer PRIMARY KEY, body text)",
    )
    erp.setup()
    erp.execute("INSERT INTO notes VALUES (1, 'fine')", "INSERT INTO notes VALUES (7, CONCAT('a', CHAR(0), 'b'))")
    result = erp.cdc("run", "--drain")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    message = json.loads(result.stdout.strip().splitlines()[-1])["msg"]  # the daemon's one error
    assert "\n" not in message and "NUL" in message, message
    assert "target dwh" in message and "public.notes" in message and '{"id":7}' in message
    assert "'body'" in message, message
