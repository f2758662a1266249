"""systemd's notify protocol, with the standard library (``Type=notify``, ``WatchdogSec``).

Messages go as datagrams to ``$NOTIFY_SOCKET`` (a path, or an abstract socket when it starts
with ``@``): ``READY=1`` once the daemon streams, ``STATUS=...`` (lag and events/s) as it
goes, ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` while the pipeline loop is alive, and
``STOPPING=1`` on the way out. Without ``$NOTIFY_SOCKET`` (not under systemd) it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("cdc.systemd")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = dict(os.environ if environ is None else environ)
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        own = not pid or pid == str(os.getpid())
        self.watchdog_seconds = int(usec) / 1_000_000 if usec.isdigit() and own else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, *fields: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc.strerror or exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        """Once, however often asked (a signal, then the way out)."""
        if not self._stopping:
            self._stopping = True
            self.notify("STOPPING=1", "STATUS=stopping: applying and acknowledging what is in flight")

    def keep_alive(self, alive: Callable[[], bool], status: Callable[[], str], every: float = 5.0) -> None:
        """Ping the watchdog at half its interval while ``alive()``, and send ``status()`` every
        ``every`` seconds, from a thread of its own."""
        if self._socket is None:
            return
        interval = min(self.watchdog_seconds / 2, every) if self.watchdog_seconds else every

        def run() -> None:
            last_status = 0.0
            while not self._stop.wait(interval):
                if self.watchdog_seconds and alive():
                    self.notify("WATCHDOG=1")
                if time.monotonic() - last_status >= every:
                    self.status(status())
                    last_status = time.monotonic()

        self._thread = threading.Thread(target=run, name="systemd-notify", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
