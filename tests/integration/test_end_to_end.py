"""PostgreSQL to the postgres and jsonl targets, over every common type, end to end."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

import psycopg
import pytest

from cdc.sources.postgres.protocol import parse_lsn
from tests.helpers import CdcSetup

SCHEMA = """
CREATE TYPE stage AS ENUM ('lead', 'qualified', 'won');
CREATE TABLE public.customers (
    id bigint PRIMARY KEY,
    small smallint, whole integer, big bigint,
    amount numeric, ratio real, measure double precision,
    active boolean,
    name text, email varchar(200), code char(5),
    seen timestamp, changed_at timestamptz, born date, opens time, term interval,
    ref uuid, doc json, attrs jsonb, photo bytea,
    scores integer[], labels text[],
    stage stage,
    notes text
);
"""
BIG_NUMERIC = "12345678901234567890.12345678901234567890"
BIG_TEXT_SQL = "(SELECT string_agg(md5(i::text || random()::text), '') FROM generate_series(1, 100000) i)"
FULL_ROW = f"""
INSERT INTO customers VALUES (
    1, -32768, 2147483647, 9223372036854775807,
    '{BIG_NUMERIC}', 1.5, 0.1,
    true,
    'Zoë 😀 日本語', 'zoe@example.com', 'ab',
    '2026-11-22 10:00:00.123456', '2026-11-22 10:00:00.123456+02', '2026-11-22', '10:00:00.5',
    '1 year 2 mons 3 days 04:05:06.5',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": [1, 2.50]}}', '{{"n": 1.000000000000000000001}}',
    '\\x00ff10', '{{1,NULL,3}}', '{{"a b","c,d",NULL}}',
    'won', {BIG_TEXT_SQL})
"""


@pytest.fixture
def crm(pg_server, tmp_path):
    setup = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    setup.setup()
    return setup


def _txn(conn: psycopg.Connection, *statements: str) -> tuple[str, int]:
    """Run statements in one transaction; its txid and the WAL insert position after commit."""
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)
        txid = conn.execute("SELECT txid_current()::text").fetchone()[0]
    lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    return txid, parse_lsn(lsn)


def test_every_type_reaches_both_targets_exactly(crm):
    with crm.source() as conn:
        start = parse_lsn(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
        txns = [
            _txn(
                conn,
                FULL_ROW,
                "INSERT INTO customers (id) VALUES (2)",
                "INSERT INTO customers (id, name) VALUES (3, 'x')",
            ),
            _txn(conn, "UPDATE customers SET name = 'Zoë updated ✓', amount = amount + 1 WHERE id = 1"),
            _txn(
                conn,
                "UPDATE customers SET measure = 'NaN', ratio = '-Infinity', seen = 'infinity',"
                " email = NULL, labels = '{}' WHERE id = 2",
            ),
            _txn(conn, "DELETE FROM customers WHERE id = 3"),
            _txn(conn, "UPDATE customers SET id = 40 WHERE id = 2"),
            _txn(conn, "UPDATE customers SET notes = notes || 'tail' WHERE id = 1"),
        ]
    crm.drain()

    with crm.source() as src, crm.target() as dst:
        source_rows = src.execute("SELECT c::text FROM customers c ORDER BY id").fetchall()
        target_rows = dst.execute("SELECT c::text FROM customers c ORDER BY id").fetchall()
        big = src.execute("SELECT notes FROM customers WHERE id = 1").fetchone()[0]
    assert [r[0] for r in target_rows] == [r[0] for r in source_rows]
    assert len(source_rows) == 2 and len(big) > 3_000_000

    events = crm.events()
    assert [(e["op"], e["key"]) for e in events] == [
        ("insert", {"id": 1}),
        ("insert", {"id": 2}),
        ("insert", {"id": 3}),
        ("update", {"id": 1}),
        ("update", {"id": 2}),
        ("delete", {"id": 3}),
        ("update", {"id": 40}),
        ("update", {"id": 1}),
    ]
    assert [e["version"] for e in events] == [1, 1, 1, 2, 2, 2, 1, 3]

    # positions and transaction ids: one per source transaction, in commit order
    groups = [events[0:3], events[3:4], events[4:5], events[5:6], events[6:7], events[7:8]]
    previous = start
    for group, (txid, lsn_after_commit) in zip(groups, txns):
        position = parse_lsn(group[0]["position"])
        assert previous < position <= lsn_after_commit
        previous = position
        for seq, event in enumerate(group):
            assert event["txid"] == txid
            assert event["position"] == group[0]["position"]
            assert event["event_id"] == f"crm:{event['position']}:{seq}"
            assert datetime.fromisoformat(event["commit_ts"]).tzinfo is not None

    first = events[0]["after"]
    assert first == {
        "id": 1,
        "small": -32768,
        "whole": 2147483647,
        "big": "9223372036854775807",
        "amount": BIG_NUMERIC,
        "ratio": 1.5,
        "measure": 0.1,
        "active": True,
        "name": "Zoë 😀 日本語",
        "email": "zoe@example.com",
        "code": "ab   ",
        "seen": "2026-11-22T10:00:00.123456",
        "changed_at": "2026-11-22T08:00:00.123456+00:00",
        "born": "2026-11-22",
        "opens": "10:00:00.500000",
        "term": "P1Y2M3DT4H5M6.5S",
        "ref": str(uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        "doc": {"a": [1, 2.5]},
        "attrs": {"n": 1.0},
        "photo": base64.b64encode(b"\x00\xff\x10").decode(),
        "scores": [1, None, 3],
        "labels": ["a b", "c,d", None],
        "stage": "won",
        "notes": first["notes"],
    }
    # numbers inside JSON keep every digit in the event text
    raw_first = crm.jsonl.read_text(encoding="utf-8").splitlines()[0]
    assert '"n": 1.000000000000000000001' in raw_first
    assert events[1]["after"] == {name: (2 if name == "id" else None) for name in first}

    update = events[3]
    assert update["before"] == first
    assert update["changed"] == ["amount", "name"]
    assert update["after"]["amount"] == "12345678901234567891.12345678901234567890"
    assert update["after"]["notes"] == big[:-4] and len(update["after"]["notes"]) > 3_000_000  # TOAST filled in

    special = events[4]["after"]
    assert special["measure"] == "NaN" and special["ratio"] == "-Infinity" and special["seen"] == "infinity"
    assert special["email"] is None and special["labels"] == []
    assert events[5]["before"]["name"] == "x" and events[5]["after"] is None
    assert events[6]["before"]["id"] == 2 and events[6]["after"]["id"] == 40
    assert events[7]["after"]["notes"] == big and events[7]["changed"] == ["notes"]
    assert len({e["event_id"] for e in events}) == len(events)


def test_restart_continues_without_duplicates(crm):
    with crm.source() as conn:
        conn.execute("INSERT INTO customers (id, name) SELECT i, 'n' || i FROM generate_series(1, 50) i")
    crm.drain()
    with crm.source() as conn:
        conn.execute("UPDATE customers SET name = name || '!' WHERE id <= 10")
    crm.drain()
    crm.drain()
    events = crm.events()
    assert len(events) == 60 and len({e["event_id"] for e in events}) == 60
    with crm.source() as src, crm.target() as dst:
        assert (
            src.execute("SELECT c::text FROM customers c ORDER BY id").fetchall()
            == dst.execute("SELECT c::text FROM customers c ORDER BY id").fetchall()
        )
    status = json.loads(crm.cdc("status", "--json").stdout)
    source = status["sources"][0]
    assert source["events"] == 60 and source["server"]["active"] is False
    assert parse_lsn(source["server"]["confirmed_flush_lsn"]) >= parse_lsn(events[-1]["position"])
    queried = crm.cdc("events", "--json", "--table", "public.customers", "--key", "id=7")
    assert [json.loads(line)["version"] for line in queried.stdout.splitlines()] == [1, 2]
