"""Progress of a long DBA task (snapshot, backfill, replay): a bar on a terminal, log lines otherwise.

On a terminal (``stream.isatty()``) one line is redrawn in place with the count, the rate and
the time left; otherwise (a timer, a log file, journald) a line is logged every
``interval`` seconds and at the end, so that a long run shows it is alive.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("cdc.progress")
BAR_WIDTH = 30


class Progress:
    def __init__(self, what: str, total: int | None, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._interval = interval
        self._started = self._shown = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self._tty and now - self._shown >= 0.2:
            self._stream.write("\r" + self.line(now))
            self._stream.flush()
            self._shown = now
        elif not self._tty and now - self._shown >= self._interval:
            self._log(now)
            self._shown = now

    def finish(self) -> None:
        now = time.monotonic()
        if self._tty:
            self._stream.write("\r" + self.line(now) + "\n")
            self._stream.flush()
        else:
            self._log(now)

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-6)
        rate = self.done / elapsed
        if not self.total:
            return f"{self.what}: {self.done:,} at {rate:,.0f}/s"
        share = min(self.done / self.total, 1.0)
        filled = int(share * BAR_WIDTH)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"{self.what} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:4.0%} "
            f"{self.done:,}/{self.total:,} {rate:,.0f}/s ETA {_clock(left)}"
        )

    def _log(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-6)
        log.info(
            "%s: %d of %s done (%.0f/s)",
            self.what,
            self.done,
            self.total if self.total else "?",
            self.done / elapsed,
            extra={"done": self.done, "total": self.total},
        )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
