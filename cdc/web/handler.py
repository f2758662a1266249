"""The HTTP request handler: reads a request within limits, checks it and routes it.

A request must arrive whole within ``request_timeout`` seconds (each read and write is
bounded by it too), and a POST body must declare its ``Content-Length`` (at most
``MAX_BODY_BYTES``); a request refused by ``cdc.web.guard`` or by these limits gets its
status and a one-line reason and changes nothing. Every line it logs goes through
``cdc.logs`` with any ``token=`` value redacted.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cdc.conflicts.review import ReviewError, resolve
from cdc.metrics import CONTENT_TYPE, Metrics
from cdc.state.store import StateStore, StateStoreError
from cdc.web import review_page
from cdc.web.guard import Guard, Refused, redact

log = logging.getLogger("cdc.http")
MAX_BODY_BYTES = 256 * 1024  # an edited row and its form; larger rows: 'cdc conflicts resolve --row'
_LINGER_BYTES = 16 * 1024 * 1024  # at most read and dropped after a refusal, for at most:
_LINGER_SECONDS = 2.0
_FORM_FIELDS = 100
_CONFLICT = re.compile(r"^/conflicts/([^/]+)(/resolve)?$")
_DIGITS = re.compile(r"[0-9]{1,12}")
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
_ALWAYS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


class _RequestDeadline(io.RawIOBase):
    """A connection's reading side that ends in a timeout ``seconds`` after it is opened,
    however slowly the bytes come."""

    def __init__(self, connection: socket.socket, seconds: float) -> None:
        self._connection = connection
        self._until = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._until - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive whole in time")
        self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


@dataclass(frozen=True)
class Site:
    """What the handler serves from: the checks, the metrics and the state store's directory."""

    guard: Guard
    metrics: Metrics
    state_dir: Path
    request_timeout: float

    def page_status(self, store: StateStore) -> dict[str, Any]:
        return {
            "lag": self.metrics.lags(),
            "events_per_second": store.events_recorded_since(time.time() - 60) / 60,
            "pending": sum(store.open_conflicts().values()),
        }


def make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cdc"
        sys_version = ""
        timeout = site.request_timeout  # of each read and write on the connection

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # read through the deadline instead
            self.rfile = io.BufferedReader(_RequestDeadline(self.connection, site.request_timeout))
            self._unread_body = False

        def finish(self) -> None:
            with contextlib.suppress(OSError):
                super().finish()
                if self._unread_body:
                    self._linger()

        def _linger(self) -> None:
            """Reads and drops what is left of a refused body, so that closing sends no reset over the answer."""
            self.connection.shutdown(socket.SHUT_WR)
            until = time.monotonic() + _LINGER_SECONDS
            dropped = 0
            while dropped < _LINGER_BYTES and (left := until - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not (chunk := self.connection.recv(65536)):
                    return
                dropped += len(chunk)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("http: %s", redact(format % args), extra={"client": self.client_address[0]})

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            status = int(code) if str(code).isdigit() else code
            log.debug("http: %s %s", redact(self.requestline), status, extra={"client": self.client_address[0]})

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            try:
                length = self._body_length() if method == "POST" else 0
                site.guard.check_host(self.headers)
                query = parse_qs(url.query)
                cookies = [site.guard.token_cookie()] if site.guard.authenticate(self.headers, query) else []
                form: dict[str, list[str]] = {}
                if method == "POST":
                    site.guard.check_origin(self.headers)
                    form = self._form(self._read_body(length))
                    site.guard.check_csrf(self.headers, form)
                self.connection.settimeout(site.request_timeout)  # for writing the answer
                self._route(method, url.path, query, form, cookies)
            except Refused as refusal:
                log.info(
                    "http: %s %s refused: %s",
                    method,
                    redact(url.path),
                    refusal.reason,
                    extra={"client": self.client_address[0], "status": int(refusal.status)},
                )
                self._send(refusal.status, f"{refusal.reason}\n".encode(), TEXT, headers=refusal.headers)
            except StateStoreError as exc:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}\n".encode(), TEXT)

        def _body_length(self) -> int:
            self._unread_body = True
            if "Transfer-Encoding" in self.headers:
                raise Refused(HTTPStatus.LENGTH_REQUIRED, "a chunked body is not accepted: send Content-Length")
            declared = {value.strip() for value in self.headers.get_all("Content-Length") or []}
            if not declared:
                raise Refused(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length header")
            if len(declared) > 1:
                raise Refused(HTTPStatus.BAD_REQUEST, "the request has conflicting Content-Length headers")
            [text] = declared
            if not text.isascii() or not text.isdigit():
                raise Refused(HTTPStatus.BAD_REQUEST, f"Content-Length {text[:20]!r} is not a number of bytes")
            if not _DIGITS.fullmatch(text) or int(text) > MAX_BODY_BYTES:
                raise Refused(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"a request body may hold at most {MAX_BODY_BYTES} bytes (use 'cdc conflicts resolve' for more)",
                )
            self._unread_body = int(text) > 0
            return int(text)

        @staticmethod
        def _form(body: bytes) -> dict[str, list[str]]:
            try:
                return parse_qs(body.decode("utf-8", "replace"), max_num_fields=_FORM_FIELDS)
            except ValueError:
                raise Refused(HTTPStatus.BAD_REQUEST, f"a form may hold at most {_FORM_FIELDS} fields") from None

        def _read_body(self, length: int) -> bytes:
            try:
                body = self.rfile.read(length)
            except OSError:  # the socket timed out
                body = b""
            self._unread_body = False
            if len(body) < length:
                self.close_connection = True
                raise Refused(HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive whole in time")
            return body

        def _route(
            self,
            method: str,
            path: str,
            query: dict[str, list[str]],
            form: dict[str, list[str]],
            cookies: list[str],
        ) -> None:
            if method == "GET" and path == "/metrics":
                self._send(HTTPStatus.OK, site.metrics.exposition(), CONTENT_TYPE, cookies)
            elif method == "GET" and path == "/healthz":
                healthy, problems = site.metrics.health()
                body = ("ok\n" if healthy else "unhealthy: " + "; ".join(problems) + "\n").encode()
                self._send(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, body, TEXT, cookies)
            elif method == "GET" and path == "/":
                self._listing(query, cookies)
            elif (match := _CONFLICT.match(path)) and (method == "GET") == (match.group(2) is None):
                conflict_id = unquote(match.group(1))
                if method == "POST":
                    self._resolve(conflict_id, form, cookies)
                else:
                    self._detail(conflict_id, query.get("message", [""])[0], cookies)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", TEXT, cookies)

        def _session(self, cookies: list[str]) -> str:
            """The page session's CSRF token, starting a session (a cookie in ``cookies``) if there is none."""
            session = site.guard.session(self.headers)
            if session is None:
                session, cookie = site.guard.new_session()
                cookies.append(cookie)
            return site.guard.csrf_token(session)

        def _listing(self, query: dict[str, list[str]], cookies: list[str]) -> None:
            filters = {name: query.get(name, [""])[0] for name in ("type", "table", "status")}
            self._session(cookies)
            store = StateStore(site.state_dir, readonly=True)
            try:
                found = store.conflicts(
                    type=filters["type"] or None, table=filters["table"] or None, status=filters["status"] or None
                )[-200:][::-1]
                body = review_page.listing(found, filters, site.page_status(store))
            finally:
                store.close()
            self._send(HTTPStatus.OK, body, HTML, cookies)

        def _detail(
            self, conflict_id: str, message: str, cookies: list[str], status: HTTPStatus = HTTPStatus.OK
        ) -> None:
            csrf = self._session(cookies)
            store = StateStore(site.state_dir, readonly=True)
            try:
                found = store.conflicts(conflict_id=conflict_id)
                if not found:
                    self._send(HTTPStatus.NOT_FOUND, b"no such conflict\n", TEXT, cookies)
                    return
                docs = [json.loads(store.event_doc(e["event_id"]) or "null") for e in found[0]["events"]]
            finally:
                store.close()
            self._send(status, review_page.detail(found[0], docs, csrf, message), HTML, cookies)

        def _resolve(self, conflict_id: str, form: dict[str, list[str]], cookies: list[str]) -> None:
            action = form.get("action", [""])[0]
            store = StateStore(site.state_dir)
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
                self._detail(conflict_id, f"not resolved: {exc}", cookies, HTTPStatus.BAD_REQUEST)
                return
            store.close()
            log.info(
                "conflict %s resolved on the review page (%s)", conflict_id, action, extra={"conflict": conflict_id}
            )
            location = f"/conflicts/{quote(conflict_id, safe='')}?message=resolved"
            self._send(HTTPStatus.SEE_OTHER, b"", TEXT, cookies, {"Location": location})

        def _send(
            self,
            status: HTTPStatus,
            body: bytes,
            content_type: str,
            cookies: list[str] | None = None,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in [*_ALWAYS, *(headers or {}).items()]:
                self.send_header(name, value)
            for cookie in cookies or []:
                self.send_header("Set-Cookie", cookie)
            self.end_headers()
            self.wfile.write(body)

    return Handler
