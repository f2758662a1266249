"""The HTTP server's defences, asked by real clients over real sockets.

The first tests run the server in this process over an empty state store (no database
needed); the last runs the daemon against PostgreSQL with a pending conflict, and tries to
resolve it from another site before resolving it from the page itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import cdc.web.server
from cdc.config import HttpSettings
from cdc.metrics import Metrics
from cdc.state.store import StateStore
from cdc.web.server import WebServer
from devtools.servers import free_port
from tests.helpers import CdcSetup, wait_for

TOKEN = "tok-Sup3rSecret-http"


@contextlib.contextmanager
def web_server(tmp_path: Path, token: str | None = None) -> Iterator[WebServer]:
    StateStore(tmp_path / "state").close()
    settings = HttpSettings(listen=f"127.0.0.1:{free_port()}", token=token)
    server = WebServer(settings, tmp_path / "state", Metrics())
    server.start()
    try:
        yield server
    finally:
        server.close()


def get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def exchange(port: int, request: bytes, timeout: float = 5) -> bytes:
    """What the server answers to ``request`` sent as is, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_configured_token_is_required_on_loopback_too(tmp_path):
    with web_server(tmp_path, TOKEN) as server:
        for path in ("/metrics", "/healthz", "/", "/conflicts/x"):
            assert get(server.port, path).status == 401
            assert get(server.port, path, {"Authorization": "Bearer wrong"}).status == 401
        assert get(server.port, "/healthz", {"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert get(server.port, "/metrics", {"Authorization": f"Bearer {TOKEN}"}).status == 200
        first = get(server.port, f"/?token={TOKEN}")
        assert first.status == 200
        cookies = [value.split(";")[0] for name, value in first.getheaders() if name == "Set-Cookie"]
        token_cookie = next(c for c in cookies if c.startswith("cdc_token="))
        assert TOKEN not in token_cookie
        assert get(server.port, "/", {"Cookie": token_cookie}).status == 200  # the browser's pages after
        assert get(server.port, "/", {"Cookie": "cdc_token=forged"}).status == 401


def test_a_host_that_does_not_name_this_server_is_refused(tmp_path):
    with web_server(tmp_path) as server:
        refused = get(server.port, "/", {"Host": f"rebound.example:{server.port}"})
        assert refused.status == 403
        assert get(server.port, "/", {"Host": f"localhost:{server.port}"}).status == 200
        assert get(server.port, "/healthz", {"Host": f"127.0.0.1:{server.port}"}).status == 200


@pytest.mark.parametrize(
    ("declared", "status"),
    [
        ("Content-Length: abc", 400),
        ("Content-Length: -1", 400),
        ("Content-Length: 1e3", 400),
        ("Content-Length: 99999999999999999999999", 413),
        ("Content-Length: 999999999", 413),
        ("Content-Length: 5\r\nContent-Length: 6", 400),
        ("Transfer-Encoding: chunked", 411),
        ("X-Nothing: declared", 411),
    ],
)
def test_a_bad_content_length_is_answered_without_waiting_for_a_body(tmp_path, declared, status):
    with web_server(tmp_path) as server:
        asked = time.monotonic()
        answer = exchange(
            server.port, f"POST /conflicts/x/resolve HTTP/1.1\r\nHost: localhost\r\n{declared}\r\n\r\n".encode()
        )
        assert status_of(answer) == status, answer
        assert time.monotonic() - asked < 3  # answered at once, not after a read of the declared body


def test_an_oversized_body_is_refused(tmp_path):
    with web_server(tmp_path) as server:
        body = b"row=" + b"x" * 2**20
        head = f"POST /conflicts/x/resolve HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
        answer = exchange(server.port, head.encode() + body)
        assert status_of(answer) == 413
        assert b"at most" in answer
        fields = "&".join(f"f{n}=1" for n in range(500)).encode()
        head = (
            f"POST /conflicts/x/resolve HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
            f"Origin: http://localhost:{server.port}\r\nContent-Length: {len(fields)}\r\n\r\n"
        )
        assert status_of(exchange(server.port, head.encode() + fields)) == 400


def test_a_silent_client_is_cut_off_while_others_are_served(tmp_path, monkeypatch):
    monkeypatch.setattr(cdc.web.server, "REQUEST_TIMEOUT_SECONDS", 1.0, raising=False)
    with web_server(tmp_path) as server:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=8)
        trickling = socket.create_connection(("127.0.0.1", server.port), timeout=8)
        stop = threading.Event()

        def trickle() -> None:  # a byte every 0.3 s: each read is quick, the request never ends
            with contextlib.suppress(OSError):
                for byte in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"y" * 100:
                    if stop.wait(0.3):
                        return
                    trickling.send(bytes([byte]))

        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            assert get(server.port, "/healthz").status == 200  # served meanwhile
            opened = time.monotonic()
            assert silent.recv(1024) == b""  # closed by the server
            assert time.monotonic() - opened < 5
            with contextlib.suppress(ConnectionResetError):
                assert trickling.recv(1024) == b""
            assert time.monotonic() - opened < 5
            assert get(server.port, "/healthz").status == 200
        finally:
            stop.set()
            thread.join()
            silent.close()
            trickling.close()


def test_worker_threads_are_bounded_and_extra_connections_are_told_to_wait(tmp_path):
    with web_server(tmp_path) as server:
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(40)]
        try:
            time.sleep(0.5)
            assert threading.active_count() - before <= 1  # the workers were there before
            for connection in idle[-10:]:  # past the workers and the queue
                connection.settimeout(3)
                assert connection.recv(1024).startswith(b"HTTP/1.0 503")
        finally:
            for connection in idle:
                connection.close()
        wait_for(lambda: get(server.port, "/healthz").status == 200, timeout=15, what="the server serving again")


def test_the_log_never_holds_the_token(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    with web_server(tmp_path, TOKEN) as server:
        assert get(server.port, f"/?token={TOKEN}&status=pending").status == 200
        assert get(server.port, f"/nowhere?token={TOKEN}").status == 404
        assert get(server.port, f"/?token={TOKEN}x").status == 401
        assert b"505" in exchange(
            server.port, f"GET /?token={TOKEN} HTTP/9.9\r\n\r\n".encode()
        )  # logged by http.server
    messages = [record.getMessage() for record in caplog.records if record.name == "cdc.http"]
    assert any("token=<redacted>" in message for message in messages), messages
    assert not [message for message in messages if TOKEN in message]
    printed = capfd.readouterr()
    assert TOKEN not in printed.out + printed.err
    assert "HTTP/1.1" not in printed.err  # no request line printed by http.server itself


# -- the review page against a real conflict ---------------------------------------------------

SCHEMA = """CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text,
    updated_by text);"""
CONFIG = """
[[tables]]
match = "public.customers"
writer_column = "updated_by"
policy = "manual"

[log]
level = "debug"
"""


def _pending_conflict(crm: CdcSetup) -> dict:
    """A stale save by erp-sync over sales-app's phone change, held for review."""
    with crm.source() as conn:
        conn.execute("INSERT INTO customers VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import')")
    sales, erp = crm.source(), crm.source()
    stale = erp.execute("SELECT name, phone FROM customers WHERE id = 42").fetchone()
    sales.execute("UPDATE customers SET phone = '555-0199', updated_by = 'sales-app' WHERE id = 42")
    erp.execute(
        "UPDATE customers SET name = %s, phone = %s, email = 'ada@erp.example', updated_by = 'erp-sync' WHERE id = 42",
        stale,
    )
    sales.close(), erp.close()
    return wait_for(
        lambda: [
            c
            for c in map(json.loads, crm.cdc("conflicts", "list", "--json", "--status", "pending").stdout.splitlines())
            if c["type"] == "lost_update"
        ],
        timeout=60,
        what="the conflict",
    )[0]


def _status(crm: CdcSetup, conflict_id: str) -> str:
    listed = map(json.loads, crm.cdc("conflicts", "list", "--json").stdout.splitlines())
    return next(c["status"] for c in listed if c["id"] == conflict_id)


def _post(port: int, path: str, form: str, headers: dict[str, str]) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(
        "POST", path, body=form, headers={"Content-Type": "application/x-www-form-urlencoded", **headers}
    )
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response.status, body


def test_a_cross_site_post_resolves_nothing_and_the_page_itself_does(pg_server, tmp_path):
    port = free_port()
    http_config = f'[http]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"], extra_config=CONFIG + http_config)
    crm.setup()
    with crm.running(timeout=15):
        conflict = _pending_conflict(crm)
        kept = quote(conflict["events"][-1]["event_id"], safe="")  # erp-sync's save, not the row held
        page_path = f"/conflicts/{quote(conflict['id'], safe='')}"
        resolve = f"{page_path}/resolve"
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        page = get(port, f"{page_path}?token={TOKEN}")
        assert page.status == 200
        cookies = "; ".join(v.split(";")[0] for n, v in page.getheaders() if n == "Set-Cookie")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", page_path, headers={"Cookie": cookies})
        html = connection.getresponse().read().decode()
        connection.close()
        [csrf] = set(re.findall(r"name='csrf' value='([0-9a-f]+)'", html))
        same_site = {"Origin": f"http://127.0.0.1:{port}", "Cookie": cookies}
        form = f"csrf={csrf}&keep={kept}&action=keep"

        attempts = [  # each lacks one thing the page's own form has
            ({**bearer, "Origin": "https://evil.example"}, f"keep={kept}&action=keep"),
            ({**same_site, "Origin": "https://evil.example"}, form),
            ({**same_site, "Origin": "null"}, form),
            ({"Cookie": cookies, "Referer": "https://evil.example/page"}, form),
            ({"Cookie": cookies}, form),
            (same_site, f"keep={kept}&action=keep"),
            (same_site, f"csrf={'0' * 64}&keep={kept}&action=keep"),
            ({**bearer, "Origin": f"http://127.0.0.1:{port}"}, form),  # no session cookie
            ({**same_site, "Host": f"rebound.example:{port}", "Origin": f"http://rebound.example:{port}"}, form),
            ({**same_site, "Cookie": cookies.replace("cdc_token=", "cdc_old=")}, form),  # no token
        ]
        for headers, body in attempts:
            status, reason = _post(port, resolve, body, headers)
            assert status in (401, 403), (headers, status, reason)
            assert "\n" not in reason.strip()
        assert _status(crm, conflict["id"]) == "pending"
        time.sleep(1)  # checkpoints apply resolutions every 0.2 s
        with crm.target() as dst:
            assert dst.execute("SELECT phone, email FROM customers WHERE id = 42").fetchone() == (
                "555-0199",
                "ada@x.io",
            )

        status, _ = _post(port, resolve, form, same_site)
        assert status == 303
        assert _status(crm, conflict["id"]) == "resolved_by_hand"
        with crm.target() as dst:
            wait_for(
                lambda: (
                    dst.execute("SELECT name, phone, email FROM customers WHERE id = 42").fetchone()
                    == ("Ada", "555-0100", "ada@erp.example")
                ),
                timeout=30,
                what="the kept row in the target",
            )
    log = crm.daemon_log()
    assert "token=<redacted>" in log and "refused" in log
    assert TOKEN not in log
