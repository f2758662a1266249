"""Watching the sources' servers for operational danger, beside the stream.

Every ``interval`` seconds it reads, for each source, what its server keeps for cdc: a
PostgreSQL slot's lag and retained WAL, or a binlog's size and how much of it is older than
the file holding cdc's position. It sets the metrics and alerts (``alerts``), at most once
an hour per source and kind, when a slot retains more WAL than ``alerts.retained_wal_bytes``
or when cdc's binlog file is among the next to be purged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cdc import sources
from cdc.config import Settings, SourceSettings
from cdc.logs import one_line
from cdc.metrics import Metrics
from cdc.state.store import StateStore

log = logging.getLogger("cdc.monitor")
REPEAT_SECONDS = 3600.0


class Monitor:
    def __init__(
        self, settings: Settings, metrics: Metrics, alert: Callable[[dict[str, Any]], None], interval: float = 15.0
    ) -> None:
        self.settings = settings
        self._metrics = metrics
        self._alert = alert
        self._interval = interval
        self._stop = threading.Event()
        self._alerted: dict[tuple[str, str], float] = {}
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for source in self.settings.sources:
                try:
                    self.check(source)
                except Exception as exc:
                    log.debug("monitor: %s: %s", source.name, one_line(exc))

    def check(self, source: SourceSettings) -> None:
        status = sources.server_status(source) or {}
        alerts = self.settings.alerts
        if "retained_wal_bytes" in status:
            retained = int(status["retained_wal_bytes"] or 0)
            self._metrics.lag_bytes.labels(source.name).set(int(status["lag_bytes"] or 0))
            self._metrics.retained_wal.labels(source.name).set(retained)
            if retained > alerts.retained_wal_bytes:
                self._raise(
                    source.name,
                    "retained_wal",
                    f"slot {source.slot_name} retains {retained} bytes of WAL"
                    f" (over alerts.retained_wal_bytes = {alerts.retained_wal_bytes}): is cdc keeping up?",
                )
            return
        files = status.get("binlog_files") or []
        store = StateStore(self.settings.state_dir, readonly=True)
        try:
            complete = store.source_state(source.name).complete_txn
        finally:
            store.close()
        if not files or not complete:
            return
        older, behind = sources.kind_of(source).binlog_backlog(files, complete)
        self._metrics.binlog_headroom.labels(source.name).set(older)
        self._metrics.lag_bytes.labels(source.name).set(behind)
        if len(files) > 1 and older <= alerts.binlog_purge_headroom_bytes:
            self._raise(
                source.name,
                "binlog_purge",
                "the binlog file holding cdc's position is the oldest one:"
                " the next purge would lose changes cdc has not streamed",
            )

    def _raise(self, source: str, kind: str, text: str) -> None:
        now = time.monotonic()
        if now - self._alerted.get((source, kind), -REPEAT_SECONDS) < REPEAT_SECONDS:
            return
        self._alerted[(source, kind)] = now
        log.warning("%s: %s", source, text, extra={"source": source, "alert": kind})
        self._alert(
            {
                "id": f"{kind}:{source}",
                "type": kind,
                "severity": "warning",
                "table": f"source {source}",
                "key": "",
                "explanation": text,
            }
        )
