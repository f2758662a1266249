"""``cdc snapshot``: a consistent initial load that the stream joins with no gap and no overlap."""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time

from tests.helpers import CdcSetup, concurrent_writers, sample_peak_rss, table_rows

SCHEMA = """
CREATE TABLE public.accounts (id bigint PRIMARY KEY, n bigint NOT NULL, note text);
CREATE TABLE public.notes (id text PRIMARY KEY, body text, at timestamptz);
"""


def _account_writes(rng: random.Random, conn) -> None:
    key = rng.randint(1, 20_000)
    choice = rng.random()
    if choice < 0.9:
        conn.execute("UPDATE accounts SET n = n + 1 WHERE id = %s", (key,))
    elif choice < 0.95:
        conn.execute("INSERT INTO accounts VALUES (%s, 0, 'new') ON CONFLICT DO NOTHING", (20_000 + key,))
    else:
        conn.execute("DELETE FROM accounts WHERE id = %s", (key,))


def _snapshot_while_writing(setup, connect, step, chunk_rows: str) -> None:
    with concurrent_writers(connect, step):
        time.sleep(0.5)
        result = setup.cdc("snapshot", "--chunk-rows", chunk_rows)
        assert result.returncode == 0, result.stdout + result.stderr
        time.sleep(1)


def test_snapshot_under_concurrent_writers_then_stream_applies_every_change_once(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.accounts", "public.notes"])
    with crm.source() as conn:
        conn.execute("INSERT INTO accounts SELECT i, 0, md5(i::text) FROM generate_series(1, 20000) i")
        conn.execute("INSERT INTO notes SELECT 'k' || i, repeat('x', i % 50), now() FROM generate_series(1, 3000) i")
    crm.setup()
    planned = crm.cdc("snapshot", "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["sources"][0]["tables"] == {"public.accounts": 20000, "public.notes": 3000}
    _snapshot_while_writing(crm, crm.source, _account_writes, "1000")
    crm.drain()
    with crm.source() as src, crm.target() as dst:
        for table in ("public.accounts", "public.notes"):
            assert table_rows(src, table) == table_rows(dst, table)
    by_key: dict[int, list[dict]] = {}
    for event in crm.events():
        if event["table"] == "accounts":
            by_key.setdefault(event["key"]["id"], []).append(event)
    streamed = 0
    for key, events in by_key.items():
        assert events[0]["op"] in ("snapshot", "insert"), (key, events[0])
        for earlier, later in zip(events, events[1:]):
            assert later["op"] != "snapshot"
            if later["op"] == "update":  # each change exactly once: n moves by one, from the snapshot's
                assert later["after"]["n"] == earlier["after"]["n"] + 1, (key, earlier, later)
            if later["op"] in ("update", "delete"):
                assert later["before"] == earlier["after"], (key, earlier, later)
            streamed += 1
    assert streamed > 100  # the writers kept writing while the snapshot was read
    gaps = crm.cdc("conflicts", "list", "--type", "stream_gap", "--json")
    assert gaps.returncode == 0 and gaps.stdout.strip() == ""


def _rows_read(crm: CdcSetup) -> int:
    try:
        with sqlite3.connect(f"file:{crm.state_dir / 'state.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT coalesce(sum(rows_read), 0) FROM snapshot_tables").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_an_interrupted_snapshot_resumes_after_its_last_chunk_in_bounded_memory(pg_server, tmp_path):
    crm = CdcSetup(
        pg_server,
        tmp_path,
        "CREATE TABLE public.big (id bigint PRIMARY KEY, payload text);",
        ["public.big"],
        extra_config='[log]\nlevel = "info"\n',
    )
    with crm.source() as conn:
        conn.execute("INSERT INTO big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 200000) i")
    crm.setup()
    snapshot = [sys.executable, "-m", "cdc", "snapshot", "--chunk-rows", "2000"]
    code, output, first_peak = sample_peak_rss(snapshot, crm.env(), kill_when=lambda: _rows_read(crm) >= 40_000)
    assert code == -9, output[-2000:]
    read_before = _rows_read(crm)
    assert 40_000 <= read_before < 200_000
    running = crm.cdc("run", "--drain")
    assert running.returncode == 3 and "a snapshot was interrupted" in running.stdout
    code, output, peak = sample_peak_rss(snapshot, crm.env())
    assert code == 0, output[-3000:]
    assert f"{read_before} rows were read; going on after key" in output
    assert f"{200_000 - read_before} row(s) read" in output  # finished chunks were not read again
    with sqlite3.connect(crm.state_dir / "state.db") as db:
        count, keys = db.execute("SELECT count(*), count(DISTINCT key) FROM events WHERE op = 'snapshot'").fetchone()
    assert count == keys == 200_000
    # 200,000 rows of ~150 bytes: 30 MB as text, several times that as Python objects; one
    # chunk at a time keeps the resumed run's peak near the interrupted run's
    assert peak < first_peak * 1.25 + 16_384, f"peak RSS {first_peak} KiB, then {peak} KiB"
    crm.drain()
    with crm.source() as src, crm.target() as dst:
        query = "SELECT count(*), md5(string_agg(b::text, '|' ORDER BY id)) FROM big b"
        assert src.execute(query).fetchone() == dst.execute(query).fetchone()


def test_a_source_that_streams_already_is_not_snapshotted(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.accounts"])
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO accounts VALUES (1, 0, 'streamed')")
    crm.drain()
    result = crm.cdc("snapshot")
    assert result.returncode == 3
    assert "already streams" in result.stderr and "cdc backfill" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_mariadb_snapshot_under_concurrent_writers_then_stream(mariadb_server, pg_server, tmp_path):
    from tests.helpers import MysqlCdcSetup

    erp = MysqlCdcSetup(
        mariadb_server,
        pg_server,
        tmp_path,
        [
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, note VARCHAR(40),"
            " tags SET('a','b'), flags BIT(8), at TIMESTAMP(6) NULL)"
        ],
        ["accounts"],
        target_sql="CREATE TABLE public.accounts (id bigint PRIMARY KEY, n bigint NOT NULL,"
        " note text, tags text[], flags integer, at timestamptz);",
    )
    erp.execute(
        "SET time_zone = '+00:00'",
        "INSERT INTO accounts SELECT seq, 0, MD5(seq), IF(seq % 2, 'a,b', ''), seq % 256,"
        " '2026-11-22 10:00:00.5' FROM seq_1_to_8000",
    )
    erp.setup()

    def bump(rng: random.Random, conn) -> None:
        with conn.cursor() as cur:
            cur.execute("UPDATE accounts SET n = n + 1 WHERE id = %s", (rng.randint(1, 8000),))

    _snapshot_while_writing(erp, lambda: erp.mysql(erp.source_db), bump, "500")
    erp.drain()
    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, n FROM accounts ORDER BY id")
        source = [tuple(row) for row in cur.fetchall()]
    with erp.target() as dst:
        assert dst.execute("SELECT id, n FROM accounts ORDER BY id").fetchall() == source
        assert dst.execute("SELECT tags, flags, at::text FROM accounts WHERE id = 3").fetchone() == (
            ["a", "b"],
            3,
            "2026-11-22 10:00:00.5+00",
        )
    chains: dict[int, list[dict]] = {}
    for event in erp.events():
        chains.setdefault(event["key"]["id"], []).append(event)
    streamed = 0
    for key, events in chains.items():
        assert events[0]["op"] == "snapshot", (key, events[0])
        for earlier, later in zip(events, events[1:]):
            assert later["op"] == "update" and later["after"]["n"] == earlier["after"]["n"] + 1, (key, later)
            assert later["before"] == earlier["after"]
            streamed += 1
    assert streamed > 50
