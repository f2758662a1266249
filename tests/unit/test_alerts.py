"""Conflict alerts against real local servers: a webhook receiver (http.server) and a tiny SMTP server."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cdc.alerts import Alerter, alert_text
from cdc.config import AlertSettings

TOKEN = "tok-Sup3rSecret-webhook"
PASSWORD = "pw-Sup3rSecret-smtp"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def conflict(n: int = 42, type: str = "lost_update", severity: str = "error") -> dict[str, Any]:
    return {
        "id": f"{type}:crm:0/{n}:0",
        "type": type,
        "severity": severity,
        "source": "crm",
        "table": "public.customers",
        "key": json.dumps({"id": n}, separators=(",", ":")),
        "fields": ["phone"],
        "events": [
            {
                "event_id": f"crm:0/{n}:1",
                "commit_ts": "2026-11-22T10:02:11.000000+00:00",
                "writer": "sales-app",
                "source": "crm",
                "op": "update",
                "before": {"phone": "555-0100"},
                "after": {"phone": "555-0199"},
            },
            {
                "event_id": f"crm:0/{n}:2",
                "commit_ts": "2026-11-22T10:02:14.000000+00:00",
                "writer": "erp-sync",
                "source": "crm",
                "op": "update",
                "before": {"phone": "555-0199"},
                "after": {"phone": "555-0100"},
            },
        ],
        "rule": "stale_full_row_save",
        "evidence": {"reverted": ["phone"]},
        "explanation": "phone set by sales-app at 10:02:11 was reverted by erp-sync at 10:02:14 "
        "from a copy read before it",
        "status": "pending",
        "resolution": None,
        "commit_ts": "2026-11-22T10:02:14.000000+00:00",
        "detected_at": 1795000000.0,
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- a webhook receiver ------------------------------------------------------------------


class Webhook:
    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])  # answered in order, then 200
        self.requests: list[dict[str, Any]] = []  # every request, failed ones included
        self.received: list[dict[str, Any]] = []  # bodies answered 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "status": status})
                if status == 200:
                    receiver.received.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cdc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- a minimal SMTP server -------------------------------------------------------------------


class SMTPServer:
    def __init__(self, auth_ok: bool = True) -> None:
        self.messages: list[dict[str, Any]] = []
        self.auth: list[str] = []
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, text: str) -> None:
                self.wfile.write(text.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 127.0.0.1 test SMTP")
                sender, recipients = None, []
                while line := self.rfile.readline():
                    command = line.decode().rstrip("\r\n")
                    verb = command.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.reply("250-127.0.0.1\r\n250-AUTH PLAIN\r\n250 8BITMIME")
                    elif verb == "HELO":
                        self.reply("250 127.0.0.1")
                    elif verb == "AUTH":
                        receiver.auth.append(base64.b64decode(command.split()[2]).decode())
                        self.reply("235 2.7.0 ok" if receiver.auth_ok else "535 5.7.8 authentication failed")
                    elif command.upper().startswith("MAIL FROM:"):
                        sender, recipients = command[10:].split()[0].strip("<>"), []
                        self.reply("250 ok")
                    elif command.upper().startswith("RCPT TO:"):
                        recipients.append(command[8:].strip().strip("<>"))
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 end with .")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk[1:] if chunk.startswith(b".") else chunk
                        receiver.messages.append(
                            {
                                "from": sender,
                                "to": recipients,
                                "message": email.message_from_bytes(data, policy=email.policy.default),
                            }
                        )
                        self.reply("250 queued")
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 ok")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        self.auth_ok = auth_ok
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    yield server
    server.close()


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    yield server
    server.close()


def settings(webhook: Webhook | None = None, smtp: SMTPServer | None = None, **extra: Any) -> AlertSettings:
    doc: dict[str, Any] = dict(extra)
    if webhook:
        doc["webhook"] = {"url": webhook.url, "token": TOKEN, "timeout_seconds": 2}
    if smtp:
        doc["email"] = {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "username": "cdc",
            "password": PASSWORD,
            "from_addr": "cdc@example.test",
            "to": ["ops@example.test", "dba@example.test"],
        }
    return AlertSettings.model_validate(doc)


def test_alert_text_says_what_was_lost_and_who_overwrote_it() -> None:
    assert alert_text(conflict()) == (
        'ERROR lost_update public.customers {"id":42}: phone set by sales-app at 10:02:11 was reverted by '
        "erp-sync at 10:02:14 from a copy read before it"
    )


def test_webhook_delivers_json_with_bearer_token(webhook: Webhook) -> None:
    alerter = Alerter(settings(webhook))
    try:
        alerter.submit(conflict())
        wait_for(lambda: webhook.received, timeout=5.0)  # delivered within 5 s
    finally:
        alerter.close()
    [body] = webhook.received
    assert body["type"] == "conflict"
    assert body["conflict"] == conflict()
    assert body["text"] == alert_text(conflict())
    [request] = webhook.requests
    assert request["path"] == "/hooks/cdc"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"


def test_webhook_retries_server_errors_then_delivers_once(caplog: pytest.LogCaptureFixture) -> None:
    server = Webhook(statuses=[500, 500])
    caplog.set_level(logging.DEBUG)
    alerter = Alerter(settings(server))
    try:
        alerter.submit(conflict())
        wait_for(lambda: server.received, timeout=15.0)
        time.sleep(0.3)
    finally:
        alerter.close()
        server.close()
    assert [r["status"] for r in server.requests] == [500, 500, 200]
    assert len(server.received) == 1
    failures = [r for r in caplog.records if r.name == "cdc.alerts" and "HTTP 500" in r.getMessage()]
    assert len(failures) == 2  # one line per failed attempt
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_webhook_gives_up_without_leaking_the_token(caplog: pytest.LogCaptureFixture) -> None:
    server = Webhook(statuses=[503] * 1000)
    caplog.set_level(logging.DEBUG)
    alerter = Alerter(settings(server), retry_seconds=1.0)
    try:
        alerter.submit(conflict())
        wait_for(lambda: any("giving up" in r.getMessage() for r in caplog.records), timeout=15.0)
    finally:
        alerter.close()
        server.close()
    assert len(server.requests) >= 2
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in caplog.text
    assert all(TOKEN not in json.dumps(vars(r), default=str) for r in caplog.records)


def test_email_delivers_subject_body_and_recipients(smtp: SMTPServer) -> None:
    alerter = Alerter(settings(smtp=smtp))
    try:
        alerter.submit(conflict())
        wait_for(lambda: smtp.messages, timeout=5.0)
    finally:
        alerter.close()
    [sent] = smtp.messages
    assert sent["from"] == "cdc@example.test"
    assert sent["to"] == ["ops@example.test", "dba@example.test"]
    message: EmailMessage = sent["message"]
    assert message["Subject"] == '[cdc] lost_update on public.customers {"id":42}'
    body = message.get_content()
    assert alert_text(conflict()) in body
    assert "Fields: phone" in body
    assert "by sales-app" in body and "by erp-sync" in body and '"555-0100" -> "555-0199"' in body
    assert smtp.auth == [f"\0cdc\0{PASSWORD}"]


def test_email_login_failure_never_logs_the_password(caplog: pytest.LogCaptureFixture) -> None:
    server = SMTPServer(auth_ok=False)
    caplog.set_level(logging.DEBUG)
    alerter = Alerter(settings(smtp=server))
    try:
        alerter.submit(conflict())
        wait_for(lambda: any("giving up" in r.getMessage() for r in caplog.records), timeout=10.0)
    finally:
        alerter.close()
        server.close()
    assert server.messages == []
    assert len(server.auth) == 1  # 535 is permanent: not retried
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in json.dumps(vars(r), default=str) for r in caplog.records)


def test_below_min_severity_is_ignored(webhook: Webhook) -> None:
    alerter = Alerter(settings(webhook, min_severity="error"))
    try:
        alerter.submit(conflict(1, severity="info"))
        alerter.submit(conflict(2, severity="warning"))
        alerter.submit(conflict(3, severity="error"))
        alerter.submit(conflict(4, severity="critical"))
        wait_for(lambda: len(webhook.received) >= 2, timeout=5.0)
    finally:
        alerter.close()
    assert sorted(b["conflict"]["key"] for b in webhook.received) == ['{"id":3}', '{"id":4}']


def test_default_min_severity_is_warning(webhook: Webhook) -> None:
    alerter = Alerter(settings(webhook))
    alerter.submit(conflict(1, severity="info"))
    alerter.submit(conflict(2, severity="warning"))
    alerter.close()
    assert [b["conflict"]["key"] for b in webhook.received] == ['{"id":2}']


def test_burst_is_rate_limited_and_summarised(
    webhook: Webhook, smtp: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    alerter = Alerter(settings(webhook, smtp, rate_limit_per_minute=5), clock=clock)
    records = [conflict(n, type="lost_update" if n % 4 == 0 else "concurrent_overwrite") for n in range(50)]
    try:
        for record in records:
            alerter.submit(record)
        wait_for(lambda: len(webhook.received) >= 5 and len(smtp.messages) >= 5 and alerter.idle(), timeout=10.0)
        time.sleep(1.0)  # nothing more within the minute
        assert len(webhook.received) == 5 and len(smtp.messages) == 5
        assert any("burst" in r.getMessage() for r in caplog.records)
        clock.now += 61
        wait_for(lambda: len(webhook.received) >= 6 and len(smtp.messages) >= 6, timeout=5.0)
        alerter.submit(conflict(99))  # the minute is over: the limit starts again
        wait_for(lambda: len(webhook.received) >= 7 and len(smtp.messages) >= 7, timeout=5.0)
    finally:
        alerter.close()
    counts = Counter(r["type"] for r in records[5:])
    expected = (
        f"45 more conflicts in the last minute: {counts['concurrent_overwrite']} concurrent_overwrite, "
        f"{counts['lost_update']} lost_update (see cdc conflicts list)"
    )
    assert [b["type"] for b in webhook.received] == ["conflict"] * 5 + ["summary", "conflict"]
    assert [b["conflict"]["id"] for b in webhook.received[:5]] == [r["id"] for r in records[:5]]
    assert webhook.received[5]["text"] == expected
    assert webhook.received[5]["counts"] == dict(counts)
    summary: EmailMessage = smtp.messages[5]["message"]
    assert summary["Subject"] == "[cdc] 45 more conflicts in the last minute"
    assert expected in summary.get_content()
    assert webhook.received[6]["conflict"]["key"] == '{"id":99}'


def test_close_sends_the_pending_summary_and_is_idempotent(webhook: Webhook) -> None:
    alerter = Alerter(settings(webhook, rate_limit_per_minute=2), clock=FakeClock())
    for n in range(5):
        alerter.submit(conflict(n))
    alerter.close()
    alerter.close()
    assert [b["type"] for b in webhook.received] == ["conflict", "conflict", "summary"]
    assert webhook.received[2]["text"] == "3 more conflicts in the last minute: 3 lost_update (see cdc conflicts list)"
    alerter.submit(conflict(9))  # after close: ignored, no error


def test_close_gives_up_within_its_timeout_when_the_channel_is_down() -> None:
    server = Webhook(statuses=[500] * 1000)
    alerter = Alerter(settings(server))
    alerter.submit(conflict(1))
    alerter.submit(conflict(2))
    started = time.monotonic()
    alerter.close(timeout=1.0)
    assert time.monotonic() - started < 4.0
    server.close()
    assert server.received == []
