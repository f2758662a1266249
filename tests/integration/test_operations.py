"""Running unattended: systemd's notify protocol, SIGTERM mid-stream, SIGHUP, /metrics and /healthz."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.servers import free_port
from tests.helpers import PROJECT, CdcSetup, table_rows, wait_for

SCHEMA = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, updated_by text);"


def test_the_unit_file_verifies():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = (PROJECT / "conf" / "cdc.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "ProtectSystem=strict" in unit
    local = PROJECT / ".venv" / "bin" / "cdc"  # the unit's ExecStart, pointed at this installation
    path = PROJECT / ".venv" / "cdc.service"
    path.write_text(unit.replace("/opt/cdc/.venv/bin/cdc", str(local)))
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_notify_protocol_ready_status_watchdog_and_stopping(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"], extra_config='[http]\nlisten = ""\n')
    crm.setup()
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.5)
    messages: list[str] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue

    collector = threading.Thread(target=collect)
    collector.start()
    daemon = crm.start(NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000")
    try:
        wait_for(lambda: any("READY=1" in m for m in messages), timeout=60, what="READY=1\n" + crm.daemon_log())
        with crm.source() as conn:
            conn.execute("INSERT INTO customers VALUES (1, 'Ada', 'sales-app')")
        wait_for(lambda: sum("WATCHDOG=1" in m for m in messages) >= 3, timeout=30, what="watchdog pings")
        wait_for(lambda: any(m.startswith("STATUS=streaming") for m in messages), timeout=30, what="STATUS")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=15)
        time.sleep(0.5)
        done.set()
        collector.join()
        listener.close()
    assert code == 0
    assert any("STOPPING=1" in m for m in messages)
    status = next(m for m in messages if m.startswith("STATUS=streaming"))
    assert "events/s" in status and "lag" in status


def test_sigterm_mid_stream_exits_cleanly_and_loses_or_repeats_nothing(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"], extra_config='[http]\nlisten = ""\n')
    crm.setup()
    stop = threading.Event()
    written = []

    def writer() -> None:
        with crm.source() as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute(
                    "INSERT INTO customers SELECT i, 'c' || i, 'w' FROM generate_series(%s::int, %s::int) i",
                    (n * 100, n * 100 + 99),
                )
                written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(2):
            daemon = crm.start()
            wait_for(lambda: len(crm.events()) > 0, timeout=60, what="events\n" + crm.daemon_log())
            time.sleep(1)
            asked = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=15) == 0, crm.daemon_log()
            assert time.monotonic() - asked < 10
    finally:
        stop.set()
        thread.join()
    crm.drain()
    ids = [e["event_id"] for e in crm.events()]
    assert len(ids) == len(set(ids)) == 100 * len(written)
    with crm.source() as src, crm.target() as dst:
        assert table_rows(src, "public.customers") == table_rows(dst, "public.customers")


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:  # not listening yet
        return 0, str(exc)


def test_metrics_parse_and_health(pg_server, tmp_path):
    port = free_port()
    crm = CdcSetup(
        pg_server,
        tmp_path,
        SCHEMA,
        ["public.customers"],
        extra_config=f'[http]\nlisten = "127.0.0.1:{port}"\n'
        '[[tables]]\nmatch = "public.customers"\nwriter_column = "updated_by"\n',
    )
    crm.setup()
    with crm.running(timeout=15) as daemon:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(base + "/healthz")[0] == 200, timeout=60, what="healthy\n" + crm.daemon_log())
        with crm.source() as conn:
            conn.execute("INSERT INTO customers SELECT i, 'c' || i, 'import' FROM generate_series(1, 25) i")
            conn.execute("UPDATE customers SET name = 'x', updated_by = 'a' WHERE id = 1")
            conn.execute("UPDATE customers SET name = 'y', updated_by = 'b' WHERE id = 1")  # another writer
        wait_for(lambda: len(crm.events()) == 27, timeout=60, what="the events")

        def scraped() -> dict:
            status, text = _get(base + "/metrics")
            assert status == 200
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        samples = wait_for(
            lambda: (
                (s := scraped())
                and s.get(("cdc_conflicts", (("status", "auto_resolved"), ("type", "concurrent_overwrite"))))
                and s
            ),
            timeout=30,
            what="the conflict counted",
        )
        events = (("op", "insert"), ("source", "crm"), ("table", "public.customers"))
        assert samples[("cdc_events_total", events)] == 25
        assert samples[("cdc_events_total", (("op", "update"), ("source", "crm"), ("table", "public.customers")))] == 2
        assert samples[("cdc_source_up", (("source", "crm"),))] == 1
        assert ("cdc_queue_depth", ()) in samples and ("cdc_last_checkpoint_age_seconds", ()) in samples
        assert samples[("cdc_target_apply_seconds_count", (("target", "dwh"),))] >= 1
        assert ("cdc_source_lag_seconds", (("source", "crm"),)) in samples
        status, body = _get(base + "/healthz")
        assert (status, body) == (200, "ok\n")


def test_a_non_loopback_bind_refuses_requests_without_the_token(pg_server, tmp_path):
    port = free_port("0.0.0.0")
    host = socket.gethostbyname(socket.gethostname())
    crm = CdcSetup(
        pg_server,
        tmp_path,
        SCHEMA,
        ["public.customers"],
        extra_config=f'[http]\nlisten = "0.0.0.0:{port}"\ntoken = "s3cret-token"\n',
    )
    crm.setup()
    with crm.running(timeout=15) as daemon:
        url = f"http://{host}:{port}"
        wait_for(lambda: _get(url + "/healthz", "s3cret-token")[0] == 200, timeout=60, what="up\n" + crm.daemon_log())
        for path in ("/metrics", "/healthz", "/", "/conflicts/x"):
            assert _get(url + path)[0] == 401
            assert _get(url + path, "wrong")[0] == 401
        assert _get(url + "/metrics", "s3cret-token")[0] == 200
        assert _get(url + "/?token=s3cret-token")[0] == 200
    assert "s3cret-token" not in crm.daemon_log()


def test_sighup_reloads_log_settings_without_dropping_the_stream(pg_server, tmp_path):
    crm = CdcSetup(
        pg_server, tmp_path, SCHEMA, ["public.customers"], extra_config='[http]\nlisten = ""\n[log]\nformat = "json"\n'
    )
    crm.setup()
    with crm.running(timeout=15) as daemon:
        with crm.source() as conn:
            conn.execute("INSERT INTO customers VALUES (1, 'a', 'w')")
        wait_for(lambda: len(crm.events()) == 1, timeout=60, what="first event\n" + crm.daemon_log())
        crm.config.write_text(crm.config.read_text().replace('format = "json"', 'format = "text"'))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "alert and log settings applied" in crm.daemon_log(), timeout=30, what="the reload")
        with crm.source() as conn:
            conn.execute("INSERT INTO customers VALUES (2, 'b', 'w')")
        wait_for(lambda: len(crm.events()) == 2, timeout=60, what="the stream going on")
    lines = crm.daemon_log().strip().splitlines()
    assert json.loads(lines[0])  # JSON before the reload, text after it
    assert not lines[-1].startswith("{")


def test_monitor_alerts_on_retained_wal_and_sets_the_gauges(pg_server, tmp_path):
    from cdc.config import load_settings
    from cdc.metrics import Metrics
    from cdc.monitor import Monitor

    crm = CdcSetup(
        pg_server, tmp_path, SCHEMA, ["public.customers"], extra_config="[alerts]\nretained_wal_bytes = 1000\n"
    )
    crm.setup()
    with crm.source() as conn:  # WAL the slot keeps, as nobody reads it
        conn.execute("INSERT INTO customers SELECT i, repeat('x', 100), 'w' FROM generate_series(1, 2000) i")
    settings = load_settings(crm.config, environ={})
    metrics, alerts = Metrics(), []
    monitor = Monitor(settings, metrics, alerts.append)
    monitor.check(settings.sources[0])
    monitor.check(settings.sources[0])  # once an hour at most
    assert [(a["type"], a["severity"]) for a in alerts] == [("retained_wal", "warning")]
    assert f"slot {crm.slot} retains" in alerts[0]["explanation"]
    assert metrics.registry.get_sample_value("cdc_slot_retained_wal_bytes", {"source": "crm"}) > 1000
    assert metrics.registry.get_sample_value("cdc_source_lag_bytes", {"source": "crm"}) > 0


def test_check_names_a_non_loopback_listen_without_a_token(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"], extra_config='[http]\nlisten = "0.0.0.0:9999"\n')
    crm.setup()
    checked = crm.cdc("check", "--json")
    assert checked.returncode == 1
    [problem] = [p for p in json.loads(checked.stdout)["problems"] if p["source"] == "http"]
    assert "set [http] token" in problem["fix"]


def test_healthz_is_unhealthy_while_a_source_is_disconnected(pg_server, tmp_path):
    import psycopg

    port = free_port()
    crm = CdcSetup(
        pg_server, tmp_path, SCHEMA, ["public.customers"], extra_config=f'[http]\nlisten = "127.0.0.1:{port}"\n'
    )
    crm.setup()
    with crm.running(timeout=15) as daemon:
        health = f"http://127.0.0.1:{port}/healthz"
        wait_for(lambda: _get(health)[0] == 200, timeout=60, what="healthy\n" + crm.daemon_log())
        with psycopg.connect(crm.pg_admin_dsn, autocommit=True) as admin:  # the source goes away for a while
            admin.execute(f'ALTER DATABASE "{crm.source_db}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (crm.source_db,))
            try:
                status, body = wait_for(
                    lambda: (r := _get(health))[0] == 503 and r, timeout=30, what="unhealthy\n" + crm.daemon_log()
                )
                assert "source crm is disconnected" in body
            finally:
                admin.execute(f'ALTER DATABASE "{crm.source_db}" ALLOW_CONNECTIONS true')
        wait_for(lambda: _get(health)[0] == 200, timeout=60, what="healthy again\n" + crm.daemon_log())
