"""Schema changes end to end: DDL mid-stream while writers keep writing, on PostgreSQL and on
MariaDB, into a postgres target; with ``add_columns`` the target gains the columns and ends
equal to the source row for row, with ``stop`` the daemon names the table and column, with
``ignore`` the stream goes on without them."""

from __future__ import annotations

import json
import time

from tests.helpers import CdcSetup, MysqlCdcSetup, concurrent_writers

PG_TABLE = """
CREATE TABLE public.customers (
    id bigint PRIMARY KEY, n integer NOT NULL DEFAULT 0, code text, nick text, legacy text
);
INSERT INTO public.customers (id, n, code, nick, legacy)
SELECT i, 0, (i * 7)::text, 'nick' || i, 'old' || i FROM generate_series(1, 300) i;
"""
PG_DDL = [
    "ALTER TABLE public.customers ADD COLUMN farbe varchar(20) DEFAULT 'rot'",
    "ALTER TABLE public.customers ADD COLUMN note text",
    "UPDATE public.customers SET note = 'noted ' || id WHERE id % 3 = 0",
    "ALTER TABLE public.customers ALTER COLUMN code TYPE integer USING code::integer + 1",
    "ALTER TABLE public.customers DROP COLUMN legacy",
    "ALTER TABLE public.customers RENAME COLUMN nick TO nickname",
]
PG_COLUMNS = ["id", "n", "code", "nickname", "farbe", "note"]
ADD_COLUMNS = {"CDC_TARGETS__DWH__SCHEMA_CHANGES": "add_columns"}


def _pg_writer(rng, conn) -> None:
    """Writes that keep going through every DDL (they touch no column a DDL changes)."""
    if rng.random() < 0.3:
        conn.execute(
            "INSERT INTO public.customers (id, n) VALUES (%s, 1) ON CONFLICT DO NOTHING", (rng.randint(301, 10**6),)
        )
    else:
        conn.execute("UPDATE public.customers SET n = n + 1 WHERE id = %s", (rng.randint(1, 300),))
    time.sleep(0.005)


def _rows(conn, columns: list[str], table: str = "public.customers") -> list[tuple]:
    listed = ", ".join(f'"{name}"::text' for name in columns)
    return sorted(conn.execute(f"SELECT {listed} FROM {table} t ORDER BY t.id").fetchall(), key=lambda row: int(row[0]))


def _snapshot_then_stream(setup: CdcSetup, env: dict[str, str]) -> None:
    assert setup.cdc("snapshot", timeout=120, **env).returncode == 0


def test_postgres_ddl_mid_stream_into_a_postgres_target_with_add_columns(pg_server, tmp_path):
    setup = CdcSetup(
        pg_server,
        tmp_path,
        PG_TABLE,
        ["public.customers"],
        target_sql="CREATE TABLE public.customers (id bigint PRIMARY KEY, n integer, code text, nick text, legacy text);",
    )
    setup.setup()
    _snapshot_then_stream(setup, ADD_COLUMNS)
    with setup.running(**ADD_COLUMNS), concurrent_writers(setup.source, _pg_writer):
        for statement in PG_DDL:
            time.sleep(0.5)
            with setup.source() as conn:
                conn.execute(statement)
        time.sleep(1)
    result = setup.cdc("run", "--drain", timeout=300, **ADD_COLUMNS)  # and the re-reads the DDLs asked for
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with setup.source() as src, setup.target() as dst:
        assert _rows(dst, PG_COLUMNS) == _rows(src, PG_COLUMNS)
        types = dict(
            dst.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'customers'"
            ).fetchall()
        )
    assert types["farbe"] == "character varying" and types["nickname"] == "text" and "legacy" in types
    conflicts = setup.cdc("conflicts", "list", "--json")
    assert conflicts.returncode == 0 and conflicts.stdout.strip() == "", conflicts.stdout  # a DDL is no conflict
    changes = [e for e in setup.events() if e.get("op") == "schema_change"]
    assert [sorted(c["added"]) for c in changes if c["added"]] == [["farbe"], ["note"], ["nickname"]]


def test_postgres_stop_names_the_table_and_column_and_ignore_streams_on(pg_server, tmp_path):
    setup = CdcSetup(pg_server, tmp_path, PG_TABLE, ["public.customers"], target_sql=PG_TABLE)
    setup.setup()
    setup.drain()
    with setup.source() as conn:
        conn.execute("ALTER TABLE public.customers ADD COLUMN farbe varchar(20) DEFAULT 'rot'")
        conn.execute("UPDATE public.customers SET n = 5 WHERE id = 1")
    stopped = setup.cdc("run", "--drain", timeout=120)
    assert stopped.returncode == 3, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stdout + stopped.stderr
    errors = [json.loads(line)["msg"] for line in stopped.stdout.splitlines() if '"level": "error"' in line]
    assert errors and "public.customers" in errors[-1] and "'farbe'" in errors[-1], errors
    assert "ADD COLUMN" in errors[-1] and "schema_changes" in errors[-1], errors[-1]
    ignored = setup.cdc("run", "--drain", timeout=120, CDC_TARGETS__DWH__SCHEMA_CHANGES="ignore")
    assert ignored.returncode == 0, ignored.stdout[-3000:] + ignored.stderr[-3000:]
    columns = ["id", "n", "code", "nick", "legacy"]
    with setup.source() as src, setup.target() as dst:
        assert _rows(dst, columns) == _rows(src, columns)
        assert dst.execute("SELECT n FROM public.customers WHERE id = 1").fetchone() == (5,)


MARIADB_TABLE = [
    "CREATE TABLE customers (id BIGINT PRIMARY KEY, n INT NOT NULL DEFAULT 0, code VARCHAR(10), nick VARCHAR(20),"
    " legacy VARCHAR(20))",
    "INSERT INTO customers (id, n, code, nick, legacy)"
    " SELECT seq, 0, seq * 7, CONCAT('nick', seq), CONCAT('old', seq) FROM seq_1_to_300",
]
MARIADB_TARGET = "CREATE TABLE public.customers (id bigint PRIMARY KEY, n integer, code text, nick text, legacy text);"
MARIADB_DDL = [
    "ALTER TABLE customers ADD COLUMN farbe VARCHAR(20) DEFAULT 'rot'",
    "ALTER TABLE customers ADD COLUMN note TEXT",
    "UPDATE customers SET note = CONCAT('noted ', id) WHERE id % 3 = 0",
    "ALTER TABLE customers MODIFY code BIGINT",
    "ALTER TABLE customers DROP COLUMN legacy",
    "ALTER TABLE customers RENAME COLUMN nick TO nickname",
]


def test_mariadb_ddl_mid_stream_into_a_postgres_target_with_add_columns(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, MARIADB_TABLE, ["customers"], MARIADB_TARGET)
    erp.setup()
    _snapshot_then_stream(erp, ADD_COLUMNS)

    def write(rng, conn) -> None:
        with conn.cursor() as cur:
            if rng.random() < 0.3:
                cur.execute("INSERT IGNORE INTO customers (id, n) VALUES (%s, 1)", (rng.randint(301, 10**6),))
            else:
                cur.execute("UPDATE customers SET n = n + 1 WHERE id = %s", (rng.randint(1, 300),))
        time.sleep(0.005)

    with erp.running(**ADD_COLUMNS), concurrent_writers(lambda: erp.mysql(erp.source_db), write):
        for statement in MARIADB_DDL:
            time.sleep(0.5)
            erp.execute(statement)
        time.sleep(1)
    result = erp.cdc("run", "--drain", timeout=300, **ADD_COLUMNS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    columns = ["id", "n", "code", "nickname", "farbe", "note"]
    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(f'CAST({c} AS CHAR)' for c in columns)} FROM customers ORDER BY id")
        source = [tuple(row) for row in cur.fetchall()]
    with erp.target() as dst:
        assert _rows(dst, columns) == sorted(source, key=lambda row: int(row[0]))
    conflicts = erp.cdc("conflicts", "list", "--json")
    assert conflicts.returncode == 0 and conflicts.stdout.strip() == "", conflicts.stdout
