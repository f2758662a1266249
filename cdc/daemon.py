"""``cdc run``: the daemon around the pipeline.

It opens the state store, builds sources and targets, and runs the pipeline; on a
failure that a retry can cure (a lost connection, a server restarting) it backs off
with jitter and starts again from the state store, which drops whatever is read twice.
Fatal errors (a missing slot, a table without a primary key) stop it with exit code 3.
SIGTERM and SIGINT stop reading, apply and acknowledge what is in flight, and exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading

from cdc.alerts import Alerter
from cdc.config import Settings
from cdc.pipeline.runner import Pipeline
from cdc.retry import Unreachable, retry_call
from cdc.sources.base import SourceError, make_source
from cdc.state.store import StateStore
from cdc.pipeline.sync import sync_targets
from cdc.targets import TargetError, make_target

log = logging.getLogger("cdc.daemon")
EXIT_NOT_DRAINED = 5  # ``--drain`` was stopped (SIGTERM) before the end position was reached


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._pipeline: Pipeline | None = None

    def stop(self, *_: object) -> None:
        self._stop.set()
        if self._pipeline is not None:
            self._pipeline.stop()

    def run(self, drain: bool = False) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        store = StateStore(self.settings.state_dir)
        self._alerter = Alerter(self.settings.alerts)
        try:
            retry_call(self.settings.retry, "pipeline", lambda: self._run_once(store, drain), _retryable,
                       stop=self._stop)
        except Unreachable as exc:
            log.error("giving up: %s", exc.__cause__ or exc)
            return 4
        except (SourceError, TargetError) as exc:
            if _retryable(exc):  # the retries were cut short by a stop request
                return EXIT_NOT_DRAINED if drain else 0
            log.error("%s", exc)
            return 3
        finally:
            self._alerter.close()
            store.close()
        if drain and not (self._pipeline is not None and self._pipeline.drained):
            log.warning("stopped before the sources' end position was reached: run 'cdc run --drain' again")
            return EXIT_NOT_DRAINED
        return 0

    def _run_once(self, store: StateStore, drain: bool) -> None:
        if self._stop.is_set():
            return
        for source in self.settings.sources:
            if store.get_meta(f"snapshot:{source.name}"):
                raise SourceError(f"source {source.name}: a snapshot was interrupted: run 'cdc snapshot --source"
                                  f" {source.name}' again to finish it before streaming", fatal=True)
        sources = [make_source(source) for source in self.settings.sources]
        targets = [make_target(target, store) for target in self.settings.targets]
        syncing = {member: make_target(target, store, marks_writes=True)
                   for member, target in sync_targets(self.settings).items()}
        self._pipeline = Pipeline(self.settings, store, sources, targets, on_conflict=self._alerter.submit,
                                  sync_targets=syncing)
        if self._stop.is_set():
            self._pipeline.stop()
        self._pipeline.run(drain=drain)
        log.info("stopped after storing %d events", self._pipeline.events_stored,
                 extra={"events": self._pipeline.events_stored})


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (SourceError, TargetError)) and not getattr(exc, "fatal", False)
