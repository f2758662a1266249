"""A captured table dropped while cdc is behind, and a captured table that does not exist, on both sources.

Writers change two tables while the daemon is stopped and one of them is dropped among their
writes; the next ``cdc run --drain`` must apply the other table's changes and warn about the
dropped one, whether it is still in ``tables`` or was removed from it. A captured table that
never existed stops the daemon with one line naming it (exit 3).
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tests.helpers import CdcSetup, MysqlCdcSetup, concurrent_writers, table_rows

PG_SCHEMA = """
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, n bigint NOT NULL DEFAULT 0);
CREATE TABLE public.notes (id bigint PRIMARY KEY, body text);
"""
MARIADB_SCHEMA = [
    "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100), n BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE notes (id BIGINT PRIMARY KEY, body VARCHAR(100))",
]
PG_TARGET = PG_SCHEMA


def _warnings(log_output: str) -> list[str]:
    """The sources' warnings in the daemon's log."""
    lines = [json.loads(line) for line in log_output.splitlines() if line.startswith("{")]
    return [line["msg"] for line in lines if line["level"] == "warning" and line["logger"].startswith("cdc.source")]


def _error(log_output: str) -> str:
    last = json.loads(log_output.strip().splitlines()[-1])
    assert last["level"] == "error", last
    return last["msg"]


def _pg_customer_writes(rng, conn) -> None:
    key = rng.randint(1, 200)
    conn.execute(
        "INSERT INTO customers VALUES (%s, %s, 1) ON CONFLICT (id) DO UPDATE SET n = customers.n + 1, name = %s",
        (key, f"c{key}", f"c{key}-{rng.random():.6f}"),
    )
    if rng.random() < 0.1:
        conn.execute("DELETE FROM customers WHERE id = %s", (rng.randint(1, 200),))


def _pg_drop_notes_among_writes(crm: CdcSetup) -> None:
    with concurrent_writers(crm.source, _pg_customer_writes), crm.source() as conn:
        for i in range(1, 51):
            conn.execute("INSERT INTO notes VALUES (%s, %s)", (i, f"note {i}"))
            conn.execute("UPDATE notes SET body = body || '!' WHERE id = %s", (i // 2 + 1,))
        conn.execute("DELETE FROM notes WHERE id = 7")
        time.sleep(0.3)
        conn.execute("DROP TABLE notes")
        time.sleep(0.3)


@pytest.mark.parametrize("still_captured", [True, False], ids=["still-in-tables", "removed-from-tables"])
def test_postgres_table_dropped_while_cdc_is_stopped(pg_server, tmp_path, still_captured):
    crm = CdcSetup(pg_server, tmp_path, PG_SCHEMA, ["public.customers", "public.notes"], target_sql=PG_TARGET)
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'first', 0)")
        conn.execute("INSERT INTO notes VALUES (0, 'before')")
    crm.drain()
    _pg_drop_notes_among_writes(crm)
    if not still_captured:
        crm.config.write_text(
            crm.config.read_text().replace('"public.customers", "public.notes"', '"public.customers"')
        )

    result = crm.cdc("run", "--drain")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with crm.source() as src, crm.target() as dst:
        assert table_rows(src, "public.customers") == table_rows(dst, "public.customers")
        assert table_rows(dst, "public.notes") == [(0, "before")]  # its later changes had no known key
    warnings = [w for w in _warnings(result.stdout) if "public.notes" in w]
    expected = "was dropped and its primary key is unknown" if still_captured else "is not in 'tables'"
    assert warnings and all(expected in w and "(at " in w for w in warnings), warnings
    assert crm.cdc("run", "--drain").returncode == (3 if still_captured else 0)


def test_postgres_captured_table_that_does_not_exist_stops_the_daemon(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, PG_SCHEMA, ["public.customers"], target_sql=PG_TARGET)
    crm.setup()
    crm.config.write_text(crm.config.read_text().replace('"public.customers"', '"public.customers", "public.nope"'))
    with crm.source() as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'first', 0)")
    result = crm.cdc("run", "--drain")
    assert result.returncode == 3, result.stdout[-3000:]
    assert _error(result.stdout).endswith(
        "table public.nope does not exist: create it, or remove 'public.nope' from 'tables'"
    )


# -- MariaDB -----------------------------------------------------------------------------


def _mariadb_customer_writes(erp: MysqlCdcSetup):
    def step(rng, conn) -> None:
        key = rng.randint(1, 200)
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO `{erp.source_db}`.customers VALUES (%s, %s, 1)"
                " ON DUPLICATE KEY UPDATE n = n + 1, name = VALUES(name)",
                (key, f"c{key}-{rng.random():.6f}"),
            )
            if rng.random() < 0.1:
                cur.execute(f"DELETE FROM `{erp.source_db}`.customers WHERE id = %s", (rng.randint(1, 200),))

    return step


def _mariadb_drop_notes_among_writes(erp: MysqlCdcSetup) -> list[tuple]:
    """The rows notes held when it was dropped."""
    with (
        concurrent_writers(erp.mysql, _mariadb_customer_writes(erp)),
        erp.mysql(erp.source_db) as conn,
        conn.cursor() as cur,
    ):
        for i in range(1, 51):
            cur.execute("INSERT INTO notes VALUES (%s, %s)", (i, f"note {i}"))
            cur.execute("UPDATE notes SET body = CONCAT(body, '!') WHERE id = %s", (i // 2 + 1,))
        cur.execute("DELETE FROM notes WHERE id = 7")
        cur.execute("SELECT id, body FROM notes ORDER BY id")
        last = [tuple(row) for row in cur.fetchall()]
        time.sleep(0.3)
        cur.execute("DROP TABLE notes")
        time.sleep(0.3)
    return last


def _mariadb_rows(erp: MysqlCdcSetup) -> list[tuple]:
    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, n FROM customers ORDER BY id")
        return [tuple(row) for row in cur.fetchall()]


@pytest.mark.parametrize("still_captured", [True, False], ids=["still-in-tables", "removed-from-tables"])
def test_mariadb_table_dropped_while_cdc_is_stopped(mariadb_server, pg_server, tmp_path, still_captured):
    erp = MysqlCdcSetup(
        mariadb_server, pg_server, tmp_path, MARIADB_SCHEMA, ["customers", "notes"], target_sql=PG_TARGET
    )
    erp.setup()
    erp.execute("INSERT INTO customers VALUES (1, 'first', 0)", "INSERT INTO notes VALUES (0, 'before')")
    erp.drain()
    last_notes = _mariadb_drop_notes_among_writes(erp)
    notes = f'"{erp.source_db}.notes"'
    if not still_captured:
        erp.config.write_text(erp.config.read_text().replace(f", {notes}", "", 1))

    result = erp.cdc("run", "--drain")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with psycopg.connect(erp.target_dsn) as dst:
        assert _mariadb_rows(erp) == table_rows(dst, "public.customers")
        target_notes = table_rows(dst, "public.notes")
    warnings = [w for w in _warnings(result.stdout) if f"{erp.source_db}.notes" in w]
    if still_captured:  # applied up to the drop with the key the binlog carries
        assert target_notes == last_notes
        assert warnings and all(
            "was dropped: its rows are applied with the binlog's primary key ['id']" in w for w in warnings
        )
        assert all("(at 0-" in w for w in warnings), warnings
    else:
        assert target_notes == [(0, "before")] and warnings == []
    assert erp.cdc("run", "--drain").returncode == (3 if still_captured else 0)


def test_mariadb_captured_table_that_does_not_exist_stops_the_daemon(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, MARIADB_SCHEMA, ["customers"], target_sql=PG_TARGET)
    erp.setup()
    customers = f'"{erp.source_db}.customers"'
    erp.config.write_text(erp.config.read_text().replace(customers, f'{customers}, "{erp.source_db}.nope"', 1))
    erp.execute("INSERT INTO customers VALUES (1, 'first', 0)")
    result = erp.cdc("run", "--drain")
    assert result.returncode == 3, result.stdout[-3000:]
    assert _error(result.stdout).endswith(
        f"table {erp.source_db}.nope does not exist: create it, or remove '{erp.source_db}.nope' from 'tables'"
    )
