"""Test helpers: a CRM database with its cdc configuration, and cdc run as a real process."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

PROJECT = Path(__file__).resolve().parent.parent
_counter = itertools.count(1)
CREATED: list[CdcSetup] = []  # dropped after each test (tests/conftest.py), so slots do not pile up


class CdcSetup:
    """A source database, a target database and a cdc configuration, unique to one test."""

    def __init__(
        self,
        pg_server,
        tmp_path: Path,
        schema_sql: str,
        tables: list[str],
        extra_config: str = "",
        target_sql: str | None = None,
    ) -> None:
        n = f"{os.getpid()}_{next(_counter)}"
        CREATED.append(self)
        self.pg_admin_dsn = pg_server.dsn()
        self.name = "crm"
        self.source_db, self.target_db = f"crm_{n}", f"dwh_{n}"
        self.slot = f"cdc_slot_{n}"
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.source_db}"')
            conn.execute(f'CREATE DATABASE "{self.target_db}"')
        self.source_dsn = pg_server.dsn(self.source_db)
        self.target_dsn = pg_server.dsn(self.target_db)
        self.tmp_path = tmp_path
        self.state_dir = tmp_path / "state"
        self.jsonl = tmp_path / "audit.jsonl"
        self.config = tmp_path / "cdc.toml"
        with psycopg.connect(self.source_dsn, autocommit=True) as conn:
            conn.execute(schema_sql)
        with psycopg.connect(self.target_dsn, autocommit=True) as conn:
            conn.execute(target_sql if target_sql is not None else schema_sql)
        tables_toml = ", ".join(json.dumps(t) for t in tables)
        self.config.write_text(f"""
state_dir = "{self.state_dir}"

[[sources]]
name = "{self.name}"
kind = "postgres"
dsn = "{self.source_dsn}"
tables = [{tables_toml}]
slot = "{self.slot}"
publication = "{self.slot}"
heartbeat_seconds = 1

[[targets]]
name = "audit"
kind = "jsonl"
path = "{self.jsonl}"

[[targets]]
name = "dwh"
kind = "postgres"
dsn = "{self.target_dsn}"

[pipeline]
flush_interval_seconds = 0.2

[retry]
initial_seconds = 0.2
max_seconds = 2
{extra_config}
""")

    def drop_slot(self) -> None:
        """Drop this test's replication slot, so that it retains no WAL and frees its place."""
        with psycopg.connect(self.pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = %s AND active_pid IS NOT NULL",
                (self.slot,),
            )
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (self.slot,),
            )

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
        env.update(CDC_CONFIG=str(self.config), PYTHONPATH=str(PROJECT), **extra)
        return env

    def cdc(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdc", *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=PROJECT,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        log = open(self.tmp_path / "daemon.log", "a")
        return subprocess.Popen(
            [sys.executable, "-m", "cdc", "run", *args],
            env=self.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROJECT,
        )

    @contextlib.contextmanager
    def running(self, *args: str, timeout: float = 30, **env: str) -> Iterator[subprocess.Popen[str]]:
        """The daemon (``cdc run``) for the block; stopped by SIGTERM after it, which it must obey
        (exit 0) within ``timeout`` seconds."""
        daemon = self.start(*args, **env)
        try:
            yield daemon
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=timeout) == 0, self.daemon_log()[-3000:]

    def daemon_log(self) -> str:
        path = self.tmp_path / "daemon.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def setup(self) -> None:
        result = self.cdc("setup")
        assert result.returncode == 0, result.stderr + result.stdout

    def drain(self, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = self.cdc("run", "--drain", timeout=timeout)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return result

    def source(self) -> psycopg.Connection:
        return psycopg.connect(self.source_dsn, autocommit=True)

    def target(self) -> psycopg.Connection:
        return psycopg.connect(self.target_dsn, autocommit=True)

    def events(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text(encoding="utf-8").splitlines()]


@contextlib.contextmanager
def concurrent_writers(connect, step, count: int = 2) -> Iterator[None]:
    """``count`` threads, each with its own connection (``connect()``), calling ``step(rng, conn)``
    over and over while the block runs; a writer's error fails the block."""
    stop, errors = threading.Event(), []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with connect() as conn:
                while not stop.is_set():
                    step(rng, conn)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    writers = [threading.Thread(target=work, args=(seed,)) for seed in range(count)]
    for writer in writers:
        writer.start()
    try:
        yield
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert not errors, errors


def sample_peak_rss(argv: list[str], env: dict[str, str], kill_when=None) -> tuple[int, str, int]:
    """Run a process, sampling its resident memory until it exits (or, once ``kill_when()`` is
    true, SIGKILL it): exit status, output, peak RSS in KiB."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT)
    peak = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()))
    reader.start()
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]))
        except FileNotFoundError:
            break
        if kill_when is not None and kill_when():
            process.kill()
            break
        time.sleep(0.05)
    code = process.wait()
    reader.join()
    return code, "".join(output), peak


def table_rows(conn: psycopg.Connection, table: str, order_by: str = "id") -> list[tuple]:
    schema, name = table.split(".")
    return conn.execute(
        psycopg.sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            psycopg.sql.Identifier(schema, name), psycopg.sql.SQL(order_by)
        )
    ).fetchall()


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class MysqlCdcSetup(CdcSetup):
    """A MariaDB source database with a postgres target database and a JSONL target."""

    def __init__(
        self,
        mariadb_server,
        pg_server,
        tmp_path: Path,
        schema_sql: list[str],
        tables: list[str],
        target_sql: str = "",
        extra_config: str = "",
        targets_toml: str | None = None,
    ) -> None:
        import pymysql

        n = f"{os.getpid()}_{next(_counter)}"
        self.name = "erp"
        self.source_db, self.target_db = f"erp_{n}", f"dwh_{n}"
        self.mariadb = mariadb_server
        self._pymysql = pymysql
        with self.mysql() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.source_db}`")
            cur.execute(f"USE `{self.source_db}`")
            for statement in schema_sql:
                cur.execute(statement)
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.target_db}"')
        self.source_dsn = mariadb_server.dsn(self.source_db)
        self.target_dsn = pg_server.dsn(self.target_db)
        if target_sql:
            with psycopg.connect(self.target_dsn, autocommit=True) as conn:
                conn.execute(target_sql)
        self.tmp_path = tmp_path
        self.state_dir = tmp_path / "state"
        self.jsonl = tmp_path / "audit.jsonl"
        self.config = tmp_path / "cdc.toml"
        qualified = ", ".join(json.dumps(f"{self.source_db}.{t}") for t in tables)
        table_map = ", ".join(f'"{self.source_db}.{t}" = "public.{t}"' for t in tables)
        if targets_toml is None:
            targets_toml = f"""
[[targets]]
name = "dwh"
kind = "postgres"
dsn = "{self.target_dsn}"
table_map = {{ {table_map} }}
"""
        self.config.write_text(f"""
state_dir = "{self.state_dir}"

[[sources]]
name = "{self.name}"
kind = "mysql"
dsn = "{self.source_dsn}"
server_id = {5000 + next(_counter)}
tables = [{qualified}]

[[targets]]
name = "audit"
kind = "jsonl"
path = "{self.jsonl}"
{targets_toml}
[pipeline]
flush_interval_seconds = 0.2

[retry]
initial_seconds = 0.2
max_seconds = 2
{extra_config}
""")

    def mysql(self, database: str | None = None):
        return self._pymysql.connect(
            host=self.mariadb.host,
            port=self.mariadb.port,
            user="root",
            autocommit=True,
            charset="utf8mb4",
            database=database,
        )

    def execute(self, *statements: str) -> None:
        with self.mysql(self.source_db) as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)


def add_mysql_mirror(setup: CdcSetup, mariadb_server, mirror: str, ddl: str, table_map: dict[str, str]) -> None:
    """A MariaDB database ``mirror`` made with ``ddl``, and a mysql target ``mirror`` in the
    setup's configuration writing into it (``table_map``: source table -> table in ``mirror``)."""
    import pymysql

    root = pymysql.connect(host=mariadb_server.host, port=mariadb_server.port, user="root", autocommit=True)
    with root, root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{mirror}`")
        cur.execute(f"USE `{mirror}`")
        cur.execute(ddl)
    mapped = ", ".join(
        f"{json.dumps(source)} = {json.dumps(f'{mirror}.{table}')}" for source, table in table_map.items()
    )
    with setup.config.open("a") as config:
        config.write(f"""
[[targets]]
name = "mirror"
kind = "mysql"
dsn = "{mariadb_server.dsn(mirror)}"
table_map = {{ {mapped} }}
""")


class HttpReceiver:
    """A real HTTP server that records every request and answers with ``status``
    (and ``Location: redirect_to`` for a 3xx)."""

    def __init__(self, status: int = 200, redirect_to: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                self.send_response(status)
                if redirect_to:
                    self.send_header("Location", redirect_to)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_POST(self) -> None:
                self._record()

            def do_GET(self) -> None:
                self._record()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
