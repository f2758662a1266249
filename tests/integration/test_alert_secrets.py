"""Secrets in connection strings and alert URLs never reach cdc's output, against real servers
and a real ``cdc`` process.

A password holding ``:1234/`` and ``@`` written unencoded in a DSN is refused with one line
that says to percent-encode it (and does not repeat it); percent-encoded, the same password
logs in. A webhook that redirects gets no second request anywhere, its user-info arrives as
HTTP Basic auth, and the daemon's log names only its scheme://host:port.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pymysql
import pytest

from tests.helpers import PROJECT, CdcSetup, HttpReceiver, wait_for
from tests.integration.test_conflict_scenarios import CONFIG, SCHEMA

PASSWORD = "pa:1234/s@s"
PASSWORDS = [PASSWORD, "1234/s@s"]  # the second one even reads as a valid host:port when misparsed


def pieces(password: str) -> list[str]:
    """The password and what a misparsed DSN shows of it (as host, port or database name)."""
    head, _, tail = password.partition("/")
    return [password, quote(password, safe=""), password.rpartition("@")[0], tail, *([head] if len(head) > 4 else [])]


_counter = itertools.count(1)


def cdc(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    return subprocess.run(
        [sys.executable, "-m", "cdc", *args, "--config", str(config)],
        env={**env, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT,
    )


def write_config(tmp_path: Path, kind: str, dsn: str, table: str) -> Path:
    config = tmp_path / "cdc.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[[sources]]\nname = "crm"\nkind = "{kind}"\ndsn = {json.dumps(dsn)}\ntables = ["{table}"]\n'
        + ("server_id = 4711\n" if kind == "mysql" else "")
        + f'[[targets]]\nname = "audit"\nkind = "jsonl"\npath = "{tmp_path / "audit.jsonl"}"\n'
        "[retry]\ninitial_seconds = 0.2\nmax_seconds = 1\nattempts = 2\n"
    )
    return config


def assert_refused_without_the_password(result: subprocess.CompletedProcess[str], password: str) -> None:
    output = result.stdout + result.stderr
    assert not [piece for piece in pieces(password) if piece in output], output
    assert result.returncode in (2, 3), output
    assert "percent-encode" in output and "%2F" in output and "%40" in output, output
    assert "cannot connect" not in output  # refused before any connection, so no host was taken from it


@pytest.fixture(params=PASSWORDS)
def mariadb_user(mariadb_server, request) -> Iterator[tuple[str, str, str]]:
    """A MariaDB user whose password holds ``1234/`` and ``@``, and a database it reads."""
    password = request.param
    n = f"{os.getpid()}_{next(_counter)}"
    user, database = f"cdc_secret_{n}", f"erp_secret_{n}"
    root = pymysql.connect(host=mariadb_server.host, port=mariadb_server.port, user="root", autocommit=True)
    with root, root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute(f"CREATE TABLE `{database}`.customers (id int PRIMARY KEY, name varchar(50))")
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'")
    yield user, password, database
    root = pymysql.connect(host=mariadb_server.host, port=mariadb_server.port, user="root", autocommit=True)
    with root, root.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'%'")
        cur.execute(f"DROP DATABASE `{database}`")


def test_mariadb_password_with_colon_port_slash_and_at(mariadb_server, mariadb_user, tmp_path) -> None:
    user, password, database = mariadb_user
    where = f"{mariadb_server.host}:{mariadb_server.port}/{database}"
    table = f"{database}.customers"

    raw = write_config(tmp_path, "mysql", f"mysql://{user}:{password}@{where}", table)
    assert_refused_without_the_password(cdc(raw, "check"), password)
    assert_refused_without_the_password(cdc(raw, "run", "--drain"), password)

    wrong = write_config(tmp_path, "mysql", f"mysql://{user}:{quote('pa:1234/s@x', safe='')}@{where}", table)
    refused = cdc(wrong, "check")
    assert "Access denied" in refused.stdout + refused.stderr  # the server does check the password

    encoded = write_config(tmp_path, "mysql", f"mysql://{user}:{quote(password, safe='')}@{where}", table)
    result = cdc(encoded, "check")
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output  # connected; problems found are fine here
    assert "Access denied" not in output and "cannot connect" not in output, output
    assert not [piece for piece in pieces(password) if piece in output], output


@pytest.mark.parametrize("password", PASSWORDS)
def test_postgres_password_with_colon_port_slash_and_at(pg_server, tmp_path, password) -> None:
    n = f"{os.getpid()}_{next(_counter)}"
    role, database = f"cdc_secret_{n}", f"crm_secret_{n}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN REPLICATION')
        conn.execute(f'CREATE DATABASE "{database}" OWNER "{role}"')
    where = f"{pg_server.host}:{pg_server.port}/{database}"
    try:
        raw = write_config(tmp_path, "postgres", f"postgresql://{role}:{password}@{where}", "public.customers")
        assert_refused_without_the_password(cdc(raw, "check"), password)
        assert_refused_without_the_password(cdc(raw, "run", "--drain"), password)

        dsn = f"postgresql://{role}:{quote(password, safe='')}@{where}"
        result = cdc(write_config(tmp_path, "postgres", dsn, "public.customers"), "check")
        output = result.stdout + result.stderr
        assert result.returncode in (0, 1), output
        assert "cannot connect" not in output, output
        assert not [piece for piece in pieces(password) if piece in output], output
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
            conn.execute(f'DROP ROLE "{role}"')


def test_daemon_webhook_redirect_is_not_followed_and_logs_only_the_origin(pg_server, tmp_path) -> None:
    elsewhere = HttpReceiver(status=204)
    hook = HttpReceiver(status=302, redirect_to=f"{elsewhere.origin}/collect")
    path = "/services/T0AAA/B0BBB/PathSecret0123456789"
    url = f"http://hook-user:{quote(PASSWORD, safe='')}@{hook.origin.removeprefix('http://')}{path}"
    crm = CdcSetup(
        pg_server,
        tmp_path,
        SCHEMA,
        ["public.customers"],
        extra_config=CONFIG + f"[alerts.webhook]\nurl = {json.dumps(url)}\n",
    )
    crm.setup()
    with crm.source() as conn:
        conn.execute(
            "INSERT INTO customers (id, name, phone, email, updated_by) VALUES (7, 'Ada', '1', 'a@x.io', 'import')"
        )
    daemon = crm.start()
    try:
        wait_for(lambda: "streaming slot" in crm.daemon_log(), what="the daemon to stream")
        sales, erp = crm.source(), crm.source()
        stale = erp.execute("SELECT name, phone FROM customers WHERE id = 7").fetchone()
        sales.execute("UPDATE customers SET phone = '2', lock_version = 2, updated_by = 'sales-app'")
        erp.execute(
            "UPDATE customers SET name = %s, phone = %s, email = 'b@x.io', lock_version = 3, updated_by = 'erp-sync'",
            stale,
        )
        sales.close(), erp.close()
        wait_for(lambda: "not delivered" in crm.daemon_log(), timeout=30, what="the webhook failure to be logged")
        time.sleep(0.5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        hook.close(), elsewhere.close()
    log = crm.daemon_log()
    assert elsewhere.requests == []
    [request] = hook.requests
    assert request["path"] == path
    assert request["headers"]["Host"] == hook.origin.removeprefix("http://")
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(f"hook-user:{PASSWORD}".encode()).decode()
    [failure] = [line for line in log.splitlines() if "not delivered" in line]
    assert f"POST {hook.origin}: HTTP 302 " in failure and "redirects are not followed" in failure
    for secret in ("PathSecret", "T0AAA", "hook-user", *pieces(PASSWORD), elsewhere.origin):
        assert secret not in log
