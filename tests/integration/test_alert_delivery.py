"""A conflict caught by the running daemon reaches a webhook within seconds, with its alert text."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from devtools.servers import free_port
from tests.helpers import CdcSetup, wait_for
from tests.integration.test_conflict_scenarios import CONFIG, SCHEMA


def test_webhook_alert_for_a_lost_update(pg_server, tmp_path):
    received: list[tuple[float, dict, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((time.time(), body, self.headers.get("Authorization", "")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    crm = CdcSetup(
        pg_server,
        tmp_path,
        SCHEMA,
        ["public.customers"],
        extra_config=CONFIG
        + f"""
[alerts.webhook]
url = "http://127.0.0.1:{port}/hooks/cdc"
token = "s3cret-token"
""",
    )
    crm.setup()
    with crm.source() as conn:
        conn.execute(
            "INSERT INTO customers (id, name, phone, email, updated_by)"
            " VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import')"
        )
    daemon = crm.start()
    try:
        wait_for(lambda: "streaming slot" in crm.daemon_log(), what="the daemon to stream")
        sales, erp = crm.source(), crm.source()
        stale = erp.execute("SELECT name, phone FROM customers WHERE id = 42").fetchone()
        sales.execute("UPDATE customers SET phone = '555-0199', lock_version = 2, updated_by = 'sales-app'")
        erp.execute(
            "UPDATE customers SET name = %s, phone = %s, email = 'b@x.io', lock_version = 3, updated_by = 'erp-sync'",
            stale,
        )
        committed = time.time()
        sales.close(), erp.close()
        wait_for(lambda: received, timeout=30, what="the webhook alert")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        server.shutdown()
    arrived, body, authorization = received[0]
    assert arrived - committed < 5, f"alert took {arrived - committed:.1f}s"
    assert authorization == "Bearer s3cret-token"
    assert body["type"] == "conflict" and body["conflict"]["type"] == "lost_update"
    assert body["text"].startswith('ERROR lost_update public.customers {"id":42}: phone set by sales-app at ')
    assert "was reverted by erp-sync" in body["text"]
    assert "s3cret-token" not in crm.daemon_log()
