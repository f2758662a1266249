"""Customers held by the CRM's PostgreSQL and the ERP's MariaDB, synced both ways by cdc.

Real servers and real concurrent sessions: the daemon captures both, tells ordered changes
from concurrent ones by version vectors, resolves divergences, writes the agreed row into
the other member, and recognises its own writes when they come back on the streams.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.helpers import CREATED, CdcSetup, wait_for

_counter = itertools.count(1)
PG_TABLE = """CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text,
    credit_limit numeric(12,2), updated_by text)"""
MARIADB_TABLE = """CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100), phone VARCHAR(60),
    email VARCHAR(200), credit_limit DECIMAL(12,2), updated_by VARCHAR(40))"""
COLUMNS = "id, name, phone, email, credit_limit, updated_by"


class TwoSources(CdcSetup):
    """crm (PostgreSQL) and erp (MariaDB), one customers entity, a PostgreSQL mirror of both (the
    helpers of ``CdcSetup``: ``cdc``, ``start``, ``events``, ``daemon_log``, ``drop_slot``)."""

    def __init__(
        self, pg_server, mariadb_server, tmp_path: Path, policy: str = "last_writer_wins", sync: bool = True
    ) -> None:
        n = f"{os.getpid()}_{next(_counter)}"
        CREATED.append(self)
        self.pg_admin_dsn = pg_server.dsn()
        self.slot = f"cdc_sync_{n}"
        self.crm_db, self.dwh_db, self.erp_db = f"sync_crm_{n}", f"sync_dwh_{n}", f"sync_erp_{n}"
        self.mariadb = mariadb_server
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.crm_db}"')
            conn.execute(f'CREATE DATABASE "{self.dwh_db}"')
        self.crm_dsn, self.dwh_dsn = pg_server.dsn(self.crm_db), pg_server.dsn(self.dwh_db)
        with psycopg.connect(self.crm_dsn, autocommit=True) as conn:
            conn.execute(PG_TABLE)
        with psycopg.connect(self.dwh_dsn, autocommit=True) as conn:
            conn.execute(PG_TABLE)
            conn.execute(PG_TABLE.replace("public.customers", "public.erp_customers"))
        with self.erp() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.erp_db}`")
            cur.execute(f"USE `{self.erp_db}`")
            cur.execute(MARIADB_TABLE)
        self.tmp_path = tmp_path
        self.jsonl = tmp_path / "audit.jsonl"
        self.config = tmp_path / "cdc.toml"
        self.config.write_text(f"""
state_dir = "{tmp_path / "state"}"

[[sources]]
name = "crm"
kind = "postgres"
dsn = "{self.crm_dsn}"
tables = ["public.customers"]
slot = "{self.slot}"
publication = "{self.slot}"
heartbeat_seconds = 1

[[sources]]
name = "erp"
kind = "mysql"
dsn = "{mariadb_server.dsn(self.erp_db)}"
server_id = {7000 + next(_counter)}
tables = ["{self.erp_db}.customers"]

[[tables]]
match = "public.customers"
writer_column = "updated_by"
natural_keys = [["email"]]

[[tables]]
match = "{self.erp_db}.customers"
writer_column = "updated_by"
natural_keys = [["email"]]

[[entities]]
name = "customer"
members = ["crm:public.customers", "erp:{self.erp_db}.customers"]
sync = {str(sync).lower()}
policy = "{policy}"

[[targets]]
name = "audit"
kind = "jsonl"
path = "{self.jsonl}"

[[targets]]
name = "dwh"
kind = "postgres"
dsn = "{self.dwh_dsn}"
table_map = {{ "{self.erp_db}.customers" = "public.erp_customers" }}

[pipeline]
flush_interval_seconds = 0.2

[retry]
initial_seconds = 0.2
max_seconds = 2
""")

    # -- servers -------------------------------------------------------------------

    def crm(self) -> psycopg.Connection:
        return psycopg.connect(self.crm_dsn, autocommit=True)

    def erp(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(
            host=self.mariadb.host,
            port=self.mariadb.port,
            user="root",
            autocommit=True,
            charset="utf8mb4",
            database=database,
        )

    def crm_rows(self, table: str = "public.customers", dsn: str | None = None) -> list[tuple]:
        with psycopg.connect(dsn or self.crm_dsn) as conn:
            return [_normal(row) for row in conn.execute(f"SELECT {COLUMNS} FROM {table} ORDER BY id")]

    def erp_rows(self) -> list[tuple]:
        with self.erp(self.erp_db) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT {COLUMNS} FROM customers ORDER BY id")
            return [_normal(row) for row in cur.fetchall()]

    def conflicts(self, *args: str) -> list[dict[str, Any]]:
        result = self.cdc("conflicts", "list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]


def _normal(row) -> tuple:
    return tuple(str(Decimal(v).quantize(Decimal("0.01"))) if isinstance(v, Decimal) else v for v in row)


@pytest.fixture
def two(pg_server, mariadb_server, tmp_path):
    setup = TwoSources(pg_server, mariadb_server, tmp_path)
    result = setup.cdc("setup")
    assert result.returncode == 0, result.stderr + result.stdout
    return setup


def _equal_everywhere(two: TwoSources) -> list[tuple] | None:
    crm, erp = two.crm_rows(), two.erp_rows()
    return crm if crm == erp else None


def test_changes_flow_both_ways_and_never_echo(two):
    with two.running():
        with two.crm() as crm:
            crm.execute("INSERT INTO customers VALUES (1, 'Ada', '555-0100', 'ada@x.io', 1000, 'sales-app')")
        wait_for(lambda: len(two.erp_rows()) == 1, what="the crm insert in erp\n" + two.daemon_log())
        with two.erp(two.erp_db) as erp, erp.cursor() as cur:
            cur.execute("UPDATE customers SET credit_limit = 2500, updated_by = 'erp-user' WHERE id = 1")
        wait_for(lambda: two.crm_rows()[0][4] == "2500.00", what="the erp update in crm\n" + two.daemon_log())
        with two.crm() as crm:
            crm.execute("DELETE FROM customers WHERE id = 1")
        wait_for(lambda: two.erp_rows() == [], what="the crm delete in erp")
        time.sleep(2)  # time for any echo to come back, were there one
    events = two.events()
    native = [(e["source"], e["op"]) for e in events if not e.get("echo")]
    echoes = [(e["source"], e["op"]) for e in events if e.get("echo")]
    assert native == [("crm", "insert"), ("erp", "update"), ("crm", "delete")]
    assert echoes == [("erp", "insert"), ("crm", "update"), ("erp", "delete")]
    # ordered changes: no divergence; the delete 1 s after erp-user's synced update is the one warning
    assert [(c["type"], c["source"]) for c in two.conflicts()] == [("update_delete", "crm")]


def test_concurrent_changes_of_one_customer_in_both_sources(pg_server, mariadb_server, tmp_path):
    two = TwoSources(pg_server, mariadb_server, tmp_path, policy="field_merge")
    assert two.cdc("setup").returncode == 0
    with two.crm() as crm:
        crm.execute("INSERT INTO customers VALUES (7, 'Bo', '555-0700', 'bo@x.io', 100, 'import')")
    result = two.cdc("run", "--drain")
    assert result.returncode == 0, result.stderr[-3000:]
    wait_for(lambda: _equal_everywhere(two), what="the insert synced")  # the drain wrote it; the echo is next
    assert two.cdc("run", "--drain").returncode == 0
    # with the daemon stopped, each system changes the customer without seeing the other's change
    with two.crm() as crm:
        crm.execute("UPDATE customers SET phone = '555-0799', updated_by = 'sales-app' WHERE id = 7")
    with two.erp(two.erp_db) as erp, erp.cursor() as cur:
        cur.execute("UPDATE customers SET credit_limit = 900, updated_by = 'erp-user' WHERE id = 7")
    for _ in range(3):  # the changes, then the merged row's write-backs, then their echoes
        result = two.cdc("run", "--drain")
        assert result.returncode == 0, result.stderr[-3000:]
    conflicts = two.conflicts("--type", "divergence")
    assert len(conflicts) == 1, conflicts
    conflict = conflicts[0]
    assert json.loads(conflict["key"]) == {"id": 7}
    assert set(conflict["fields"]) == {"phone", "credit_limit"}
    sources = {e["event_id"].split(":", 1)[0] for e in conflict["events"]}
    assert sources == {"crm", "erp"}
    assert conflict["status"] == "auto_resolved"
    assert "changed phone" in conflict["explanation"] and "changed credit_limit" in conflict["explanation"]
    assert conflict["explanation"].endswith("neither having seen the other's change; merged both")
    merged = conflict["resolution"]["resolved_row"]
    assert merged["phone"] == "555-0799" and Decimal(str(merged["credit_limit"])) == 900
    assert two.crm_rows() == two.erp_rows()
    assert two.crm_rows()[0][2:5] == ("555-0799", "bo@x.io", "900.00")


def test_a_divergence_held_for_review_is_written_into_both_sources_once_resolved(pg_server, mariadb_server, tmp_path):
    two = TwoSources(pg_server, mariadb_server, tmp_path, policy="manual")
    assert two.cdc("setup").returncode == 0
    with two.crm() as crm:
        crm.execute("INSERT INTO customers VALUES (9, 'Di', '555-0900', 'di@x.io', 100, 'import')")
    for _ in range(2):
        assert two.cdc("run", "--drain").returncode == 0
    with two.crm() as crm:
        crm.execute("UPDATE customers SET phone = '555-0901', updated_by = 'sales-app' WHERE id = 9")
    with two.erp(two.erp_db) as erp, erp.cursor() as cur:
        cur.execute("UPDATE customers SET phone = '555-0902', updated_by = 'erp-user' WHERE id = 9")
    for _ in range(2):
        assert two.cdc("run", "--drain").returncode == 0
    [conflict] = two.conflicts("--type", "divergence")
    assert conflict["status"] == "pending" and conflict["fields"] == ["phone"]
    erp_event = next(e["event_id"] for e in conflict["events"] if e["event_id"].startswith("erp:"))
    result = two.cdc("conflicts", "resolve", conflict["id"], "--keep", erp_event)
    assert result.returncode == 0, result.stderr
    for _ in range(2):  # the resolved row is written into both sources, then its echoes come back
        assert two.cdc("run", "--drain").returncode == 0
    assert two.crm_rows() == two.erp_rows() and two.crm_rows()[0][2] == "555-0902"
    [conflict] = two.conflicts("--type", "divergence")
    assert conflict["status"] == "resolved_by_hand"


def test_without_sync_contents_tell_copies_from_divergent_changes(pg_server, mariadb_server, tmp_path):
    two = TwoSources(pg_server, mariadb_server, tmp_path, sync=False)
    assert two.cdc("setup").returncode == 0

    def crm(statement: str) -> None:
        with two.crm() as conn:
            conn.execute(statement)

    def erp(statement: str) -> None:
        with two.erp(two.erp_db) as conn, conn.cursor() as cur:
            cur.execute(statement)

    with two.running():
        # another process copies each change across: no conflict (each change is captured
        # before the next is made, so the streams' order is the order of the changes)
        for write, statement in [
            (crm, "INSERT INTO customers VALUES (5, 'Ed', '555-0500', 'ed@x.io', 50, 'sales-app')"),
            (erp, "INSERT INTO customers VALUES (5, 'Ed', '555-0500', 'ed@x.io', 50, 'sales-app')"),
            (crm, "UPDATE customers SET phone = '555-0501' WHERE id = 5"),
            (erp, "UPDATE customers SET phone = '555-0501' WHERE id = 5"),
            (erp, "UPDATE customers SET credit_limit = 75, updated_by = 'erp-user' WHERE id = 5"),
            (crm, "UPDATE customers SET credit_limit = 75, updated_by = 'erp-user' WHERE id = 5"),
        ]:
            captured = len(two.events())
            write(statement)
            wait_for(lambda: len(two.events()) > captured, what="the change captured\n" + two.daemon_log())
        assert two.conflicts() == []
        # then both change the e-mail before the copy ran
        crm("UPDATE customers SET email = 'ed@crm.example', updated_by = 'sales-app' WHERE id = 5")
        erp("UPDATE customers SET email = 'ed@erp.example', updated_by = 'erp-user' WHERE id = 5")
        wait_for(lambda: two.conflicts(), what="the divergence")
    [conflict] = two.conflicts()
    assert (conflict["type"], conflict["fields"]) == ("divergence", ["email"])
    assert conflict["resolution"]["written_to"] == []  # cdc does not write into the sources without sync
    assert two.crm_rows()[0][3] == "ed@crm.example" and two.erp_rows()[0][3] == "ed@erp.example"


def test_duplicate_inserts_of_a_natural_key_across_the_two_sources(two):
    with two.crm() as crm:
        crm.execute("INSERT INTO customers VALUES (100, 'Cy', '555-1000', 'cy@x.io', 10, 'sales-app')")
    with two.erp(two.erp_db) as erp, erp.cursor() as cur:
        cur.execute("INSERT INTO customers VALUES (200, 'Cy', '555-2000', 'cy@x.io', 10, 'erp-user')")
    for _ in range(3):  # the inserts, then the synced rows' echoes
        result = two.cdc("run", "--drain")
        assert result.returncode == 0, result.stderr[-3000:]
    conflicts = two.conflicts("--type", "duplicate_key")
    assert len(conflicts) == 1, conflicts
    conflict = conflicts[0]
    assert conflict["fields"] == ["email"]
    assert {json.dumps(json.loads(conflict["key"]))} <= {'{"id": 100}', '{"id": 200}'}
    assert {e["event_id"].split(":", 1)[0] for e in conflict["events"]} == {"crm", "erp"}
    assert "cy@x.io" in conflict["explanation"]
    assert [r[0] for r in two.crm_rows()] == [r[0] for r in two.erp_rows()] == [100, 200]


def test_two_way_sync_under_concurrent_writers_for_a_minute(two):
    with two.crm() as crm:
        for i in range(1, 21):
            crm.execute(
                "INSERT INTO customers VALUES (%s, %s, '555-0000', %s, 100, 'import')",
                (i, f"Customer {i}", f"c{i}@x.io"),
            )
    with two.running() as daemon:
        wait_for(lambda: len(two.erp_rows()) == 20, timeout=60, what="the initial rows in erp\n" + two.daemon_log())
        stop = threading.Event()
        writes = {"crm": 0, "erp": 0}
        lock = threading.Lock()
        errors: list[BaseException] = []

        def count(source: str, n: int) -> None:
            with lock:
                writes[source] += n

        def crm_writer(seed: int) -> None:
            rng = random.Random(seed)
            try:
                with two.crm() as conn:
                    for n in itertools.count():
                        if stop.is_set():
                            return
                        key = rng.randint(1, 24)
                        field = rng.choice(["phone", "email", "name"])
                        try:
                            if rng.random() < 0.05:
                                cur = conn.execute(
                                    "INSERT INTO customers VALUES (%s, 'new', 'p', 'e', 1, 'crm')"
                                    " ON CONFLICT (id) DO NOTHING",
                                    (key,),
                                )
                            elif rng.random() < 0.03:
                                cur = conn.execute("DELETE FROM customers WHERE id = %s", (key,))
                            else:
                                cur = conn.execute(
                                    f"UPDATE customers SET {field} = %s, updated_by = 'sales-app' WHERE id = %s",
                                    (f"crm{seed}-{n}", key),
                                )
                        except psycopg.errors.UniqueViolation:
                            continue
                        count("crm", cur.rowcount)
                        time.sleep(rng.uniform(0.01, 0.04))
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        def erp_writer(seed: int) -> None:
            rng = random.Random(seed)
            try:
                with two.erp(two.erp_db) as conn, conn.cursor() as cur:
                    for n in itertools.count():
                        if stop.is_set():
                            return
                        key = rng.randint(1, 24)
                        if rng.random() < 0.05:
                            changed = cur.execute(
                                "INSERT IGNORE INTO customers VALUES (%s, 'new', 'p', 'e', 1, 'erp')", (key,)
                            )
                        elif rng.random() < 0.03:
                            changed = cur.execute("DELETE FROM customers WHERE id = %s", (key,))
                        else:
                            changed = cur.execute(
                                "UPDATE customers SET credit_limit = %s, phone = %s,"
                                " updated_by = 'erp-user' WHERE id = %s",
                                (rng.randint(1, 99999), f"erp{seed}-{n}", key),
                            )
                        count("erp", changed)
                        time.sleep(rng.uniform(0.01, 0.04))
            except BaseException as exc:
                errors.append(exc)

        writers = [threading.Thread(target=crm_writer, args=(s,)) for s in (1, 2)]
        writers += [threading.Thread(target=erp_writer, args=(s,)) for s in (3, 4)]
        for writer in writers:
            writer.start()
        time.sleep(60)
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
        assert not errors, errors
        assert daemon.poll() is None, two.daemon_log()

        def settled() -> list[tuple] | None:
            before = len(two.events())
            rows = _equal_everywhere(two)
            time.sleep(2)
            return rows if rows and len(two.events()) == before and _equal_everywhere(two) == rows else None

        final = wait_for(settled, timeout=120, interval=1, what="both sources equal and quiet\n" + two.daemon_log())
    assert two.crm_rows("public.customers", two.dwh_dsn) == final
    assert two.crm_rows("public.erp_customers", two.dwh_dsn) == final
    events = two.events()
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was applied twice"
    native = {"crm": 0, "erp": 0}
    for event in events:
        if not event.get("echo"):
            native[event["source"]] += 1
    initial = 20
    # every change a writer made was captured once, and none of cdc's writes came back as one
    assert native == {"crm": writes["crm"] + initial, "erp": writes["erp"]}, (native, writes)
    assert writes["crm"] > 100 and writes["erp"] > 100
    divergences = two.conflicts("--type", "divergence")
    assert divergences and all(c["status"] == "auto_resolved" for c in divergences)
