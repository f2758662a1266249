#!/usr/bin/env python3
"""Make each kind of conflict for real on throwaway servers and show what cdc detects.

Starts a throwaway PostgreSQL and a throwaway MariaDB server (devtools.servers), and for
every scenario creates a fresh database, configures cdc for it (one source, a JSONL audit
target, the conflict rules of a small CRM), runs ``cdc setup``, makes the anomaly with two
or more real concurrent sessions (interleaved transactions, statements waiting for another
session's row lock), runs ``cdc run --drain`` and prints the conflicts ``cdc conflicts list
--json`` reports: type, key, fields and explanation, then PASS or FAIL against what the
README's conflict taxonomy says must be detected. Benign workloads (pgbench's TPC-B, counters, a writer undoing its
own edits) must report nothing. The ``/both`` scenarios hold one customer in a PostgreSQL CRM
and a MariaDB ERP, synced both ways as an entity, and check that both sources end equal.
Exit status 1 when any scenario fails.

    scripts/scenarios.py                  # every scenario, on both servers
    scripts/scenarios.py --list           # the scenarios, without running anything
    scripts/scenarios.py --only stale-save --only stream-gap/mariadb
    scripts/scenarios.py --keep           # keep each scenario's cdc.toml, state and audit log

The servers and their data are always removed at the end; with ``--keep`` the work directory
stays, so ``CDC_CONFIG=<dir>/<scenario>/cdc.toml cdc conflicts list`` still works afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import pymysql  # noqa: E402

from devtools.servers import ThrowawayMariaDB, ThrowawayPostgres  # noqa: E402

ORDER = ["lead", "qualified", "proposal", "won"]
SCHEMA = {
    "postgres": [
        "CREATE TABLE customers (id bigint PRIMARY KEY, name text, phone text, email text,"
        " lock_version integer NOT NULL DEFAULT 1, updated_by text, updated_at timestamptz DEFAULT now())",
        "CREATE TABLE deals (id bigint PRIMARY KEY, title text, stage text, updated_by text)",
        "CREATE TABLE counters (id bigint PRIMARY KEY, x bigint NOT NULL)",
    ],
    "mariadb": [
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100), phone VARCHAR(40), email VARCHAR(200),"
        " lock_version INT NOT NULL DEFAULT 1, updated_by VARCHAR(40),"
        " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
        "CREATE TABLE deals (id BIGINT PRIMARY KEY, title VARCHAR(100), stage VARCHAR(20), updated_by VARCHAR(40))",
        "CREATE TABLE counters (id BIGINT PRIMARY KEY, x BIGINT NOT NULL)",
    ],
}
ENTITY_SCHEMA = {
    "postgres": "CREATE TABLE customers (id bigint PRIMARY KEY, name text, phone text, email text,"
    " credit_limit numeric(12,2), updated_by text)",
    "mariadb": "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100), phone VARCHAR(40),"
    " email VARCHAR(200), credit_limit DECIMAL(12,2), updated_by VARCHAR(40))",
}
CRM_TABLES = ["customers", "deals", "counters"]
PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers"]
_numbers = itertools.count(1)


class ScenarioError(Exception):
    """The scenario could not be run to the end (a cdc command or a session failed)."""


# -- sessions ------------------------------------------------------------------------------


class Session:
    """One database session (autocommit; ``begin()`` opens a transaction), on either server."""

    def __init__(self, engine: str, conn: Any) -> None:
        self.engine, self.conn = engine, conn

    def run(self, statement: str, args: Any = None) -> int:
        if self.engine == "postgres":
            return self.conn.execute(statement, args).rowcount
        with self.conn.cursor() as cur:
            return cur.execute(statement, args)

    def one(self, statement: str, args: Any = None) -> tuple:
        if self.engine == "postgres":
            return self.conn.execute(statement, args).fetchone()
        with self.conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchone()

    def all(self, statement: str) -> list[tuple]:
        if self.engine == "postgres":
            return [tuple(row) for row in self.conn.execute(statement).fetchall()]
        with self.conn.cursor() as cur:
            cur.execute(statement)
            return [tuple(row) for row in cur.fetchall()]

    def begin(self) -> None:
        self.run("BEGIN")

    def commit(self) -> None:
        self.run("COMMIT")

    def ident(self) -> int:
        return self.conn.info.backend_pid if self.engine == "postgres" else self.conn.thread_id()

    def close(self) -> None:
        self.conn.close()


class Background:
    """A statement run in a thread, returned once it waits for another session's row lock."""

    def __init__(self, scenario: Run, session: Session, statement: str, args: Any = None) -> None:
        self.error: BaseException | None = None
        self.rowcount = -1

        def run() -> None:
            try:
                self.rowcount = session.run(statement, args)
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        probe = (
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"
            if session.engine == "postgres"
            else "SELECT COUNT(*) FROM information_schema.INNODB_TRX"
            " WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'"
        )
        watch = scenario.session()
        try:
            deadline = time.monotonic() + 30
            while not watch.one(probe, (session.ident(),))[0]:
                if self.error is not None or time.monotonic() > deadline:
                    raise ScenarioError(f"the statement never waited for the row lock: {self.error}")
                time.sleep(0.05)
        finally:
            watch.close()

    def join(self) -> int:
        self._thread.join(timeout=60)
        if self._thread.is_alive():
            raise ScenarioError("the blocked statement never finished")
        if self.error is not None:
            raise self.error
        return self.rowcount


# -- one scenario's database and cdc configuration -----------------------------------------


class Run:
    """A fresh database on one server, with its cdc configuration in ``workdir``."""

    def __init__(self, engine: str, server: Any, workdir: Path, tables: list[str], schema: list[str]) -> None:
        n = f"{os.getpid()}_{next(_numbers)}"
        self.engine, self.server, self.workdir = engine, server, workdir
        self.db = f"scenario_{n}"
        self.slot = f"cdc_scenario_{n}"
        workdir.mkdir(parents=True)
        self.config, self.audit = workdir / "cdc.toml", workdir / "audit.jsonl"
        self.expected_events: int | None = None  # when the scenario knows how many changes it made
        admin = self.session(database="postgres" if engine == "postgres" else None)
        try:
            admin.run(f'CREATE DATABASE "{self.db}"' if engine == "postgres" else f"CREATE DATABASE `{self.db}`")
        finally:
            admin.close()
        conn = self.session()
        try:
            for statement in schema:
                conn.run(statement)
        finally:
            conn.close()
        schema_name = "public" if engine == "postgres" else self.db
        self.table = {t: f"{schema_name}.{t}" for t in tables}
        qualified = json.dumps(list(self.table.values()))
        if engine == "postgres":
            source = (
                f'name = "crm"\nkind = "postgres"\ndsn = "{server.dsn(self.db)}"\ntables = {qualified}\n'
                f'slot = "{self.slot}"\npublication = "{self.slot}"\nheartbeat_seconds = 1'
            )
        else:
            source = (
                f'name = "erp"\nkind = "mysql"\ndsn = "{server.dsn(self.db)}"\ntables = {qualified}\n'
                f"server_id = {6000 + int(n.split('_')[1])}"
            )
        self.source_toml = source
        rules = (
            ""
            if "deals" not in self.table
            else f"""
[[tables]]
match = "{self.table["customers"]}"
writer_column = "updated_by"
version_column = "lock_version"
ignore_columns = ["updated_at"]
natural_keys = [["email"]]

[[tables]]
match = "{self.table["deals"]}"
writer_column = "updated_by"
status_column = "stage"
status_order = {json.dumps(ORDER)}
"""
        )
        self.write_config(f"[[sources]]\n{source}\n", rules)

    def write_config(self, sources: str, rules: str) -> None:
        self.config.write_text(f"""
state_dir = "{self.workdir / "state"}"

{sources}

[[targets]]
name = "audit"
kind = "jsonl"
path = "{self.audit}"

[pipeline]
flush_interval_seconds = 0.2

[retry]
initial_seconds = 0.2
max_seconds = 2

[conflicts]
policy = "last_writer_wins"
{rules}""")

    def session(self, database: str | None = "") -> Session:
        database = self.db if database == "" else database
        if self.engine == "postgres":
            return Session("postgres", psycopg.connect(self.server.dsn(database), autocommit=True))
        return Session(
            "mariadb",
            pymysql.connect(
                host=self.server.host,
                port=self.server.port,
                user="root",
                autocommit=True,
                charset="utf8mb4",
                database=database,
            ),
        )

    def execute(self, *statements: str) -> None:
        conn = self.session()
        try:
            for statement in statements:
                conn.run(statement)
        finally:
            conn.close()

    def cdc(self, *args: str, timeout: float = 300) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
        env.update(CDC_CONFIG=str(self.config), PYTHONPATH=str(ROOT))
        try:
            result = subprocess.run(
                [sys.executable, "-m", "cdc", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
            )
        except subprocess.TimeoutExpired:
            raise ScenarioError(f"cdc {' '.join(args)} did not finish within {timeout:.0f}s") from None
        if result.returncode != 0:
            raise ScenarioError(
                f"cdc {' '.join(args)} exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}"
            )
        return result.stdout

    def drain(self) -> None:
        self.cdc("run", "--drain")

    def conflicts(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.cdc("conflicts", "list", "--json").splitlines()]

    def events(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text(encoding="utf-8").splitlines()]


class EntityRun(Run):
    """Customers in a PostgreSQL CRM and a MariaDB ERP, one entity synced both ways by cdc."""

    def __init__(self, servers: dict[str, Any], workdir: Path, policy: str) -> None:
        workdir.mkdir(parents=True)
        self.crm = Run("postgres", servers["postgres"], workdir / "crm", ["customers"], [ENTITY_SCHEMA["postgres"]])
        self.erp = Run("mariadb", servers["mariadb"], workdir / "erp", ["customers"], [ENTITY_SCHEMA["mariadb"]])
        self.engine, self.server, self.workdir = "both", servers, workdir
        self.config, self.audit = workdir / "cdc.toml", workdir / "audit.jsonl"
        self.expected_events = None
        members = [f"crm:{self.crm.table['customers']}", f"erp:{self.erp.table['customers']}"]
        rules = "".join(
            f'[[tables]]\nmatch = "{member}"\nwriter_column = "updated_by"\nnatural_keys = [["email"]]\n\n'
            for member in members
        )
        rules += f'[[entities]]\nname = "customer"\nmembers = {json.dumps(members)}\nsync = true\npolicy = "{policy}"\n'
        self.write_config(f"[[sources]]\n{self.crm.source_toml}\n\n[[sources]]\n{self.erp.source_toml}\n", rules)
        self.cdc("setup")

    def drain(self) -> None:
        """The changes, the synced rows, then their echoes: both sources must end equal."""
        for _ in range(3):
            super().drain()
        rows = []
        for run in (self.crm, self.erp):
            session = run.session()
            try:
                rows.append(
                    session.all(
                        "SELECT id, name, phone, email, CAST(credit_limit AS CHAR(20)) FROM customers ORDER BY id"
                        if run.engine == "mariadb"
                        else "SELECT id, name, phone, email, credit_limit::text FROM customers ORDER BY id"
                    )
                )
            finally:
                session.close()
        if rows[0] != rows[1]:
            raise ScenarioError(f"the sources differ after syncing: crm {rows[0]}, erp {rows[1]}")


def entity_run(
    servers: dict[str, Any], workdir: Path, make: Callable[[EntityRun], None], policy: str = "field_merge"
) -> EntityRun:
    run = EntityRun(servers, workdir, policy)
    run.crm.execute("INSERT INTO customers VALUES (42, 'Ada', '555-0100', 'ada@x.io', 1000, 'import')")
    run.drain()  # synced into the ERP before the scenario starts
    make(run)
    return run


def crm_run(engine: str, server: Any, workdir: Path) -> Run:
    """The small CRM, cdc set up for it, and its first rows (streamed as inserts)."""
    run = Run(engine, server, workdir, CRM_TABLES, SCHEMA[engine])
    run.cdc("setup")
    run.execute(
        "INSERT INTO customers (id, name, phone, email, updated_by)"
        " VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import')",
        "INSERT INTO deals VALUES (7, 'Renewal', 'proposal', 'sales-app')",
        "INSERT INTO counters VALUES (1, 100), (2, 100), (3, 100)",
    )
    return run


# -- the scenarios ---------------------------------------------------------------------------


def stale_save(run: Run) -> None:
    sales, sync = run.session(), run.session()
    sync.begin()  # erp-sync reads the row ...
    stale = sync.one("SELECT name, phone, lock_version FROM customers WHERE id = 42")
    sales.run(
        "UPDATE customers SET phone = '555-0199', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42"
    )  # ... sales changes the phone meanwhile ...
    sync.run(
        "UPDATE customers SET name = %s, phone = %s, email = 'ada@erp.example', lock_version = %s + 1,"
        " updated_by = 'erp-sync' WHERE id = 42",
        stale,
    )  # ... erp-sync saves the row it read
    sync.commit()
    sales.close(), sync.close()


def stale_lock(run: Run) -> None:
    first, second = run.session(), run.session()
    second.begin()
    read_version = second.one("SELECT lock_version FROM customers WHERE id = 42")[0]
    first.run(
        "UPDATE customers SET name = 'Ada Lovelace', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42"
    )
    # the version computed from the stale read, unchecked; a changed phone too, or MariaDB logs nothing
    second.run(
        "UPDATE customers SET phone = '555-0400', lock_version = %s, updated_by = 'erp-sync' WHERE id = 42",
        (read_version + 1,),
    )
    second.commit()
    first.close(), second.close()


def same_field(run: Run) -> None:
    sales, marketing = run.session(), run.session()
    sales.begin()
    sales.run(
        "UPDATE customers SET phone = '555-0111', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42"
    )
    waiting = Background(
        run,
        marketing,
        "UPDATE customers SET phone = '555-0222', lock_version = lock_version + 1,"
        " updated_by = 'marketing' WHERE id = 42",
    )
    sales.commit()
    waiting.join()
    sales.close(), marketing.close()


def delete_race(run: Run) -> None:
    sales, cleanup = run.session(), run.session()
    sales.begin()
    sales.run(
        "UPDATE customers SET phone = '555-0300', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42"
    )
    waiting = Background(run, cleanup, "DELETE FROM customers WHERE id = 42")
    sales.commit()
    waiting.join()
    sales.close(), cleanup.close()


def status_back(run: Run) -> None:
    sales, sync = run.session(), run.session()
    sync.begin()
    sync.one("SELECT stage FROM deals WHERE id = 7")
    sales.run("UPDATE deals SET stage = 'won', updated_by = 'sales-app' WHERE id = 7")
    sync.run("UPDATE deals SET stage = 'qualified', updated_by = 'erp-sync' WHERE id = 7")
    sync.commit()
    sales.close(), sync.close()


def duplicate_email(run: Run) -> None:
    web, sync = run.session(), run.session()
    web.begin()
    sync.begin()
    web.run("INSERT INTO customers (id, name, email, updated_by) VALUES (50, 'Grace', 'grace@x.io', 'web-form')")
    sync.run("INSERT INTO customers (id, name, email, updated_by) VALUES (51, 'Grace H.', 'grace@x.io', 'erp-sync')")
    web.commit()
    sync.commit()
    web.close(), sync.close()


def counters(run: Run) -> None:
    errors: list[BaseException] = []

    def session(seed: int) -> None:
        rng, conn = random.Random(seed), run.session()
        try:
            for round_ in range(40):
                row, delta = rng.randint(1, 3), rng.choice([d for d in range(-20, 21) if d])
                moves = [(row, delta), (row, -delta)] if round_ % 4 == 1 else [(row, delta)]
                if round_ % 5 == 2:
                    moves = [(1, delta), (2, -delta)]  # a transfer, rows in id order
                conn.begin()
                for id_, d in moves:
                    conn.run("UPDATE counters SET x = x + %s WHERE id = %s", (d, id_))
                conn.commit()
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=session, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise ScenarioError(f"a counter session failed: {errors[0]}")


def own_edits(run: Run) -> None:
    first, second = run.session(), run.session()  # two sessions of the same application
    for round_ in range(6):
        conn = first if round_ % 2 else second
        original = conn.one("SELECT name, phone, email FROM customers WHERE id = 42")
        conn.run(
            "UPDATE customers SET phone = %s, lock_version = lock_version + 1, updated_by = 'sales-app' WHERE id = 42",
            (f"555-9{round_}",),
        )
        # a full-row save of the copy read before: the writer undoes its own edit
        conn.run(
            "UPDATE customers SET name = %s, phone = %s, email = %s, lock_version = lock_version + 1,"
            " updated_by = 'sales-app' WHERE id = 42",
            original,
        )
    first.close(), second.close()


def stream_gap(run: Run) -> None:
    run.execute(
        "UPDATE customers SET phone = '555-0199', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42"
    )
    run.drain()  # cdc has seen everything so far; it is stopped now
    unseen = [
        "UPDATE customers SET phone = '555-0900', lock_version = lock_version + 1, updated_by = 'bulk-fix'"
        " WHERE id = 42",
        "UPDATE customers SET name = 'Ada L.' WHERE id = 42",
    ]
    if run.engine == "postgres":  # changes, and the slot moved past them
        run.execute(*unseen, f"SELECT pg_replication_slot_advance('{run.slot}', pg_current_wal_lsn())")
    else:  # changes the binlog never holds
        run.execute("SET SESSION sql_log_bin = 0", *unseen)
    run.execute("UPDATE customers SET email = 'ada@new.io', lock_version = lock_version + 1 WHERE id = 42")


def pgbench(pg: ThrowawayPostgres, workdir: Path) -> Run:
    """pgbench's TPC-B: 4 clients, 200 transactions each, on pgbench's own tables."""
    run = Run("postgres", pg, workdir, PGBENCH_TABLES, [])

    def bench(*args: str) -> str:
        result = subprocess.run(
            [os.path.join(pg.bindir, "pgbench"), "-h", pg.host, "-p", str(pg.port), "-U", "postgres", *args, run.db],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise ScenarioError(f"pgbench {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    bench("-i", "-s", "1", "-I", "dtgvp", "-q")  # tables with primary keys (pgbench_history has none)
    run.cdc("setup")  # after the initial load: the load itself is not streamed
    output = bench("-c", "4", "-j", "2", "-t", "200", "-n")
    done = re.search(r"number of transactions actually processed: (\d+)", output)
    run.expected_events = 3 * int(done.group(1)) if done else -1  # an account, a teller, a branch each
    return run


@dataclass(frozen=True)
class Expect:
    type: str
    key: str | None = None
    fields: tuple[str, ...] | None = None

    def __str__(self) -> str:
        return " ".join(x for x in (self.type, self.key, self.fields and f"[{', '.join(self.fields)}]") if x)


@dataclass
class Scenario:
    name: str  # "<what>/<server>"
    title: str
    expected: tuple[Expect, ...]  # empty: a benign workload
    make: Callable[[Run], None] | None = None  # the anomaly, on the small CRM
    build: Callable[[Any, Path], Run] | None = None  # a run of its own instead of the CRM
    requires: list[str] = field(default_factory=list)

    @property
    def server(self) -> str:
        """postgres, mariadb, or both (a customer held by a PostgreSQL CRM and a MariaDB ERP)."""
        return self.name.rsplit("/", 1)[1]


K42, K7 = '{"id":42}', '{"id":7}'
_BOTH = [
    (
        "stale-save",
        "a stale full-row save from another application reverts the phone",
        (Expect("lost_update", K42, ("phone",)),),
        stale_save,
    ),
    (
        "stale-lock",
        "a stale optimistic-lock write (lock_version not advanced)",
        (Expect("lost_update", K42, ("lock_version",)),),
        stale_lock,
    ),
    (
        "same-field",
        "two writers edit the same field at the same time (row lock wait)",
        (Expect("concurrent_overwrite", K42, ("phone",)),),
        same_field,
    ),
    (
        "delete-race",
        "a delete waits for an update's row lock, then deletes the row",
        (Expect("update_delete", K42, ("phone",)),),
        delete_race,
    ),
    (
        "status-back",
        "a deal's stage moves back from won to qualified (another writer)",
        (Expect("state_regression", K7, ("stage",)), Expect("concurrent_overwrite", K7, ("stage",))),
        status_back,
    ),
    (
        "duplicate-email",
        "two systems create the same customer (same e-mail) concurrently",
        (Expect("duplicate_key", '{"id":51}', ("email",)),),
        duplicate_email,
    ),
    ("counters", "benign: x = x + delta from 4 sessions, deltas cancelling each other", (), counters),
    ("own-edits", "benign: one writer editing and undoing its own edits", (), own_edits),
    (
        "stream-gap",
        "changes cdc never saw (slot advanced / sql_log_bin = 0), then a logged change",
        (Expect("stream_gap", K42),),
        stream_gap,
    ),
]
SCENARIOS = [
    Scenario(f"{name}/{server}", title, expected, make)
    for name, title, expected, make in _BOTH
    for server in ("postgres", "mariadb")
]
SCENARIOS.append(Scenario("pgbench/postgres", "benign: pgbench TPC-B, 4 clients x 200 transactions", (), build=pgbench))


def both_systems_edit(run: EntityRun) -> None:
    """The CRM changes the phone while the ERP changes the credit limit, each from the row it
    held, before cdc could bring either change across (cdc is stopped between drains)."""
    run.crm.execute("UPDATE customers SET phone = '555-0199', updated_by = 'sales-app' WHERE id = 42")
    run.erp.execute("UPDATE customers SET credit_limit = 2500, updated_by = 'erp-user' WHERE id = 42")


def both_systems_create(run: EntityRun) -> None:
    run.crm.execute("INSERT INTO customers VALUES (50, 'Grace', '555-0500', 'grace@x.io', 10, 'web-form')")
    run.erp.execute("INSERT INTO customers VALUES (51, 'Grace H.', '555-0501', 'grace@x.io', 10, 'erp-user')")


def systems_take_turns(run: EntityRun) -> None:
    run.crm.execute("UPDATE customers SET phone = '555-0199', updated_by = 'sales-app' WHERE id = 42")
    run.drain()
    run.erp.execute("UPDATE customers SET credit_limit = 2500, updated_by = 'erp-user' WHERE id = 42")
    run.drain()
    run.crm.execute("UPDATE customers SET email = 'ada@crm.example', updated_by = 'sales-app' WHERE id = 42")


SCENARIOS += [
    Scenario(
        "divergence/both",
        "the CRM and the ERP change one customer, neither seeing the other (field_merge)",
        (Expect("divergence", K42, ("credit_limit", "phone")),),
        build=lambda servers, workdir: entity_run(servers, workdir, both_systems_edit),
    ),
    Scenario(
        "duplicate-across/both",
        "the CRM and the ERP create the same customer (same e-mail), other ids",
        (Expect("duplicate_key", None, ("email",)),),
        build=lambda servers, workdir: entity_run(servers, workdir, both_systems_create),
    ),
    Scenario(
        "take-turns/both",
        "benign: the CRM and the ERP edit one customer in turn, each seeing the other",
        (),
        build=lambda servers, workdir: entity_run(servers, workdir, systems_take_turns),
    ),
]


# -- running and reporting -------------------------------------------------------------------


def run_scenario(scenario: Scenario, servers: dict[str, Any], workdir: Path) -> bool:
    print(f"\n== {scenario.name}: {scenario.title}")
    print(f"   expected: {', '.join(map(str, scenario.expected)) or 'no conflicts'}")
    server = servers if scenario.server == "both" else servers[scenario.server]
    where = workdir / scenario.name.replace("/", "-")
    try:
        if scenario.build is not None:
            run = scenario.build(server, where)
        else:
            run = crm_run(scenario.server, server, where)
            scenario.make(run)
        started = time.monotonic()
        run.drain()
        found = run.conflicts()
        events = run.events()
    except Exception as exc:
        print(f"   could not run it: {type(exc).__name__}: {exc}")
        print("   FAIL")
        return False
    print(f"   {len(events)} events streamed, drained in {time.monotonic() - started:.1f}s")
    for conflict in found:
        print(
            f"   found:    {conflict['type']}  key {conflict['key']}  fields {', '.join(conflict['fields'])}"
            f"  ({conflict['severity']}, {conflict['status']})"
        )
        print(f"             {conflict['explanation']}")
    if not found:
        print("   found:    no conflicts")
    problems = _compare(scenario.expected, found)
    if run.expected_events is not None and run.expected_events != len(events):
        problems.append(f"{len(events)} events, expected {run.expected_events}")
    for problem in problems:
        print(f"   mismatch: {problem}")
    print("   PASS" if not problems else "   FAIL")
    return not problems


def _compare(expected: tuple[Expect, ...], found: list[dict[str, Any]]) -> list[str]:
    problems = []
    want, got = Counter(e.type for e in expected), Counter(c["type"] for c in found)
    if want != got:
        problems.append(f"types {dict(got) or 'none'}, expected {dict(want) or 'none'}")
    for expect in expected:
        same = [c for c in found if c["type"] == expect.type]
        if not same:
            continue
        if expect.key is not None and all(c["key"] != expect.key for c in same):
            problems.append(f"{expect.type} on {same[0]['key']}, expected {expect.key}")
        if expect.fields is not None and all(tuple(c["fields"]) != expect.fields for c in same):
            problems.append(f"{expect.type} fields {same[0]['fields']}, expected {list(expect.fields)}")
    return problems


def _selected(only: list[str] | None) -> list[Scenario]:
    if not only:
        return SCENARIOS
    chosen = [s for s in SCENARIOS if s.name in only or s.name.split("/")[0] in only or s.server in only]
    unknown = [name for name in only if not any(name in (s.name, s.name.split("/")[0], s.server) for s in SCENARIOS)]
    if unknown:
        raise SystemExit(f"scenarios.py: no scenario {', '.join(map(repr, unknown))} (see --list)")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this scenario: 'stale-save/mariadb', 'stale-save' (both servers) or "
        "'postgres' / 'mariadb' (every scenario on that server); repeatable",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (each scenario's cdc.toml, state and audit.jsonl)"
    )
    args = parser.parse_args()
    chosen = _selected(args.only)
    if args.list:
        for scenario in chosen:
            expected = ", ".join(e.type for e in scenario.expected) or "no conflicts"
            print(f"{scenario.name:26} {scenario.title}  -> {expected}")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="cdc-scenarios-"))
    print(f"cdc conflict scenarios in {workdir}")
    results: dict[str, bool] = {}
    try:
        with contextlib.ExitStack() as stack:
            servers: dict[str, Any] = {}
            needed = {n for s in chosen for n in (("postgres", "mariadb") if s.server == "both" else (s.server,))}
            if "postgres" in needed:
                servers["postgres"] = stack.enter_context(ThrowawayPostgres())
                print(f"throwaway PostgreSQL on port {servers['postgres'].port}")
            if "mariadb" in needed:
                servers["mariadb"] = stack.enter_context(ThrowawayMariaDB())
                print(f"throwaway MariaDB on port {servers['mariadb'].port}")
            for scenario in chosen:
                results[scenario.name] = run_scenario(scenario, servers, workdir)
    finally:
        if args.keep:
            print(f"\nkept {workdir} (CDC_CONFIG=<that dir>/<scenario>/cdc.toml cdc conflicts list)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [name for name, ok in results.items() if not ok]
    print(
        f"\n{len(results) - len(failed)} of {len(results)} scenarios passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
