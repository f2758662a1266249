"""Bad input gets one clear line that says what to fix, and the right exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devtools.servers import free_port
from tests.helpers import PROJECT, CdcSetup

SCHEMA = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text);"


def _cdc(config, *args, env=None, timeout=120):
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cdc", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=PROJECT,
    )


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            'state_dir = "/tmp/x"\n[[sources]]\nname = "crm"\nkind = "oracle"\ndsn = "postgresql://a@b/c"\n'
            'tables = ["public.t"]\n',
            "sources[crm].kind: Input should be 'postgres' or 'mysql'",
        ),
        (
            'state_dir = "/tmp/x"\n[[sources]]\nname = "crm"\nkind = "postgres"\ndsn = "postgresql://a@b/c"\n'
            'tables = ["customers"]\n',
            "sources[crm].tables: Value error, 'customers' must be written as 'schema.table'".replace(
                "Value error, ", ""
            ),
        ),
        (
            'state_dir = "/tmp/x"\n[[sources]]\nname = "crm"\nkind = "postgres"\ntables = ["public.t"]\n',
            "sources[crm].dsn: is required",
        ),
        ('state_dir = "/tmp/x"\n[[sources]\nname = "crm"\n', "not valid TOML"),
        (
            'state_dir = "/tmp/x"\nsources = []\n[conflicts]\nwindow_seconds = -1\n',
            "sources: List should have at least 1 item",
        ),
        (
            'state_dir = "/tmp/x"\n[[sources]]\nname = "crm"\nkind = "postgres"\ndsn = "postgresql://a@b/c"\n'
            'tables = ["public.t"]\nbatch = 3\n',
            "sources[crm].batch: is not a known key",
        ),
    ],
)
def test_bad_config_is_one_line_with_exit_code_2(tmp_path, body, expected):
    config = tmp_path / "cdc.toml"
    config.write_text(body)
    result = _cdc(config, "check")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert expected in lines[0], lines[0]
    assert lines[0].startswith(f"cdc: config error: {config}: ")


def test_environment_overrides_and_missing_file(tmp_path):
    result = _cdc(tmp_path / "missing.toml", "status")
    assert result.returncode == 2 and "configuration file not found" in result.stderr
    config = tmp_path / "cdc.toml"
    config.write_text(
        'state_dir = "/tmp/x"\n[[sources]]\nname = "crm"\nkind = "postgres"\n'
        'dsn = "postgresql://a@b/c"\ntables = ["public.t"]\n'
    )
    result = _cdc(config, "check", env={"CDC_CONFLICTS__WINDOW_SECONDS": "soon"})
    assert result.returncode == 2
    assert "conflicts.window_seconds: Input should be a valid number" in result.stderr


def test_unreachable_database_retries_with_backoff_then_gives_up(tmp_path):
    port = free_port()
    config = tmp_path / "cdc.toml"
    config.write_text(f"""
state_dir = "{tmp_path / "state"}"
[[sources]]
name = "crm"
kind = "postgres"
dsn = "postgresql://cdc:hunter2@127.0.0.1:{port}/crm"
tables = ["public.customers"]
[retry]
attempts = 3
initial_seconds = 0.2
max_seconds = 1
[log]
format = "json"
""")
    result = _cdc(config, "run")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    retries = [line for line in lines if "retrying in" in line["msg"]]
    assert [line["attempt"] for line in retries] == [1, 2]
    assert all(f"source crm (cdc@127.0.0.1:{port}/crm): cannot connect" in line["msg"] for line in retries)
    assert "giving up" in lines[-1]["msg"] and lines[-1]["level"] == "error"

    result = _cdc(config, "check")
    assert result.returncode == 4
    assert result.stderr.strip().count("\n") == 0 and "gave up after 3 attempts" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def _error_message(log_output: str) -> str:
    """The daemon's last log line, which must be its one error."""
    last = json.loads(log_output.strip().splitlines()[-1])
    assert last["level"] == "error"
    return last["msg"]


def test_missing_slot(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    result = crm.cdc("run", "--drain")
    assert result.returncode == 3
    assert f"replication slot '{crm.slot}' does not exist: run 'cdc setup'" in _error_message(result.stdout)
    checked = crm.cdc("check")
    assert checked.returncode == 1
    assert f"SELECT pg_create_logical_replication_slot('{crm.slot}', 'pgoutput');" in checked.stdout


def test_table_without_primary_key(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, "CREATE TABLE public.notes (body text);", ["public.notes"])
    checked = crm.cdc("check")
    assert checked.returncode == 1
    assert "table public.notes has no primary key" in checked.stdout
    assert 'fix: ALTER TABLE "public"."notes" ADD PRIMARY KEY (<key columns>);' in checked.stdout
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO notes VALUES ('x')")
    result = crm.cdc("run", "--drain")
    assert result.returncode == 3
    assert "table public.notes has no primary key: add one" in _error_message(result.stdout)


def test_table_without_replica_identity_full(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    checked = crm.cdc("check", "--json")
    assert checked.returncode == 1
    fixes = {problem["fix"] for problem in json.loads(checked.stdout)["problems"]}
    assert 'ALTER TABLE "public"."customers" REPLICA IDENTITY FULL;' in fixes
    with crm.source() as conn:  # a DBA who created publication and slot but skipped the replica identity
        conn.execute(f'CREATE PUBLICATION "{crm.slot}" FOR TABLE customers')
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (crm.slot,))
        conn.execute("INSERT INTO customers VALUES (1, 'a')")
    result = crm.cdc("run", "--drain")
    assert result.returncode == 3
    assert (
        'table public.customers is not REPLICA IDENTITY FULL: run ALTER TABLE "public"."customers" '
        "REPLICA IDENTITY FULL;"
    ) in _error_message(result.stdout)
    assert crm.events() == []


def test_check_names_the_privileges_cdc_needs_to_write_into_a_source(pg_server, tmp_path):
    crm = CdcSetup(
        pg_server,
        tmp_path,
        SCHEMA,
        ["public.customers"],
        extra_config='[[tables]]\nmatch = "public.customers"\nrepair = "write"\n',
    )
    role = f"cdc_writer_{crm.slot}"
    with crm.source() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN REPLICATION')
        conn.execute(f'GRANT SELECT ON customers TO "{role}"')
        conn.execute(f'REVOKE CREATE ON DATABASE "{crm.source_db}" FROM PUBLIC')
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC")
    try:
        env = {"CDC_SOURCES__CRM__DSN": crm.source_dsn.replace("postgres@", f"{role}@")}
        checked = crm.cdc("check", "--json", **env)
        fixes = [p["fix"] for p in json.loads(checked.stdout)["problems"] if p["source"] == "crm"]
        assert f'GRANT INSERT, UPDATE, DELETE ON "public"."customers" TO "{role}";' in fixes
        assert f'GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO "{role}";' in fixes
        assert f'CREATE SCHEMA IF NOT EXISTS cdc AUTHORIZATION "{role}";' in fixes
        with crm.source() as conn:
            for fix in fixes:
                if not fix.startswith(("CREATE PUBLICATION", "SELECT pg_create")):
                    conn.execute(fix)
        checked = crm.cdc("check", "--json", **env)
        problems = [p["problem"] for p in json.loads(checked.stdout)["problems"] if p["source"] == "crm"]
        assert not [p for p in problems if "write" in p or "emit" in p or "schema cdc" in p], problems
    finally:
        with crm.source() as conn:
            conn.execute("GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO PUBLIC")


def test_setup_is_idempotent_and_prints_sql(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    printed = crm.cdc("setup", "--print-sql")
    assert printed.returncode == 0
    assert f'CREATE PUBLICATION "{crm.slot}" FOR TABLE "public"."customers";' in printed.stdout
    crm.setup()
    assert crm.cdc("check").stdout.strip() == "all checks passed"
    again = crm.cdc("setup")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_missing_target_table_stops_the_daemon_with_a_clear_message(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"], target_sql="SELECT 1")
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'a')")
    result = crm.cdc("run", "--drain")
    assert result.returncode == 3
    assert 'target dwh: relation "public.customers" does not exist' in _error_message(result.stdout)


def test_drain_stopped_early_does_not_claim_success(pg_server, tmp_path):
    import signal as signals
    import time

    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    crm.setup()
    with crm.source() as conn:
        for i in range(60):
            conn.execute(
                "INSERT INTO customers SELECT i, 'n' FROM generate_series(%s::int, %s::int) i",
                (i * 1000 + 1, i * 1000 + 1000),
            )
    drain = crm.start("--drain")
    for _ in range(300):
        if "streaming slot" in crm.daemon_log():
            break
        time.sleep(0.1)
    drain.send_signal(signals.SIGTERM)
    assert drain.wait(timeout=30) == 5
    assert "stopped before the sources' end position was reached" in crm.daemon_log()
    assert len(crm.events()) < 60_000
    crm.drain()
    assert len(crm.events()) == 60_000
