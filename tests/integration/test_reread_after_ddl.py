"""A table whose DDL changed its existing rows is read again by the daemon (``backfill_after_ddl``).

The request is the state store's meta key ``reread:<source>:<schema>.<table>``, set here by
hand; the target rows are changed behind cdc's back, as a DDL that rewrote rows without row
events leaves them.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3

import pytest

from tests.helpers import CdcSetup, MysqlCdcSetup, table_rows, wait_for

pytestmark = pytest.mark.server

SCHEMA = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text NOT NULL, farbe text);"
START_LINE = "re-reading public.customers of source crm: its DDL at {} changed existing rows (columns farbe)"


def _request(setup: CdcSetup, qualified: str, position: str) -> None:
    value = json.dumps({"position": position, "commit_ts": "2026-01-02T03:04:05+00:00", "columns": ["farbe"]})
    with contextlib.closing(sqlite3.connect(setup.state_dir / "state.db", timeout=30)) as db, db:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"reread:{setup.name}:{qualified}", value))


def _meta(setup: CdcSetup, prefix: str) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(setup.state_dir / "state.db", timeout=30)) as db:
        return dict(db.execute("SELECT key, value FROM meta WHERE key LIKE ?", (prefix + "%",)))


def _equal(crm: CdcSetup) -> bool:
    with crm.source() as src, crm.target() as dst:
        return table_rows(src, "public.customers") == table_rows(dst, "public.customers")


def _rereads(setup: CdcSetup) -> list[dict]:
    result = setup.cdc("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["rereads"]


def _changed_by_ddl(crm: CdcSetup, rows: int) -> None:
    """Rows streamed to the targets, then changed in the target database as a DDL that
    rewrote them without row events would leave them (a column the targets have stale)."""
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO customers SELECT i, 'c' || i, 'rot' FROM generate_series(1, %s) i", (rows,))
    crm.drain()
    with crm.target() as dst:
        dst.execute("UPDATE customers SET farbe = NULL")
        dst.execute("UPDATE customers SET name = 'stale' WHERE id % 7 = 0")
    assert not _equal(crm)


def test_drain_rereads_a_waiting_table_and_leaves_the_targets_equal(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    _changed_by_ddl(crm, 300)
    _request(crm, "public.customers", "0/1A2B3C4")

    [waiting] = _rereads(crm)
    assert waiting["state"] == "waiting" and waiting["table"] == "public.customers"
    assert (waiting["source"], waiting["since_position"], waiting["columns"]) == ("crm", "0/1A2B3C4", ["farbe"])
    assert waiting["why"] == "its DDL at 0/1A2B3C4 changed existing rows (columns farbe)"
    text = crm.cdc("status")
    assert "re-read of public.customers (source crm): waiting: its DDL at 0/1A2B3C4" in text.stdout, text.stdout

    result = crm.drain()
    logged = result.stdout + result.stderr
    assert _equal(crm), logged[-3000:]
    assert START_LINE.format("0/1A2B3C4") in logged
    assert "re-read public.customers of source crm: 300 rows in" in logged
    assert _meta(crm, "reread:") == {} and _meta(crm, "rereading:") == {}
    assert _rereads(crm) == []
    reread = [e for e in crm.events() if e["op"] == "snapshot" and e["source"] == "crm"]
    assert sorted(e["key"]["id"] for e in reread) == list(range(1, 301))  # the jsonl target has them too
    assert {e["after"]["farbe"] for e in reread} == {"rot"}


def test_the_running_daemon_rereads_a_table_without_holding_up_the_stream(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    _changed_by_ddl(crm, 200)
    with crm.running():
        _request(crm, "public.customers", "0/2B")
        with crm.source() as conn:
            conn.execute("INSERT INTO customers VALUES (1000, 'new', 'blau')")
        wait_for(lambda: _equal(crm) and not _meta(crm, "reread:"), what="the re-read\n" + crm.daemon_log()[-3000:])
    logged = crm.daemon_log()
    assert START_LINE.format("0/2B") in logged
    assert "re-read public.customers of source crm: 201 rows in" in logged


def test_a_reread_cut_short_by_sigkill_or_sigterm_is_done_again_at_the_next_start(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    with crm.source() as conn:  # rows from before cdc's slot, which the targets never get but by a re-read
        conn.execute("INSERT INTO customers SELECT i, repeat('n', 200), 'rot' FROM generate_series(1, 150000) i")
    crm.setup()
    crm.drain()
    _request(crm, "public.customers", "0/3C")
    daemon = crm.start()
    try:
        running = wait_for(
            lambda: next((r for r in _running(crm) if r["rows_read"] >= 5000), None),
            timeout=120,
            interval=0.05,
            what="the re-read under way\n" + crm.daemon_log()[-3000:],
        )
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert running["pid"] == daemon.pid
    assert "reread:crm:public.customers" in _meta(crm, "reread:")  # the request outlives the crash
    [waiting] = _rereads(crm)
    assert waiting["state"] == "waiting"  # its marker names a process that is gone

    daemon = crm.start()  # SIGTERM during the re-read: a prompt stop, the request kept
    try:
        wait_for(
            lambda: any(r["pid"] == daemon.pid and r["rows_read"] >= 5000 for r in _running(crm)),
            timeout=120,
            interval=0.05,
            what="the re-read under way again\n" + crm.daemon_log()[-3000:],
        )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0, crm.daemon_log()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert "reread:crm:public.customers" in _meta(crm, "reread:") and _meta(crm, "rereading:") == {}
    assert "re-read of public.customers of source crm stopped: it is read again at the next start" in crm.daemon_log()

    result = crm.drain(timeout=600)
    assert _equal(crm), (result.stdout + result.stderr)[-3000:]
    assert _meta(crm, "reread:") == {} and _meta(crm, "rereading:") == {}


def test_a_dba_backfill_beside_the_daemons_reread_numbers_its_chunks_after_the_others(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    with crm.source() as conn:  # rows from before cdc's slot, which the targets never get but by a re-read
        conn.execute("INSERT INTO customers SELECT i, repeat('n', 100), 'rot' FROM generate_series(1, 60000) i")
    crm.setup()
    crm.drain()
    _request(crm, "public.customers", "0/4D")
    with crm.running():
        wait_for(lambda: _running(crm), interval=0.05, what="the re-read under way\n" + crm.daemon_log()[-3000:])
        backfill = crm.cdc("backfill", "--source", "crm", "--chunk-rows", "500")
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr
        wait_for(lambda: _equal(crm) and not _meta(crm, "reread:"), what="the re-read\n" + crm.daemon_log()[-3000:])
    assert "re-read public.customers of source crm: 60000 rows in" in crm.daemon_log()


def test_a_reread_whose_source_connection_is_lost_is_retried(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    with crm.source() as conn:  # rows from before cdc's slot, which the targets never get but by a re-read
        conn.execute("INSERT INTO customers SELECT i, repeat('n', 100), 'rot' FROM generate_series(1, 60000) i")
    crm.setup()
    crm.drain()
    _request(crm, "public.customers", "0/5E")
    with crm.running():
        wait_for(lambda: _running(crm), interval=0.05, what="the re-read under way\n" + crm.daemon_log()[-3000:])
        with crm.source() as conn:  # the re-read's connection (the stream's is a walsender)
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        wait_for(lambda: _equal(crm) and not _meta(crm, "reread:"), what="the re-read\n" + crm.daemon_log()[-3000:])
    logged = crm.daemon_log()
    retried = [line for line in logged.splitlines() if "re-reading public.customers of source crm: source crm" in line]
    assert retried and "retrying in" in retried[0]
    assert "re-read public.customers of source crm: 60000 rows in" in logged


def _running(setup: CdcSetup) -> list[dict]:
    try:
        return [json.loads(value) for value in _meta(setup, "rereading:").values()]
    except sqlite3.OperationalError:  # the store is not made yet
        return []


def test_a_mariadb_table_is_reread_by_drain(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(
        mariadb_server,
        pg_server,
        tmp_path,
        ["CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, farbe VARCHAR(10))"],
        ["customers"],
        target_sql="CREATE TABLE public.customers (id integer PRIMARY KEY, name text NOT NULL, farbe text);",
    )
    erp.setup()
    erp.execute("INSERT INTO customers VALUES (1, 'a', 'rot'), (2, 'b', 'rot'), (3, 'c', 'rot')")
    erp.drain()
    with erp.target() as dst:
        dst.execute("UPDATE customers SET name = 'stale', farbe = NULL WHERE id = 2")
    _request(erp, f"{erp.source_db}.customers", "mariadb-bin.000001:1234")

    result = erp.drain()
    logged = result.stdout + result.stderr
    assert (
        f"re-reading {erp.source_db}.customers of source erp: its DDL at mariadb-bin.000001:1234 changed existing"
        " rows (columns farbe)" in logged
    )
    with erp.target() as dst:
        assert dst.execute("SELECT id, name, farbe FROM customers ORDER BY id").fetchall() == [
            (1, "a", "rot"),
            (2, "b", "rot"),
            (3, "c", "rot"),
        ]
    assert _meta(erp, "reread:") == {}
