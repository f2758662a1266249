"""Conflict alerts: delivered within seconds to a webhook (JSON POST) and/or by e-mail (SMTP).

``Alerter(settings.alerts)`` starts one daemon thread per configured channel; ``submit(record)``
(a conflict as ``StateStore.conflicts()`` returns it) only puts the record on each channel's
in-memory queue, so the pipeline never waits for a slow channel. Records below
``min_severity`` are ignored. The log channel is the detector's own log line, so alerts are
not logged again here; delivery failures and bursts are.

Each alert text says what was lost and who overwrote it: the record's ``explanation``
prefixed by severity, type, table and key, e.g.
``ERROR lost_update public.customers {"id":42}: phone set by sales-app at 10:02:11 was ...``.

Delivery is retried with exponential backoff (tenacity) for about 30 s on connection
errors and server errors (HTTP 5xx, SMTP 4xx), with one log line per failed attempt.
A channel sends at most ``rate_limit_per_minute`` alerts per rolling minute; the ones over
the limit are counted per type and summarised in one alert when the minute is over (or on
``close()``): ``45 more conflicts in the last minute: 33 concurrent_overwrite, 12 lost_update
(see cdc conflicts list)``. Secrets (webhook token, SMTP password) never reach a log line.

A webhook URL's user-info (``https://user:password@host/...``) is sent as HTTP Basic auth,
never in the URL. A redirect is not followed (it would carry the alert and its credentials to
another address): a 3xx is a delivery failure naming the status. A webhook's log lines name
only its ``scheme://host[:port]``: for Slack-style hooks the path is the secret.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, deque
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    sleep_using_event,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from cdc.config import AlertSettings, EmailSettings, WebhookSettings
from cdc.values import key_text

log = logging.getLogger("cdc.alerts")
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}
POLL_SECONDS = 0.5  # longest a queued alert or a due summary waits for the thread
WINDOW_SECONDS = 60.0
_STOP = object()


def _key(key: Any) -> str:
    """A conflict record's key is already text; anything else in the event log's form."""
    return key if isinstance(key, str) else key_text(key)


def alert_text(record: dict[str, Any]) -> str:
    """``ERROR lost_update public.customers {"id":42}: <explanation>``."""
    head = (
        f"{str(record.get('severity') or 'warning').upper()} {record.get('type')} {record.get('table')} "
        f"{_key(record.get('key'))}"
    )
    explanation = record.get("explanation")
    if not explanation:
        writes = [f"{e.get('writer') or e.get('source')} at {e.get('commit_ts')}" for e in record.get("events") or []]
        explanation = f"fields {', '.join(record.get('fields') or []) or '?'} written by {'; '.join(writes) or '?'}"
    return f"{head}: {explanation}"


def summary_text(counts: Counter[str]) -> str:
    """``N more conflicts in the last minute: 12 concurrent_overwrite, 3 lost_update (...)``."""
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return f"{sum(counts.values())} more conflicts in the last minute: {parts} (see cdc conflicts list)"


def email_body(record: dict[str, Any]) -> str:
    lines = [alert_text(record), "", f"Fields: {', '.join(record.get('fields') or [])}", "Events (oldest first):"]
    for e in record.get("events") or []:
        before, after = e.get("before") or {}, e.get("after") or {}
        changes = ", ".join(
            f"{f}: {json.dumps(before.get(f), default=str, ensure_ascii=False)} -> "
            f"{json.dumps(after.get(f), default=str, ensure_ascii=False)}"
            for f in sorted(set(before) | set(after))
        )
        lines.append(
            f"  {e.get('commit_ts')} {e.get('op')} by {e.get('writer') or '-'} ({e.get('source')}, "
            f"event {e.get('event_id')}): {changes}"
        )
    lines += [
        "",
        f"Rule: {record.get('rule')}",
        f"Status: {record.get('status')}",
        f"Resolution: {json.dumps(record.get('resolution'), default=str, ensure_ascii=False)}",
        f"Review: cdc conflicts show {record.get('id')}",
    ]
    return "\n".join(lines) + "\n"


class _Channel:
    """One delivery channel: its queue, thread, rate limit and burst counter."""

    name = "channel"

    def __init__(
        self, alerts: AlertSettings, clock: Callable[[], float], retry_seconds: float, secrets: list[str]
    ) -> None:
        self._limit = alerts.rate_limit_per_minute
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._secrets = secrets
        self._queue: queue.Queue[Any] = queue.Queue()
        self._sent: deque[float] = deque()
        self._suppressed: Counter[str] = Counter()
        self._burst_start = 0.0
        self._pending = 0
        self._lock = threading.Lock()
        self.abort = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"cdc-alerts-{self.name}", daemon=True)
        self.thread.start()

    def send_conflict(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def send_summary(self, counts: Counter[str]) -> None:
        raise NotImplementedError

    def retryable(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def describe(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    def put(self, item: Any) -> None:
        if item is not _STOP:
            with self._lock:
                self._pending += 1
        self._queue.put(item)

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._pending == 0

    def _run(self) -> None:
        dropped = 0
        while True:
            try:
                item = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                try:
                    if self.abort.is_set():
                        dropped += 1
                    else:
                        self._offer(item)
                except Exception:
                    log.exception("alerts %s: cannot send an alert", self.name, extra={"channel": self.name})
                finally:
                    with self._lock:
                        self._pending -= 1
            self._summarise(force=False)
        if not self.abort.is_set():
            self._summarise(force=True)
        if dropped:
            log.warning(
                "alerts %s: %d conflict alert(s) not sent: closing timed out",
                self.name,
                dropped,
                extra={"channel": self.name},
            )

    def _offer(self, record: dict[str, Any]) -> None:
        now = self._clock()
        while self._sent and self._sent[0] <= now - WINDOW_SECONDS:
            self._sent.popleft()
        if len(self._sent) < self._limit:
            self._sent.append(now)
            self._deliver(f"conflict {record.get('id')}", lambda: self.send_conflict(record))
            return
        if not self._suppressed:
            self._burst_start = now
            log.warning(
                "alerts %s: burst of conflicts, more than %d alerts in a minute; the rest are counted and summarised",
                self.name,
                self._limit,
                extra={"channel": self.name},
            )
        self._suppressed[str(record.get("type"))] += 1

    def _summarise(self, force: bool) -> None:
        if not self._suppressed or not (force or self._clock() - self._burst_start >= WINDOW_SECONDS):
            return
        counts, self._suppressed = self._suppressed, Counter()
        log.warning("alerts %s: %s", self.name, summary_text(counts), extra={"channel": self.name})
        self._deliver("burst summary", lambda: self.send_summary(counts))

    def _deliver(self, what: str, send: Callable[[], None]) -> bool:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "alerts %s: sending %s failed: %s (attempt %d, retrying in %.1fs)",
                self.name,
                what,
                self._safe(exc),
                state.attempt_number,
                delay,
                extra={"channel": self.name, "attempt": state.attempt_number},
            )

        retrying = Retrying(
            retry=retry_if_exception(self.retryable),
            wait=wait_exponential(multiplier=0.5, max=8),
            stop=stop_after_delay(self._retry_seconds) | stop_when_event_set(self.abort),
            sleep=sleep_using_event(self.abort),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            retrying(send)
            return True
        except Exception as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            log.error(
                "alerts %s: %s not delivered: %s (attempt %d, giving up)",
                self.name,
                what,
                self._safe(exc),
                attempts,
                extra={"channel": self.name, "attempt": attempts},
            )
            return False

    def _safe(self, exc: BaseException | None) -> str:
        text = " ".join(self.describe(exc).split()) if exc else "failed"
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None  # the 3xx is then raised as an HTTPError


def webhook_secrets(url: str) -> list[str]:
    """What a webhook URL holds that no log line may show: its user-info, password, path and query."""
    parts = urllib.parse.urlsplit(url)
    password = parts.password or ""
    found = [parts.netloc.rpartition("@")[0], password, urllib.parse.unquote(password), parts.query]
    return [s for s in [*found, parts.path if len(parts.path) > 1 else ""] if s]


class _Webhook(_Channel):
    name = "webhook"

    def __init__(self, settings: WebhookSettings, *args: Any) -> None:
        self._settings = settings
        parts = urllib.parse.urlsplit(settings.url)
        host = parts.netloc.rpartition("@")[2]
        self._origin = f"{parts.scheme}://{host}"
        self._url = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
        self._authorization = f"Bearer {settings.token.get_secret_value()}" if settings.token else None
        if parts.username is not None:
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._authorization = f"Basic {base64.b64encode(pair.encode()).decode()}"
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        super().__init__(*args)

    def _post(self, payload: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "cdc-alerts"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        body = json.dumps(payload, ensure_ascii=False, default=str).encode()
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self._settings.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise

    def send_conflict(self, record: dict[str, Any]) -> None:
        self._post({"type": "conflict", "conflict": record, "text": alert_text(record)})

    def send_summary(self, counts: Counter[str]) -> None:
        self._post({"type": "summary", "counts": dict(counts), "text": summary_text(counts)})

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, urllib.error.HTTPError):
            return exc.code >= 500 or exc.code == 429
        return isinstance(exc, OSError)  # URLError, refused, reset, timeout

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, urllib.error.HTTPError) and 300 <= exc.code < 400:
            return f"POST {self._origin}: HTTP {exc.code} {exc.reason}: redirects are not followed, set the final URL"
        if isinstance(exc, urllib.error.HTTPError):
            return f"POST {self._origin}: HTTP {exc.code} {exc.reason}"
        if isinstance(exc, urllib.error.URLError):
            return f"POST {self._origin}: {exc.reason}"
        return f"POST {self._origin}: {type(exc).__name__}: {exc}"


class _Email(_Channel):
    name = "email"

    def __init__(self, settings: EmailSettings, *args: Any) -> None:
        self._settings = settings
        super().__init__(*args)

    def _send(self, subject: str, body: str) -> None:
        s = self._settings
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = subject, s.from_addr, ", ".join(s.to)
        message.set_content(body)
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30) as smtp:
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.username and s.password:
                smtp.login(s.username, s.password.get_secret_value())
            smtp.send_message(message, from_addr=s.from_addr, to_addrs=s.to)

    def send_conflict(self, record: dict[str, Any]) -> None:
        self._send(f"[cdc] {record.get('type')} on {record.get('table')} {_key(record.get('key'))}", email_body(record))

    def send_summary(self, counts: Counter[str]) -> None:
        self._send(f"[cdc] {sum(counts.values())} more conflicts in the last minute", summary_text(counts) + "\n")

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, smtplib.SMTPResponseException):
            return 400 <= exc.smtp_code < 500  # temporary failures; 5xx (bad login, refused) are permanent
        if isinstance(exc, smtplib.SMTPException):
            return isinstance(exc, smtplib.SMTPServerDisconnected)
        return isinstance(exc, OSError)  # refused, reset, timeout

    def describe(self, exc: BaseException) -> str:
        return f"SMTP {self._settings.smtp_host}:{self._settings.smtp_port}: {type(exc).__name__}: {exc}"


class Alerter:
    """Queues conflict records and delivers them to the configured channels in the background."""

    def __init__(
        self, settings: AlertSettings, clock: Callable[[], float] = time.monotonic, retry_seconds: float = 30.0
    ) -> None:
        self._min_rank = SEVERITY_RANK[settings.min_severity]
        secrets = [
            v.get_secret_value()
            for v in (settings.webhook and settings.webhook.token, settings.email and settings.email.password)
            if v
        ]
        if settings.webhook:
            secrets += webhook_secrets(settings.webhook.url)
        common = (settings, clock, retry_seconds, [s for s in secrets if s])
        self._channels: list[_Channel] = []
        if settings.webhook:
            self._channels.append(_Webhook(settings.webhook, *common))
        if settings.email:
            self._channels.append(_Email(settings.email, *common))
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, record: dict[str, Any]) -> None:
        """Queue a conflict record (never blocks); below ``min_severity`` it is ignored."""
        if SEVERITY_RANK.get(str(record.get("severity")), 1) < self._min_rank or self._closed:
            return
        for channel in self._channels:
            channel.put(record)

    def idle(self) -> bool:
        """Every submitted record has been delivered, counted for a summary, or dropped."""
        return all(c.idle for c in self._channels)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued and the pending summaries (best effort within ``timeout``), then stop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        for channel in self._channels:
            channel.put(_STOP)
        for channel in self._channels:
            channel.thread.join(max(0.0, deadline - time.monotonic()))
        for channel in self._channels:
            if channel.thread.is_alive():  # still retrying: stop it, it drops (and logs) what is left
                channel.abort.set()
                channel.thread.join(1.0)
