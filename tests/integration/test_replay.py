"""``cdc replay``: a slice of the event log sent again to a database target, idempotently."""

from __future__ import annotations

import json
import time
from datetime import datetime

import psycopg

from tests.helpers import CdcSetup, table_rows

SCHEMA = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, credit numeric(12,2));"


def _fresh_target(crm: CdcSetup, pg_server, name: str, schema: str = SCHEMA) -> str:
    database = f"{crm.target_db}_{name}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    dsn = pg_server.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema)
    with crm.config.open("a") as config:
        config.write(f'\n[[targets]]\nname = "{name}"\nkind = "postgres"\ndsn = "{dsn}"\n')
    return dsn


def _rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return table_rows(conn, "public.customers")


def test_a_time_range_replayed_twice_into_a_fresh_target_gives_the_same_rows(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO customers SELECT i, 'c' || i, '555-' || i, i * 10 FROM generate_series(1, 300) i")
        conn.execute("UPDATE customers SET phone = 'early' WHERE id <= 100")
    crm.drain()
    middle = datetime.now().astimezone().isoformat()
    time.sleep(0.05)
    with crm.source() as conn:
        conn.execute("UPDATE customers SET phone = 'late', credit = credit + 1 WHERE id % 3 = 0")
        conn.execute("DELETE FROM customers WHERE id > 280")
        conn.execute("INSERT INTO customers VALUES (1000, 'new', 'x', 1)")
    crm.drain()
    fresh = _fresh_target(crm, pg_server, "fresh")

    planned = crm.cdc("replay", "--target", "fresh", "--until", middle, "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["tables"] == {"public.customers": 400}  # 300 inserts, 100 updates
    assert _rows(fresh) == []  # a dry run writes nothing

    first = crm.cdc("replay", "--target", "fresh", "--until", middle)
    assert first.returncode == 0, first.stderr
    assert "sent 400 event(s) to target fresh" in first.stdout
    early = _rows(fresh)
    assert len(early) == 300 and early[0][2] == "early" and early[150][2] == "555-151"
    again = crm.cdc("replay", "--target", "fresh", "--until", middle)
    assert again.returncode == 0, again.stderr
    assert _rows(fresh) == early

    for _ in range(2):  # the rest of the log, twice: the source's rows
        rest = crm.cdc("replay", "--target", "fresh", "--since", middle)
        assert rest.returncode == 0, rest.stderr
        with crm.source() as conn:
            assert _rows(fresh) == table_rows(conn, "public.customers")
    result = crm.cdc("run", "--drain")  # the daemon's own position in the new target is untouched: it
    assert result.returncode == 0  # sends it the whole log once, ending at the same rows
    with crm.source() as conn:
        assert _rows(fresh) == table_rows(conn, "public.customers")


def test_replay_names_each_row_the_target_refuses_and_exits_1(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO customers SELECT i, 'c' || i, 'p', 1 FROM generate_series(1, 50) i")
    crm.drain()
    strict = SCHEMA.replace("credit numeric(12,2)", "credit numeric(12,2), CHECK (id <> 13 AND id <> 31)")
    fresh = _fresh_target(crm, pg_server, "strict", strict)
    result = crm.cdc("replay", "--target", "strict", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["sent"] == 48
    assert [(f["key"], f["table"]) for f in report["failed"]] == [
        ('{"id": 13}', "public.customers"),
        ('{"id": 31}', "public.customers"),
    ]
    assert all("check constraint" in f["reason"] for f in report["failed"])
    assert len(_rows(fresh)) == 48


def test_replay_refuses_a_jsonl_target_and_an_unknown_one(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    crm.setup()
    crm.drain()
    for name, message in (("audit", "target audit is a jsonl log"), ("nowhere", "no target named 'nowhere'")):
        result = crm.cdc("replay", "--target", name)
        assert result.returncode == 2
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_replay_script_asks_logs_and_passes_on_the_exit_status(pg_server, tmp_path):
    import subprocess

    from tests.helpers import PROJECT

    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO customers SELECT i, 'c' || i, 'p', 1 FROM generate_series(1, 20) i")
    crm.drain()
    fresh = _fresh_target(
        crm, pg_server, "fresh", SCHEMA.replace("credit numeric(12,2)", "credit numeric(12,2), CHECK (id <> 7)")
    )
    env = crm.env(CDC_LOG_DIR=str(tmp_path / "logs"), CDC=f"{PROJECT}/.venv/bin/python -m cdc")

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PROJECT / "scripts" / "replay"), "--target", "fresh", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    asked = script()
    assert asked.returncode == 2 and "give --yes" in asked.stderr
    assert "would send 20 event(s) to target fresh" in asked.stdout and _rows(fresh) == []
    done = script("--yes")
    assert done.returncode == 1, done.stdout + done.stderr  # the row the target refuses
    assert 'FAILED public.customers {"id": 7}' in done.stdout and len(_rows(fresh)) == 19
    logs = list((tmp_path / "logs").glob("replay-*.log"))
    assert logs and any('FAILED public.customers {"id": 7}' in log.read_text() for log in logs)


def test_events_past_retention_are_pruned_once_every_target_has_them(pg_server, tmp_path):
    crm = CdcSetup(
        pg_server, tmp_path, SCHEMA, ["public.customers"], extra_config="[event_log]\nretain_days = 0.00002\n"
    )  # 1.7 seconds
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO customers SELECT i, 'c' || i, 'p', 1 FROM generate_series(1, 100) i")
    crm.drain()
    time.sleep(2)
    with crm.source() as conn:
        conn.execute("UPDATE customers SET phone = 'q' WHERE id <= 10")
    crm.drain()
    kept = [json.loads(line) for line in crm.cdc("events", "--json").stdout.splitlines()]
    assert [(e["op"], e["key"]["id"]) for e in kept] == [("update", i) for i in range(1, 11)]
    status = json.loads(crm.cdc("status", "--json").stdout)
    assert status["events"]["oldest_replayable"]["event_id"] == kept[0]["event_id"]
    assert f"oldest replayable event: {kept[0]['event_id']}" in crm.cdc("status").stdout
    with crm.target() as dst:  # the targets had every event before any was pruned
        assert dst.execute("SELECT count(*) FROM customers WHERE phone = 'q'").fetchone()[0] == 10
        assert dst.execute("SELECT count(*) FROM customers").fetchone()[0] == 100
