"""The daemon's metrics, in the Prometheus text format (``/metrics``), and its health (``/healthz``).

The pipeline counts events and times target batches as it goes; the daemon's monitor sets
the sources' lag, retained WAL and binlog headroom from the servers every few seconds;
conflicts are counted from the state store when scraped. Names follow Prometheus'
conventions: a ``cdc_`` prefix, base units (bytes, seconds), ``_total`` for counters.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, state_dir: Path | None = None, stale_after_seconds: float = 60.0) -> None:
        self.registry = CollectorRegistry()
        self.stale_after_seconds = stale_after_seconds
        self.events = Counter(
            "cdc_events", "Row changes stored in the event log", ["source", "table", "op"], registry=self.registry
        )
        self.conflicts_found = Counter(
            "cdc_conflicts_detected", "Conflicts detected by this daemon", ["type"], registry=self.registry
        )
        self.source_up = Gauge(
            "cdc_source_up",
            "1 while the source streams, 0 while it is disconnected",
            ["source"],
            registry=self.registry,
        )
        self.lag_bytes = Gauge(
            "cdc_source_lag_bytes", "Bytes of the source's log not yet acknowledged", ["source"], registry=self.registry
        )
        self.lag_seconds = Gauge(
            "cdc_source_lag_seconds",
            "Seconds between the last stored change's commit and now (0 when caught up)",
            ["source"],
            registry=self.registry,
        )
        self.retained_wal = Gauge(
            "cdc_slot_retained_wal_bytes",
            "WAL the PostgreSQL slot keeps on the server",
            ["source"],
            registry=self.registry,
        )
        self.binlog_headroom = Gauge(
            "cdc_binlog_purge_headroom_bytes",
            "Binlog bytes older than the file holding the acknowledged position (what can be"
            " purged before that file is)",
            ["source"],
            registry=self.registry,
        )
        self.apply_seconds = Histogram(
            "cdc_target_apply_seconds",
            "Time to apply one batch of events to a target",
            ["target"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_depth = Gauge(
            "cdc_queue_depth", "Batches of changes waiting between the sources and the store", registry=self.registry
        )
        self.last_checkpoint = time.time()
        self.started_streaming = False
        Gauge(
            "cdc_last_checkpoint_age_seconds",
            "Seconds since the last checkpoint (targets applied, sources acknowledged)",
            registry=self.registry,
        ).set_function(lambda: time.time() - self.last_checkpoint)
        if state_dir is not None:
            self.registry.register(_ConflictCollector(Path(state_dir) / "state.db"))

    def checkpointed(self) -> None:
        self.last_checkpoint = time.time()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def lags(self) -> dict[str, float]:
        """Each source's lag in seconds, as last set."""
        # a metric's collect() is typed Iterable but returns a list of the one metric
        return {s.labels["source"]: s.value for s in cast("list[Metric]", self.lag_seconds.collect())[0].samples}

    def health(self) -> tuple[bool, list[str]]:
        """Healthy, or the reasons not: a source disconnected, or no checkpoint for too long."""
        problems = []
        for sample in cast("list[Metric]", self.source_up.collect())[0].samples:
            if sample.value == 0:
                problems.append(f"source {sample.labels['source']} is disconnected")
        age = time.time() - self.last_checkpoint
        if age > self.stale_after_seconds:
            problems.append(f"last checkpoint {age:.0f}s ago")
        return not problems, problems


class _ConflictCollector(Collector):
    """``cdc_conflicts{type,status}``: the conflicts in the state store, counted when scraped."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "cdc_conflicts", "Conflicts in the state store, by type and status", labels=["type", "status"]
        )
        try:
            with closing(sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=2)) as db:
                for kind, status, count in db.execute(
                    "SELECT type, status, count(*) FROM conflicts GROUP BY type, status"
                ):
                    family.add_metric([kind, status], count)
        except sqlite3.Error:
            pass  # no store yet: no conflicts to count
        yield family
