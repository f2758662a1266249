"""Who may ask the HTTP server what: the checks made before a request is served.

- ``Host`` must name this server (a loopback name, an IP address, the ``[http] listen``
  host or this machine's name), so that a web page whose own name was made to resolve to
  this address (DNS rebinding) is refused;
- a configured ``[http] token`` is required on every request, loopback included: as
  ``Authorization: Bearer <token>``, or as ``?token=``, which sets a ``cdc_token`` cookie
  (holding an HMAC of the token, not the token) so that a browser gives it once;
- a state-changing request (a POST) must come from a page of this server: its ``Origin``
  (or, without one, its ``Referer``) must name the host the request was sent to (``Host``,
  or ``X-Forwarded-Host`` from a reverse proxy), and it must carry the CSRF token of the
  page's session: an HMAC of the session cookie under a key made at start, so pages served
  before a restart must be reloaded.

A refusal is ``Refused``: the status and one line of reason sent back.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
from collections.abc import Mapping
from email.message import Message
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import SplitResult, urlsplit

TOKEN_COOKIE = "cdc_token"
SESSION_COOKIE = "cdc_session"
CSRF_FIELD = "csrf"
_COOKIE_ATTRIBUTES = "HttpOnly; SameSite=Strict; Path=/"
_SECRET_IN_TEXT = re.compile(r"(token=)[^&\s'\"]*", re.IGNORECASE)
_SESSION_SHAPE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Refused(Exception):
    """A request this server does not serve: the HTTP status and a one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def redact(text: str) -> str:
    """``text`` (a request line, a path) with the value of every ``token=`` replaced."""
    return _SECRET_IN_TEXT.sub(r"\1<redacted>", text)


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cookies(headers: Message) -> SimpleCookie:
    try:
        return SimpleCookie(headers.get("Cookie", ""))
    except CookieError:
        return SimpleCookie()


def _host_and_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    """The host name and port of ``host[:port]``, the port defaulting to the scheme's; None if malformed."""
    try:
        parts: SplitResult = urlsplit(f"//{netloc.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path:
        return None
    return parts.hostname, port if port is not None else _DEFAULT_PORTS.get(scheme)


class Guard:
    """The checks of one server: its names, its token and its CSRF key."""

    def __init__(self, listen_host: str, token: str | None) -> None:
        self.token = token
        self.open_without_token = is_loopback(listen_host)
        self._names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
        if listen_host not in ("", "0.0.0.0", "::"):
            self._names.add(listen_host.lower())
        self._csrf_key = secrets.token_bytes(32)

    def check_host(self, headers: Message) -> None:
        host = headers.get("Host")
        if host is None:  # HTTP/1.0 clients; every browser sends one
            return
        parsed = _host_and_port(host, "http")
        name = parsed[0] if parsed else ""
        if not (name in self._names or is_loopback(name) or _is_ip_address(name)):
            raise Refused(HTTPStatus.FORBIDDEN, f"Host {host[:100]!r} does not name this server")

    def authenticate(self, headers: Message, query: Mapping[str, list[str]]) -> bool:
        """Whether the request may be served; True if its token came in ``?token=`` (to be kept in a cookie)."""
        if self.token is None:
            if self.open_without_token:
                return False
            raise Refused(HTTPStatus.UNAUTHORIZED, "this server is not on loopback and has no [http] token set")
        offered = list(query.get("token", []))
        from_query = bool(offered)
        authorization = headers.get("Authorization", "")
        if authorization[:7].lower() == "bearer ":
            offered.append(authorization[7:].strip())
        expected = self.token.encode()
        cookie = _cookies(headers).get(TOKEN_COOKIE)
        from_cookie = cookie is not None and hmac.compare_digest(cookie.value.encode(), self._token_proof().encode())
        if not from_cookie and not any(hmac.compare_digest(value.encode(), expected) for value in offered):
            raise Refused(
                HTTPStatus.UNAUTHORIZED,
                "the [http] token is required (Authorization: Bearer <token>, or ?token= once in a browser)",
                {"WWW-Authenticate": "Bearer"},
            )
        return from_query

    def _token_proof(self) -> str:
        """What the token cookie holds: derived from the token, so the token itself is never sent back."""
        return hmac.new((self.token or "").encode(), b"cdc review page", hashlib.sha256).hexdigest()

    def token_cookie(self) -> str:
        return f"{TOKEN_COOKIE}={self._token_proof()}; {_COOKIE_ATTRIBUTES}"

    def check_origin(self, headers: Message) -> None:
        """Refuses a state-changing request whose ``Origin``/``Referer`` is not the host it was sent to."""
        origin = headers.get("Origin")
        seen_from = origin if origin is not None else headers.get("Referer")
        if not seen_from:
            raise Refused(HTTPStatus.FORBIDDEN, "a same-origin Origin or Referer header is required")
        try:
            page = urlsplit(seen_from.strip())
        except ValueError:
            page = urlsplit("")
        page_host = _host_and_port(page.netloc, page.scheme) if page.scheme in _DEFAULT_PORTS else None
        sent_to = [headers.get("Host", ""), headers.get("X-Forwarded-Host", "").split(",")[0]]
        if page_host is None or page_host not in [_host_and_port(h, page.scheme) for h in sent_to if h.strip()]:
            what = "Origin" if origin is not None else "Referer"
            raise Refused(HTTPStatus.FORBIDDEN, f"cross-site request refused: {what} is not this server")

    def session(self, headers: Message) -> str | None:
        """The page session named by the request's cookie, if it has a well-formed one."""
        cookie = _cookies(headers).get(SESSION_COOKIE)
        return cookie.value if cookie is not None and _SESSION_SHAPE.match(cookie.value) else None

    @staticmethod
    def new_session() -> tuple[str, str]:
        """A new page session and the ``Set-Cookie`` value that gives it to the browser."""
        session = secrets.token_urlsafe(32)
        return session, f"{SESSION_COOKIE}={session}; {_COOKIE_ATTRIBUTES}"

    def csrf_token(self, session: str) -> str:
        return hmac.new(self._csrf_key, session.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, headers: Message, form: Mapping[str, list[str]]) -> None:
        session = self.session(headers)
        given = form.get(CSRF_FIELD, [""])[0]
        if session is None or not hmac.compare_digest(given.encode(), self.csrf_token(session).encode()):
            raise Refused(
                HTTPStatus.FORBIDDEN, "the form's CSRF token is missing or out of date: reload the page and try again"
            )
