"""The daemon's HTTP server: ``/metrics``, ``/healthz`` and the conflict review page.

It listens on ``[http] listen`` (loopback by default) with a fixed number of worker
threads: a connection waits in a short queue for one, and beyond it gets ``503`` at once.
Who may ask what is ``cdc.web.guard``'s business (a configured ``[http] token`` on every
request; the ``Host``, ``Origin`` and CSRF checks); the limits on a request (its time,
its body) are ``cdc.web.handler``'s.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from http.server import HTTPServer
from pathlib import Path
from typing import Any

from cdc.config import HttpSettings
from cdc.metrics import Metrics
from cdc.web.guard import Guard, is_loopback
from cdc.web.handler import Site, make_handler

__all__ = ["WebServer", "is_loopback"]

log = logging.getLogger("cdc.http")
WORKERS = 8
QUEUED = 16  # connections accepted while every worker is busy
REQUEST_TIMEOUT_SECONDS = 10.0
_BUSY_TEXT = b"busy: try again shortly\n"
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)


class _PooledHTTPServer(HTTPServer):
    """An HTTPServer whose connections are handled by ``workers`` threads, not one thread each."""

    request_queue_size = 64  # the listen backlog

    def __init__(self, address: tuple[str, int], handler: Any, workers: int) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._waiting: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue(maxsize=QUEUED)
        self._workers: list[threading.Thread] = []  # (server_close runs if the bind fails)
        super().__init__(address, handler)
        self._workers = [threading.Thread(target=self._work, name=f"http-{n}", daemon=True) for n in range(workers)]
        for worker in self._workers:
            worker.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self._waiting.put_nowait((request, client_address))
        except queue.Full:
            log.warning("http: %d requests in progress and %d waiting: %s refused", WORKERS, QUEUED, client_address[0])
            with contextlib.suppress(OSError):
                request.settimeout(1)
                request.sendall(_BUSY)
            self.shutdown_request(request)

    def _work(self) -> None:
        while (item := self._waiting.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.error("http: a request from %s failed", client_address[0], exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        for _ in self._workers:
            with contextlib.suppress(queue.Full):
                self._waiting.put_nowait(None)


class WebServer:
    def __init__(
        self,
        settings: HttpSettings,
        state_dir: Path,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        host, port = settings.address
        token = settings.token.get_secret_value() if settings.token else None
        guard = Guard(host, token)
        if not guard.open_without_token and token is None:
            log.warning("http: %s is not a loopback address and no [http] token is set: every request is refused", host)
        site = Site(guard=guard, metrics=metrics, state_dir=Path(state_dir), request_timeout=REQUEST_TIMEOUT_SECONDS)
        self._server = _PooledHTTPServer((host, port), make_handler(site), WORKERS)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("http: serving /metrics, /healthz and the review page on %s:%d", self.settings.address[0], self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
