"""``cdc run``: the daemon around the pipeline.

It opens the state store, builds sources and targets, and runs the pipeline; on a
failure that a retry can cure (a lost connection, a server restarting) it backs off
with jitter and starts again from the state store, which drops whatever is read twice.
Fatal errors (a missing slot, a table without a primary key) stop it with exit code 3.
SIGTERM and SIGINT stop reading, apply and acknowledge what is in flight, and exit 0;
SIGHUP reloads the alert and log settings without stopping the stream. Under systemd it
speaks the notify protocol (``cdc.systemd``); beside the stream it serves HTTP
(``cdc.web``) and watches the servers (``cdc.monitor``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from cdc.alerts import Alerter
from cdc.config import ConfigError, Settings, load_settings
from cdc.errors import CdcError, ExitCode, SourceError, TargetError, Unreachable
from cdc.logs import setup_logging
from cdc.metrics import Metrics
from cdc.monitor import Monitor
from cdc.ops.seed_keys import seed as seed_natural_keys
from cdc.pipeline.entities import sync_targets
from cdc.pipeline.runner import Pipeline
from cdc.retry import retry_call
from cdc.sources import make_source
from cdc.state.store import StateStore
from cdc.systemd import Notifier
from cdc.targets import make_target
from cdc.web.server import WebServer

log = logging.getLogger("cdc.daemon")


class Daemon:
    _alerter: Alerter  # made by run(), before SIGHUP's reload() can replace it

    def __init__(self, settings: Settings, config: Path | None = None) -> None:
        self.settings = settings
        self._config = config
        self._stop = threading.Event()
        self._pipeline: Pipeline | None = None
        self._notifier = Notifier()
        self._last_count: tuple[float, int] = (time.monotonic(), 0)
        stale = max(60.0, 20 * settings.pipeline.flush_interval_seconds)
        self.metrics = Metrics(settings.state_dir, stale_after_seconds=stale)

    def stop(self, *_: object) -> None:
        self._notifier.stopping()
        self._stop.set()
        if self._pipeline is not None:
            self._pipeline.stop()

    def reload(self, *_: object) -> None:
        """SIGHUP: read the configuration again and apply its alert and log settings; the stream
        goes on (other changes need a restart)."""
        if self._config is None:
            return
        try:
            fresh = load_settings(self._config)
        except ConfigError as exc:
            log.error("reload refused, the old settings stay: %s", exc)
            return
        setup_logging(fresh.log.level, fresh.log.format)
        old, self._alerter = self._alerter, Alerter(fresh.alerts)
        self.settings.alerts, self.settings.log = fresh.alerts, fresh.log
        threading.Thread(target=old.close, name="alerts-close", daemon=True).start()
        log.info("reloaded %s: alert and log settings applied", self._config)

    def run(self, drain: bool = False) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self.reload)
        store = StateStore(self.settings.state_dir)
        self._alerter = Alerter(self.settings.alerts)
        web = monitor = None
        if not drain:
            web = self._start_web()
            monitor = Monitor(self.settings, self.metrics, self._alert)
            monitor.start()
        self._notifier.keep_alive(self._alive, self._status)
        try:
            retry_call(
                self.settings.retry, "pipeline", lambda: self._run_once(store, drain), _retryable, stop=self._stop
            )
        except Unreachable as exc:
            log.error("giving up: %s", exc.__cause__ or exc)
            return ExitCode.UNREACHABLE
        except CdcError as exc:
            if _retryable(exc):  # the retries were cut short by a stop request
                return ExitCode.NOT_DRAINED if drain else ExitCode.OK
            log.error("%s", exc)
            return ExitCode.FATAL
        finally:
            self._notifier.stopping()
            for closing in (monitor, web):
                if closing is not None:
                    closing.close()
            self._alerter.close()
            self._notifier.close()
            store.close()
        if drain and not (self._pipeline is not None and self._pipeline.drained):
            log.warning("stopped before the sources' end position was reached: run 'cdc run --drain' again")
            return ExitCode.NOT_DRAINED
        return ExitCode.OK

    def _start_web(self) -> WebServer | None:
        if not self.settings.http.listen:
            return None
        try:
            web = WebServer(self.settings.http, self.settings.state_dir, self.metrics)
        except OSError as exc:
            log.warning(
                "http: cannot listen on %s: %s; going on without /metrics and the review page",
                self.settings.http.listen,
                exc.strerror or exc,
            )
            return None
        web.start()
        return web

    def _run_once(self, store: StateStore, drain: bool) -> None:
        if self._stop.is_set():
            return
        for source in self.settings.sources:
            if store.get_meta(f"snapshot:{source.name}"):
                raise SourceError(
                    f"source {source.name}: a snapshot was interrupted: run 'cdc snapshot --source"
                    f" {source.name}' again to finish it before streaming",
                    fatal=True,
                )
        for source in self.settings.sources:  # the natural keys of rows that existed before cdc, read once
            seed_natural_keys(self.settings, store, source, self._alert)
        sources = [make_source(source) for source in self.settings.sources]
        targets = [make_target(target, store) for target in self.settings.targets]
        syncing = {
            member: make_target(target, store, marks_writes=True)
            for member, target in sync_targets(self.settings).items()
        }
        self._pipeline = Pipeline(
            self.settings,
            store,
            sources,
            targets,
            on_conflict=self._alert,
            sync_targets=syncing,
            metrics=self.metrics,
            on_ready=self._ready,
        )
        if self._stop.is_set():
            self._pipeline.stop()
        try:
            self._pipeline.run(drain=drain)
        except (SourceError, TargetError) as exc:
            for source in self.settings.sources:
                self.metrics.source_up.labels(source.name).set(0)
            if isinstance(exc, TargetError):
                self._alert(
                    {
                        "id": "target_failing",
                        "type": "target_failing",
                        "severity": "error",
                        "table": "targets",
                        "key": "",
                        "explanation": str(exc),
                    }
                )
            raise
        log.info(
            "stopped after storing %d events",
            self._pipeline.events_stored,
            extra={"events": self._pipeline.events_stored},
        )

    def _alert(self, record: dict) -> None:
        self._alerter.submit(record)

    def _ready(self) -> None:
        self._notifier.ready(self._status())

    def _alive(self) -> bool:
        pipeline = self._pipeline
        if pipeline is None or self._notifier.watchdog_seconds is None:
            return True
        return time.monotonic() - pipeline.last_loop < self._notifier.watchdog_seconds

    def _status(self) -> str:
        pipeline = self._pipeline
        if pipeline is None:
            return "starting"
        now = time.monotonic()
        rate = (pipeline.events_stored - self._last_count[1]) / max(now - self._last_count[0], 1e-6)
        self._last_count = (now, pipeline.events_stored)
        lag = max(self.metrics.lags().values(), default=0.0)
        return f"streaming: {rate:.1f} events/s, lag {lag:.1f}s, {pipeline.events_stored} events stored"


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (SourceError, TargetError)) and not exc.fatal
