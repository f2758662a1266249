"""Benign workloads raise no conflicts (the README's conflict taxonomy, its benign workloads).

- pgbench's TPC-B workload on PostgreSQL: four clients moving balances concurrently;
- a counter workload on MariaDB: ``x = x + delta`` from four sessions, deltas cancelling each other;
- one writer editing its own rows on PostgreSQL, undoing its own edits.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
from collections import Counter

from tests.helpers import CdcSetup, MysqlCdcSetup

PGBENCH_TABLES = ["public.pgbench_accounts", "public.pgbench_branches", "public.pgbench_tellers"]


def _conflicts(setup: CdcSetup) -> list[dict]:
    result = setup.cdc("conflicts", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _pgbench(pg_server, database: str, *args: str) -> str:
    argv = [
        os.path.join(pg_server.bindir, "pgbench"),
        "-h",
        "127.0.0.1",
        "-p",
        str(pg_server.port),
        "-U",
        "postgres",
        *args,
        database,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _same_rows(setup: CdcSetup, table: str, order_by: str) -> None:
    query = f"SELECT * FROM {table} ORDER BY {order_by}"
    with setup.source() as src, setup.target() as dst:
        assert dst.execute(query).fetchall() == src.execute(query).fetchall(), table


def test_pgbench_tpcb_workload(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, "SELECT 1", PGBENCH_TABLES, target_sql="SELECT 1")
    # the same initial data on both sides (pgbench -i is deterministic): drop, tables, generate, vacuum, PKs
    for database in (crm.source_db, crm.target_db):
        _pgbench(pg_server, database, "-i", "-s", "1", "-I", "dtgvp", "-q")
    with crm.source() as conn:
        keyless = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relname LIKE 'pgbench_%' AND c.relkind = 'r'"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint p WHERE p.conrelid = c.oid AND p.contype = 'p')"
        ).fetchall()
    assert keyless == [("pgbench_history",)]  # not captured: it has no primary key
    crm.setup()  # after the initial load, so that the load itself is not streamed
    assert crm.cdc("check").returncode == 0

    output = _pgbench(pg_server, crm.source_db, "-c", "4", "-j", "2", "-t", "200", "-n")
    processed = re.search(r"number of transactions actually processed: (\d+)/(\d+)", output)
    assert processed and processed.group(1) == processed.group(2) == "800", output
    failed = re.search(r"number of failed transactions: (\d+)", output)
    assert failed is None or failed.group(1) == "0", output
    transactions = int(processed.group(1))
    crm.drain()

    events = crm.events()
    # each TPC-B transaction updates one account, one teller and one branch (and inserts into history)
    assert len(events) == 3 * transactions
    assert Counter((e["table"], e["op"]) for e in events) == {
        ("pgbench_accounts", "update"): transactions,
        ("pgbench_tellers", "update"): transactions,
        ("pgbench_branches", "update"): transactions,
    }
    assert len({e["event_id"] for e in events}) == len(events)
    found = _conflicts(crm)
    assert [c for c in found if c["type"] in ("lost_update", "divergence", "stream_gap")] == []
    assert [c for c in found if c["type"] == "concurrent_overwrite"] == []  # one source, no writer column
    assert found == []
    _same_rows(crm, "pgbench_branches", "bid")
    _same_rows(crm, "pgbench_tellers", "tid")
    _same_rows(crm, "pgbench_accounts", "aid")


COUNTERS = ["CREATE TABLE counters (id BIGINT PRIMARY KEY, x BIGINT NOT NULL)"]
COUNTERS_TARGET = "CREATE TABLE public.counters (id bigint PRIMARY KEY, x bigint NOT NULL);"
SESSIONS, ROUNDS = 4, 40


def _counter_session(
    erp: MysqlCdcSetup, seed: int, deltas: dict[int, list[int]], lock: threading.Lock, errors: list[BaseException]
) -> None:
    rng = random.Random(seed)
    try:
        with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
            for round_ in range(ROUNDS):
                row, delta = rng.randint(1, 3), rng.choice([d for d in range(-20, 21) if d])
                moves = [(row, delta)]
                if round_ % 4 == 1:
                    moves.append((row, -delta))  # the next update cancels this one
                if round_ % 5 == 2:  # a transfer: two rows in one transaction, in id order
                    moves = [(1, delta), (2, -delta)]
                conn.begin()
                for id_, d in moves:
                    assert cur.execute("UPDATE counters SET x = x + %s WHERE id = %s", (d, id_)) == 1
                conn.commit()
                with lock:
                    for id_, d in moves:
                        deltas[id_].append(d)
    except BaseException as exc:
        errors.append(exc)


def test_counter_workload_on_mariadb(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, COUNTERS, ["counters"], target_sql=COUNTERS_TARGET)
    erp.setup()
    erp.execute("INSERT INTO counters VALUES (1, 100), (2, 100), (3, 100)")
    deltas: dict[int, list[int]] = {1: [], 2: [], 3: []}
    lock, errors = threading.Lock(), []
    sessions = [
        threading.Thread(target=_counter_session, args=(erp, seed, deltas, lock, errors)) for seed in range(SESSIONS)
    ]
    for session in sessions:
        session.start()
    for session in sessions:
        session.join(timeout=300)
    assert errors == []
    erp.drain()

    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, x FROM counters ORDER BY id")
        final = [tuple(row) for row in cur.fetchall()]
    assert final == [(id_, 100 + sum(d)) for id_, d in sorted(deltas.items())]
    events = erp.events()
    assert len(events) == 3 + sum(len(d) for d in deltas.values())
    for id_ in deltas:  # every update's before-image is the previous update's after-image
        row = [e for e in events if e["key"] == {"id": id_}]
        assert all(a["after"] == b["before"] for a, b in zip(row, row[1:]))
        assert Counter(b["after"]["x"] - b["before"]["x"] for b in row[1:]) == Counter(deltas[id_])
    assert _conflicts(erp) == []
    with erp.target() as dst:
        assert dst.execute("SELECT id, x FROM counters ORDER BY id").fetchall() == final


OWN_EDITS = """
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text,
    lock_version integer NOT NULL DEFAULT 1, updated_by text, updated_at timestamptz DEFAULT now());
CREATE TABLE public.notes (id bigint PRIMARY KEY, customer_id bigint, body text, pinned boolean, updated_by text);
"""
OWN_EDITS_RULES = """
[[tables]]
match = "public.customers"
writer_column = "updated_by"
version_column = "lock_version"
ignore_columns = ["updated_at"]
natural_keys = [["email"]]

[[tables]]
match = "public.notes"
writer_column = "updated_by"
"""


def test_one_writer_editing_and_undoing_its_own_rows(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, OWN_EDITS, ["public.customers", "public.notes"], extra_config=OWN_EDITS_RULES)
    crm.setup()
    with crm.source() as conn:
        for id_ in range(1, 6):
            conn.execute(
                "INSERT INTO customers (id, name, phone, email, updated_by) VALUES (%s, %s, %s, %s, 'sales-app')",
                (id_, f"Customer {id_}", f"555-010{id_}", f"c{id_}@x.io"),
            )
            conn.execute("INSERT INTO notes VALUES (%s, %s, 'call back', false, 'sales-app')", (id_, id_))
    expected = 10
    # the same application, from two connections (two users' sessions of sales-app)
    first, second = crm.source(), crm.source()
    for round_ in range(6):
        for id_ in range(1, 6):
            conn = first if (round_ + id_) % 2 else second
            original = conn.execute("SELECT name, phone, email FROM customers WHERE id = %s", (id_,)).fetchone()
            # an edit, then a full-row save of the copy read before it: the writer undoes its own edit
            conn.execute(
                "UPDATE customers SET phone = %s, lock_version = lock_version + 1, updated_by = 'sales-app',"
                " updated_at = now() WHERE id = %s",
                (f"555-9{round_}{id_}", id_),
            )
            conn.execute(
                "UPDATE customers SET name = %s, phone = %s, email = %s, lock_version = lock_version + 1,"
                " updated_by = 'sales-app', updated_at = now() WHERE id = %s",
                (original[0] + ("!" if round_ % 2 == 0 else ""), original[1], original[2], id_),
            )
            # and the note: pinned, edited, then both edits taken back in one full-row save
            conn.execute("UPDATE notes SET pinned = true, updated_by = 'sales-app' WHERE id = %s", (id_,))
            conn.execute("UPDATE notes SET body = %s WHERE id = %s", (f"call back ({round_})", id_))
            conn.execute(
                "UPDATE notes SET body = 'call back', pinned = false, customer_id = customer_id WHERE id = %s", (id_,)
            )
            expected += 5
    first.close(), second.close()
    crm.drain()

    events = crm.events()
    assert len(events) == expected
    assert {e["writer"] for e in events} == {"sales-app"}
    assert _conflicts(crm) == []
    _same_rows(crm, "public.customers", "id")
    _same_rows(crm, "public.notes", "id")
