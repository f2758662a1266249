"""The daemon's HTTP server: ``/metrics``, ``/healthz`` and the conflict review page.

It listens on ``[http] listen`` (loopback by default) in threads of its own. Bound to any
other address it answers only requests that carry ``[http] token``, as a bearer token
(``Authorization: Bearer ...``), or once in the page's address (``?token=...``, kept in a
cookie for the pages after); with no token configured there, it refuses every request.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import threading
import time
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cdc.config import HttpSettings
from cdc.conflicts.review import ReviewError, resolve
from cdc.metrics import CONTENT_TYPE, Metrics
from cdc.state.store import StateStore, StateStoreError
from cdc.web import review_page

log = logging.getLogger("cdc.http")
_CONFLICT = re.compile(r"^/conflicts/([^/]+)(/resolve)?$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebServer:
    def __init__(self, settings: HttpSettings, state_dir: Any, metrics: Metrics) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.metrics = metrics
        host, port = settings.address
        self.token = settings.token.get_secret_value() if settings.token else None
        self.open_to_all = is_loopback(host)
        if not self.open_to_all and not self.token:
            log.warning("http: %s is not a loopback address and no [http] token is set: every request is refused", host)
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("http: serving /metrics, /healthz and the review page on %s:%d", self.settings.address[0], self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def allowed(self, headers: Any, query: dict[str, list[str]]) -> tuple[bool, bool]:
        """(allowed, set the cookie) for a request's headers and query."""
        if self.open_to_all:
            return True, False
        if not self.token:
            return False, False
        offered = []
        authorization = headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            offered.append(authorization[7:])
        cookie = SimpleCookie(headers.get("Cookie", ""))
        if "cdc_token" in cookie:
            offered.append(cookie["cdc_token"].value)
        from_query = query.get("token", [])
        offered += from_query
        ok = any(hmac.compare_digest(value.encode(), self.token.encode()) for value in offered)
        return ok, ok and bool(from_query)

    def page_status(self, store: StateStore) -> dict[str, Any]:
        return {
            "lag": self.metrics.lags(),
            "events_per_second": store.events_recorded_since(time.time() - 60) / 60,
            "pending": sum(store.open_conflicts().values()),
        }


def _handler(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cdc"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: %s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            allowed, set_cookie = server.allowed(self.headers, query)
            if not allowed:
                self._send(
                    HTTPStatus.UNAUTHORIZED,
                    b"a bearer token is required (see [http] token)\n",
                    "text/plain; charset=utf-8",
                    {"WWW-Authenticate": "Bearer"},
                )
                return
            extra = {"Set-Cookie": f"cdc_token={server.token}; HttpOnly; SameSite=Strict; Path=/"} if set_cookie else {}
            try:
                self._route(method, url.path, query, extra)
            except StateStoreError as exc:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}\n".encode(), "text/plain; charset=utf-8")

        def _route(self, method: str, path: str, query: dict[str, list[str]], extra: dict[str, str]) -> None:
            if method == "GET" and path == "/metrics":
                self._send(HTTPStatus.OK, server.metrics.exposition(), CONTENT_TYPE)
            elif method == "GET" and path == "/healthz":
                healthy, problems = server.metrics.health()
                body = ("ok\n" if healthy else "unhealthy: " + "; ".join(problems) + "\n").encode()
                self._send(
                    HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, body, "text/plain; charset=utf-8"
                )
            elif method == "GET" and path == "/":
                filters = {name: query.get(name, [""])[0] for name in ("type", "table", "status")}
                store = StateStore(server.state_dir, readonly=True)
                try:
                    found = store.conflicts(
                        type=filters["type"] or None, table=filters["table"] or None, status=filters["status"] or None
                    )[-200:][::-1]
                    body = review_page.listing(found, filters, server.page_status(store))
                finally:
                    store.close()
                self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", extra)
            elif (match := _CONFLICT.match(path)) and (method == "GET") == (match.group(2) is None):
                conflict_id = unquote(match.group(1))
                if method == "POST":
                    self._resolve(conflict_id)
                else:
                    self._detail(conflict_id, query.get("message", [""])[0], extra)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _detail(
            self, conflict_id: str, message: str, extra: dict[str, str], status: HTTPStatus = HTTPStatus.OK
        ) -> None:
            store = StateStore(server.state_dir, readonly=True)
            try:
                found = store.conflicts(conflict_id=conflict_id)
                if not found:
                    self._send(HTTPStatus.NOT_FOUND, b"no such conflict\n", "text/plain; charset=utf-8")
                    return
                docs = [json.loads(store.event_doc(e["event_id"]) or "null") for e in found[0]["events"]]
            finally:
                store.close()
            self._send(status, review_page.detail(found[0], docs, message), "text/html; charset=utf-8", extra)

        def _resolve(self, conflict_id: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            action = form.get("action", [""])[0]
            store = StateStore(server.state_dir)
            try:
                if action == "keep":
                    resolve(store, conflict_id, keep=form.get("keep", [""])[0], by="review page")
                elif action == "merge":
                    resolve(store, conflict_id, merge=True, by="review page")
                elif action == "row":
                    row = json.loads(form.get("row", [""])[0])
                    if not isinstance(row, dict):
                        raise ReviewError("the row must be a JSON object")
                    resolve(store, conflict_id, row=row, by="review page")
                else:
                    raise ReviewError("choose keep, merge or an edited row")
            except (ReviewError, ValueError) as exc:
                store.close()
                self._detail(conflict_id, f"not resolved: {exc}", {}, HTTPStatus.BAD_REQUEST)
                return
            store.close()
            log.info(
                "conflict %s resolved on the review page (%s)", conflict_id, action, extra={"conflict": conflict_id}
            )
            self._send(
                HTTPStatus.SEE_OTHER,
                b"",
                "text/plain",
                {"Location": f"/conflicts/{quote(conflict_id, safe='')}?message=resolved"},
            )

        def _send(
            self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
