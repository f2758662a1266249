#!/usr/bin/env python3
"""cdc's demo on its embedded default: throwaway servers, a small CRM and ERP, a scripted workload.

Starts a throwaway PostgreSQL server (the CRM: customers, contacts, deals, and a warehouse
database) and a throwaway MariaDB server (the ERP's customers), configures cdc with both
sources, runs ``cdc check`` and ``cdc setup``, starts the daemon, drives a workload of
inserts, updates and deletes on both sides while it streams, then prints what was
captured and whether every target row equals its source row.
Everything lives in a temp dir that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import pymysql  # noqa: E402

from devtools.servers import ThrowawayMariaDB, ThrowawayPostgres  # noqa: E402

TABLES = ["public.customers", "public.contacts", "public.deals"]
SCHEMA = """
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text, phone text,
    credit_limit numeric(12,2), updated_by text, updated_at timestamptz DEFAULT now());
CREATE TABLE contacts (id bigint PRIMARY KEY, customer_id bigint, name text, email text, notes text);
CREATE TYPE deal_stage AS ENUM ('lead', 'qualified', 'proposal', 'won', 'lost');
CREATE TABLE deals (id bigint PRIMARY KEY, customer_id bigint, title text, stage deal_stage,
    amount numeric(14,2), closes date, updated_by text);
"""
ERP_SCHEMA = """
CREATE TABLE erp.customers (id BIGINT PRIMARY KEY, name VARCHAR(200) NOT NULL, email VARCHAR(200),
    phone VARCHAR(40), credit_limit DECIMAL(12,2), updated_by VARCHAR(40), updated_at DATETIME(6))
"""
ERP_TARGET = """
CREATE TABLE public.erp_customers (id bigint PRIMARY KEY, name text NOT NULL, email text, phone text,
    credit_limit numeric(12,2), updated_by text, updated_at timestamp(6));
"""
ERP_WORKLOAD = [
    (
        "erp-sync loads customers into the ERP",
        "INSERT INTO erp.customers SELECT seq, CONCAT('Customer ', seq), CONCAT('c', seq, '@example.com'),"
        " CONCAT('555-', LPAD(seq, 4, '0')), 1000 + seq, 'erp-sync', NOW(6) FROM seq_1_to_400",
    ),
    (
        "finance raises credit limits in the ERP",
        "UPDATE erp.customers SET credit_limit = credit_limit + 500, updated_by = 'finance', updated_at = NOW(6)"
        " WHERE id % 5 = 0",
    ),
    ("the ERP archives customers", "DELETE FROM erp.customers WHERE id > 390"),
]
WORKLOAD = [
    (
        "sales-app creates customers",
        "INSERT INTO customers (id, name, email, phone, credit_limit, updated_by)"
        " SELECT i, 'Customer ' || i, 'c' || i || '@example.com', '555-' || lpad(i::text, 4, '0'), 1000 + i, 'sales-app'"
        " FROM generate_series(1, 500) i",
    ),
    (
        "import adds contacts",
        "INSERT INTO contacts SELECT i, 1 + i % 500, 'Contact ' || i || ' — Zoë', 'k' || i || '@example.com', NULL"
        " FROM generate_series(1, 1000) i",
    ),
    (
        "sales-app opens deals",
        "INSERT INTO deals SELECT i, 1 + i % 500, 'Deal ' || i, 'lead', 250.50 * i, DATE '2026-12-31', 'sales-app'"
        " FROM generate_series(1, 300) i",
    ),
    (
        "erp-sync updates phones and credit limits",
        "UPDATE customers SET phone = '555-9' || lpad(id::text, 3, '0'), credit_limit = credit_limit * 1.1,"
        " updated_by = 'erp-sync', updated_at = now() WHERE id % 7 = 0",
    ),
    ("deals move through the pipeline", "UPDATE deals SET stage = 'qualified' WHERE id % 2 = 0"),
    ("some deals are won", "UPDATE deals SET stage = 'won', updated_by = 'sales-app' WHERE id % 10 = 0"),
    ("duplicate contacts are deleted", "DELETE FROM contacts WHERE id % 25 = 0"),
    (
        "a note of 2 MB is attached",
        "UPDATE contacts SET notes = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 65000) g)"
        " WHERE id = 1",
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, state, audit log)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cdc-demo-"))
    print(f"cdc demo in {workdir}")
    try:
        with ThrowawayPostgres() as pg, ThrowawayMariaDB() as mariadb:
            return run_demo(pg, mariadb, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _mariadb(mariadb: ThrowawayMariaDB, database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=mariadb.host, port=mariadb.port, user="root", autocommit=True, charset="utf8mb4", database=database
    )


def run_demo(pg: ThrowawayPostgres, mariadb: ThrowawayMariaDB, workdir: Path) -> int:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE crm")
        conn.execute("CREATE DATABASE warehouse")
    for db in ("crm", "warehouse"):
        with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
            conn.execute(SCHEMA)
    with psycopg.connect(pg.dsn("warehouse"), autocommit=True) as conn:
        conn.execute(ERP_TARGET)
    with _mariadb(mariadb) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE erp")
        cur.execute(ERP_SCHEMA)
    config = workdir / "cdc.toml"
    config.write_text(f"""
state_dir = "{workdir / "state"}"

[[sources]]
name = "crm"
kind = "postgres"
dsn = "{pg.dsn("crm")}"
tables = {json.dumps(TABLES)}
heartbeat_seconds = 2

[[sources]]
name = "erp"
kind = "mysql"
dsn = "{mariadb.dsn("erp")}"
server_id = 4242
tables = ["erp.customers"]

[[tables]]
match = "public.customers"
writer_column = "updated_by"
ignore_columns = ["updated_at"]

[[tables]]
match = "public.deals"
writer_column = "updated_by"
status_column = "stage"
status_order = ["lead", "qualified", "proposal", "won"]

[[targets]]
name = "audit"
kind = "jsonl"
path = "{workdir / "audit.jsonl"}"

[[targets]]
name = "warehouse"
kind = "postgres"
dsn = "{pg.dsn("warehouse")}"
table_map = {{ "erp.customers" = "public.erp_customers" }}

[log]
level = "warning"
""")
    cdc = [sys.executable, "-m", "cdc"]
    env = {"CDC_CONFIG": str(config), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}

    def step(*argv: str) -> None:
        print(f"\n$ cdc {' '.join(argv)}")
        result = subprocess.run(cdc + list(argv), env=env, text=True, capture_output=True, cwd=ROOT)
        print((result.stdout + result.stderr).rstrip())
        if result.returncode not in (0, 1) or (argv[0] != "check" and result.returncode):
            raise SystemExit(f"demo: cdc {argv[0]} failed with exit code {result.returncode}")

    step("check")
    step("setup")
    step("check")
    print("\n$ cdc run   (the daemon, in the background)")
    daemon = subprocess.Popen(cdc + ["run"], env=env, cwd=ROOT)
    try:
        drive_workload(pg, mariadb)
        time.sleep(2)
        daemon.send_signal(signal.SIGTERM)
        if daemon.wait(timeout=30) != 0:
            raise SystemExit("demo: the daemon did not stop cleanly")
    finally:
        if daemon.poll() is None:
            daemon.kill()
    step("run", "--drain")
    step("status")
    step("conflicts", "list")
    return summarize(pg, mariadb, workdir)


def drive_workload(pg: ThrowawayPostgres, mariadb: ThrowawayMariaDB) -> None:
    with psycopg.connect(pg.dsn("crm"), autocommit=True) as conn:
        for what, statement in WORKLOAD:
            rows = conn.execute(statement).rowcount
            print(f"  workload: {what} ({rows} rows)")
            time.sleep(0.3)
    stale_full_row_save(pg)
    with _mariadb(mariadb, "erp") as conn, conn.cursor() as cur:
        for what, statement in ERP_WORKLOAD:
            rows = cur.execute(statement)
            print(f"  workload: {what} ({rows} rows)")
            time.sleep(0.3)


def stale_full_row_save(pg: ThrowawayPostgres) -> None:
    """Two applications edit customer 7 at once; the second saves the whole row it read before."""
    with (
        psycopg.connect(pg.dsn("crm"), autocommit=True) as sales,
        psycopg.connect(pg.dsn("crm"), autocommit=True) as erp,
    ):
        stale = erp.execute("SELECT name, phone, credit_limit FROM customers WHERE id = 7").fetchone()
        sales.execute(
            "UPDATE customers SET phone = '555-7777', updated_by = 'sales-app', updated_at = now() WHERE id = 7"
        )
        erp.execute(
            "UPDATE customers SET name = %s, phone = %s, credit_limit = %s + 250, updated_by = 'erp-sync',"
            " updated_at = now() WHERE id = 7",
            stale,
        )
        sales.execute("UPDATE deals SET stage = 'qualified', updated_by = 'erp-sync' WHERE id = 10")
    print(
        "  workload: sales-app and erp-sync edit customer 7 at once (a stale full-row save);"
        " a won deal moves back to qualified"
    )


def summarize(pg: ThrowawayPostgres, mariadb: ThrowawayMariaDB, workdir: Path) -> int:
    events = [json.loads(line) for line in (workdir / "audit.jsonl").read_text().splitlines()]
    ops = Counter(event["op"] for event in events)
    print(f"\nevents captured: {len(events)} ({', '.join(f'{n} {op}s' for op, n in sorted(ops.items()))})")
    sample = next(e for e in events if e["table"] == "customers" and e["op"] == "update")
    print("a captured update:", json.dumps({k: sample[k] for k in ("event_id", "key", "version", "changed", "writer")}))
    all_equal = True
    with psycopg.connect(pg.dsn("crm")) as src, psycopg.connect(pg.dsn("warehouse")) as dst:
        for table in TABLES:
            query = f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM {table} t"
            source_rows, target_rows = src.execute(query).fetchone(), dst.execute(query).fetchone()
            equal = source_rows == target_rows
            all_equal &= equal
            print(
                f"{table:18} source {source_rows[0]:5} rows, target {target_rows[0]:5} rows:"
                f" {'equal' if equal else 'DIFFERENT'}"
            )
        with _mariadb(mariadb) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM erp.customers ORDER BY id")
            source = [tuple(row) for row in cur.fetchall()]
        target = dst.execute("SELECT * FROM public.erp_customers ORDER BY id").fetchall()
        equal = source == target
        all_equal &= equal
        print(
            f"{'erp.customers':18} source {len(source):5} rows, target {len(target):5} rows:"
            f" {'equal' if equal else 'DIFFERENT'} (MariaDB -> public.erp_customers)"
        )
    print("\ntarget rows equal to source:", "yes" if all_equal else "NO")
    return 0 if all_equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
