"""The MariaDB binlog source: DDL while streaming, SIGKILL and server restarts, idle heartbeats."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter

import pytest

from tests.helpers import MysqlCdcSetup, wait_for

SCHEMA = ["CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, n INT NOT NULL)"]
TARGET = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text NOT NULL, n integer NOT NULL);"


@pytest.fixture
def erp(mariadb_server, pg_server, tmp_path):
    setup = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, SCHEMA, ["customers"], target_sql=TARGET)
    setup.setup()
    return setup


def _equal(erp: MysqlCdcSetup) -> None:
    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, n FROM customers ORDER BY id")
        source = [tuple(row) for row in cur.fetchall()]
    with erp.target() as dst:
        target = dst.execute("SELECT id, name, n FROM customers ORDER BY id").fetchall()
    assert target == source


def test_ddl_between_batches_gives_the_right_column_names(erp):
    erp.execute("INSERT INTO customers VALUES (1, 'a', 1)", "UPDATE customers SET n = 2 WHERE id = 1")
    erp.drain()
    erp.execute(
        "ALTER TABLE customers ADD COLUMN email VARCHAR(100) AFTER name",
        "INSERT INTO customers VALUES (2, 'b', 'b@x.io', 1)",
        "UPDATE customers SET email = 'a@x.io' WHERE id = 1",
        "ALTER TABLE customers RENAME COLUMN name TO full_name",
        "INSERT INTO customers VALUES (3, 'c', 'c@x.io', 1)",
        "ALTER TABLE customers DROP COLUMN email",
        "UPDATE customers SET n = 3 WHERE id = 3",
    )
    result = erp.cdc("run", "--drain", CDC_TARGETS__1__KIND="jsonl", CDC_TARGETS__1__PATH=str(erp.tmp_path / "x"))
    assert result.returncode == 0, result.stdout + result.stderr
    events = erp.events()
    assert [list(e["after"]) for e in events] == [
        ["id", "name", "n"],
        ["id", "name", "n"],
        ["id", "name", "email", "n"],
        ["id", "name", "email", "n"],
        ["id", "full_name", "email", "n"],
        ["id", "full_name", "n"],
    ]
    assert events[3]["before"] == {"id": 1, "name": "a", "email": None, "n": 2}
    assert events[3]["changed"] == ["email"]
    assert events[4]["after"] == {"id": 3, "full_name": "c", "email": "c@x.io", "n": 1}
    assert events[5]["before"] == {"id": 3, "full_name": "c", "n": 1} and events[5]["changed"] == ["n"]
    assert [e["position"] for e in events] == sorted(
        {e["position"] for e in events}, key=lambda p: int(p.split("-")[2])
    )


def _workload(erp: MysqlCdcSetup, changes: list[int], rounds: int = 12) -> None:
    """About 12,000 changes, in transactions of 1,000 rows and of single rows."""
    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        for round_ in range(rounds):
            first = round_ * 1000 + 1
            conn.begin()
            cur.executemany(
                "INSERT INTO customers VALUES (%s, %s, 0)", [(i, f"c{i}") for i in range(first, first + 1000)]
            )
            conn.commit()
            changes[0] += 1000
            for i in range(first, first + 30):
                changes[0] += cur.execute(
                    "UPDATE customers SET n = n + 1, name = CONCAT(name, '.') WHERE id = %s", (i,)
                )
            changes[0] += cur.execute("DELETE FROM customers WHERE id %% 101 = %s", (round_,))
            time.sleep(0.1)


def test_sigkill_mid_stream(erp):
    changes = [0]
    writer = threading.Thread(target=_workload, args=(erp, changes))
    daemon = erp.start()
    writer.start()
    try:
        for threshold in (2000, 6000):
            wait_for(lambda: len(erp.events()) >= threshold, timeout=120, what=f"{threshold} events")
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=30)
            daemon = erp.start()
        writer.join(timeout=300)
        wait_for(lambda: erp.daemon_log().count("streaming the binlog") == 3, what="the third start")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    erp.drain()
    assert changes[0] >= 10_000
    ids = Counter(event["event_id"] for event in erp.events())
    assert len(ids) == changes[0] and max(ids.values()) == 1
    _equal(erp)


def test_server_restart_mid_stream(erp, mariadb_server):
    changes = [0]
    _workload(erp, changes, 8)  # a backlog, so that the restart lands while the daemon is reading it
    daemon = erp.start()
    try:
        wait_for(lambda: len(erp.events()) >= 1000, timeout=60, what="the first events")
        mariadb_server.restart()
        assert len(erp.events()) < changes[0], "the restart should interrupt the stream"
        erp.execute(*(f"INSERT INTO customers VALUES ({10_000 + i}, 'after restart', 0)" for i in range(50)))
        changes[0] += 50
        wait_for(lambda: len(erp.events()) >= changes[0], timeout=120, what="every change after the restart")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert "retrying in" in erp.daemon_log()
    ids = Counter(event["event_id"] for event in erp.events())
    assert len(ids) == changes[0] and max(ids.values()) == 1
    _equal(erp)


def test_position_keeps_up_while_captured_tables_are_idle(erp):
    erp.execute("CREATE TABLE page_views (id BIGINT AUTO_INCREMENT PRIMARY KEY, url TEXT)")
    daemon = erp.start()
    try:
        wait_for(lambda: "streaming the binlog" in erp.daemon_log(), what="the daemon to stream")
        seen = []
        for _ in range(5):
            erp.execute("INSERT INTO page_views (url) VALUES ('https://example.com/')")
            with erp.mysql() as conn, conn.cursor() as cur:
                cur.execute("SELECT @@gtid_binlog_pos")
                written = cur.fetchone()[0]
            wait_for(lambda: _acked(erp) == written, timeout=20, what=f"the stored position to reach {written}")
            seen.append(_acked(erp))
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert len(set(seen)) == 5
    assert erp.events() == []


def _acked(erp: MysqlCdcSetup) -> str | None:
    status = json.loads(erp.cdc("status", "--json").stdout)
    return status["sources"][0]["acked"]


def test_purged_position_is_fatal_and_clear(pg_server, tmp_path):
    from devtools.servers import ThrowawayMariaDB

    with ThrowawayMariaDB() as server:
        erp = MysqlCdcSetup(server, pg_server, tmp_path, SCHEMA, ["customers"], target_sql=TARGET)
        erp.setup()
        erp.execute("INSERT INTO customers VALUES (1, 'a', 0)")
        erp.drain()
        with erp.mysql() as conn, conn.cursor() as cur:
            cur.execute("FLUSH BINARY LOGS")
            cur.execute(f"INSERT INTO `{erp.source_db}`.customers VALUES (2, 'lost while cdc was stopped', 0)")
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW BINARY LOGS")
            newest = cur.fetchall()[-1][0]
            for _ in range(100):  # MariaDB keeps a file until its binlog checkpoint is written
                cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
                cur.execute("SHOW BINARY LOGS")
                if cur.fetchall()[0][0] == newest:
                    break
                time.sleep(0.1)
        result = erp.cdc("run", "--drain")
        assert result.returncode == 3
        message = json.loads(result.stdout.strip().splitlines()[-1])["msg"]
        assert (
            "has been purged from the binlog: changes were lost; load the tables again with 'cdc snapshot'" in message
        )
        checked = erp.cdc("check")
        assert checked.returncode == 1 and "purged" in checked.stdout
    assert [e["key"] for e in erp.events()] == [{"id": 1}]


def test_check_and_setup_through_the_command_line(erp):
    checked = erp.cdc("check")
    assert checked.returncode == 0 and checked.stdout.strip() == "all checks passed", checked.stdout
    again = erp.cdc("setup")
    assert again.returncode == 0 and "nothing to do: streaming resumes at" in again.stdout
    erp.execute("CREATE TABLE notes (body TEXT)")
    erp.config.write_text(
        erp.config.read_text().replace(
            f'"{erp.source_db}.customers"]', f'"{erp.source_db}.customers", "{erp.source_db}.notes"]'
        )
    )
    checked = erp.cdc("check", "--json")
    assert checked.returncode == 1
    problems = json.loads(checked.stdout)["problems"]
    assert [p["problem"] for p in problems] == [
        f"table {erp.source_db}.notes has no primary key: events and targets are keyed by it"
    ]
    assert problems[0]["fix"].startswith(f"ALTER TABLE `{erp.source_db}`.`notes` ADD PRIMARY KEY")
