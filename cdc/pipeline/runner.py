"""The daemon's main loop: read sources, store versioned events, apply targets, acknowledge.

Each source is read by its own thread into one bounded queue, so that a slow target slows
the sources down instead of growing memory. The main thread stores changes in the state
store in batches (a large transaction reaches disk as it arrives), and at every checkpoint
applies to each target the wholly stored transactions it does not hold yet (the events
just stored, from memory; older ones from the event log), makes the targets durable, and
only then acknowledges the sources. Anything read twice after a restart or reconnection
is dropped by position.
"""

from __future__ import annotations

import bisect
import json
import logging
import operator
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdc.config import Settings
from cdc.errors import CdcError, SourceError
from cdc.logs import one_line
from cdc.metrics import Metrics
from cdc.model import (
    REVIEW_SOURCE,
    Event,
    Idle,
    RowChange,
    TableShape,
    TxnBegin,
    TxnCommit,
    WriteBack,
    backfill_source,
    sync_source,
)
from cdc.pipeline import bad_rows
from cdc.pipeline.entities import EntitySync
from cdc.pipeline.versioner import Versioner
from cdc.sources.base import Source, SourceItem
from cdc.state.store import NOWHERE, WHOLE_TRANSACTION, Position, StateStore
from cdc.targets import Target
from cdc.values import dumps_row

log = logging.getLogger("cdc.pipeline")

QUEUE_BATCHES = 8  # batches of up to 1,000 changes waiting between a source and the store
PRUNE_EVERY_SECONDS = 60.0
PRUNE_BATCH = 2000  # events deleted per state store transaction
PRUNE_BUDGET_SECONDS = 0.5
RECENT_EVENTS = 10_000  # stored events kept in memory per source, for the targets that keep up
_POSITION = operator.attrgetter("position")  # an event's position, for bisecting the recent events


@dataclass
class _SourceRun:
    source: Source
    versioner: Versioner
    stored: Position = NOWHERE
    complete_txn: str = ""
    txn: TxnBegin | None = None
    seq: int = 0
    to_ack: str | None = None
    write_back: WriteBack | None = None  # the transaction is cdc's own write into this source
    write_back_noted: bool = False
    acked: str | None = None
    idle_at: str | None = None
    drained: bool = False
    pending: list[tuple[int, RowChange]] = field(default_factory=list)
    recent: list[Event] = field(default_factory=list)  # every stored event after recent_from, in order
    recent_from: Position = NOWHERE


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        sources: list[Source],
        targets: list[Target],
        on_conflict: Callable[[dict], None] | None = None,
        sync_targets: dict[str, Target] | None = None,
        metrics: Metrics | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_conflict = on_conflict
        self.metrics = metrics or Metrics()
        self.on_ready = on_ready
        self.last_loop = time.monotonic()  # the main loop's heartbeat (systemd's watchdog)
        self.store = store
        self.targets = targets
        self.sync_targets = sync_targets or {}  # member source -> the target writing synced rows into it
        self.sync = EntitySync(settings, store)
        self.runs = {
            source.name: _SourceRun(source, Versioner(settings, store, source.name, on_conflict, self.sync))
            for source in sources
        }
        self._queue: queue.Queue[tuple[str, list[SourceItem] | BaseException]] = queue.Queue(QUEUE_BATCHES)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.events_stored = 0
        self.drained = False

    def stop(self) -> None:
        self._stop.set()

    # -- running -------------------------------------------------------------------

    def run(self, drain: bool = False) -> None:
        """Stream until ``stop()`` (or, with ``drain``, until every source is drained)."""
        for target in self._all_targets():
            target.open()
        for name, run in self.runs.items():
            state = self.store.source_state(name)
            run.stored, run.complete_txn = state.stored, state.complete_txn
            run.recent_from = state.stored  # what was stored before is in the event log only
            run.source.start(state.acked or state.complete_resume, drain)
            thread = threading.Thread(target=self._read, args=(run,), name=f"source-{name}", daemon=True)
            self._threads.append(thread)
        self.checkpoint()
        for thread in self._threads:
            thread.start()
        for name in self.runs:
            self.metrics.source_up.labels(name).set(1)
        if self.on_ready is not None:
            self.on_ready()
        try:
            self._loop(drain)
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=10)
            for run in self.runs.values():
                run.source.close()
            for target in self._all_targets():
                target.close()

    def _read(self, run: _SourceRun) -> None:
        try:
            while not self._stop.is_set():
                items = run.source.read(0.5)
                while items and not self._stop.is_set():
                    try:
                        self._queue.put((run.source.name, items), timeout=1.0)
                        break
                    except queue.Full:
                        run.source.keepalive()
        except BaseException as exc:  # handed to the main thread, which decides
            self._queue.put((run.source.name, exc))

    def _loop(self, drain: bool) -> None:
        interval = self.settings.pipeline.flush_interval_seconds
        last_checkpoint, last_prune = time.monotonic(), 0.0  # prune at the first checkpoint too
        while not self._stop.is_set():
            self.last_loop = time.monotonic()
            self.metrics.queue_depth.set(self._queue.qsize())
            try:
                name, payload = self._queue.get(timeout=interval)
            except queue.Empty:
                name, payload = "", []
            if isinstance(payload, BaseException):
                if isinstance(payload, Exception) and not isinstance(payload, CdcError):
                    raise SourceError(
                        f"source {name}: cannot read the stream: {type(payload).__name__}: {one_line(payload)}",
                        fatal=True,
                    ) from payload
                raise payload
            if payload:
                self._consume(self.runs[name], payload)
            # a checkpoint at once when the sources have nothing more to give (low latency when
            # quiet), at most every ``interval`` while they do (large batches when busy)
            quiet = self._queue.empty() and any(run.to_ack is not None for run in self.runs.values())
            if quiet or time.monotonic() - last_checkpoint >= interval or (drain and self._all_drained()):
                self.checkpoint()
                last_checkpoint = time.monotonic()
                if last_checkpoint - last_prune >= PRUNE_EVERY_SECONDS:
                    self.prune()
                    last_prune = time.monotonic()
                if drain and self._all_drained():
                    log.info("drained: every source is read up to its end position")
                    self.drained = True
                    return
        self.checkpoint()

    def _all_drained(self) -> bool:
        return all(run.drained and run.txn is None for run in self.runs.values())

    def _consume(self, run: _SourceRun, items: list[SourceItem]) -> None:
        batch = self.settings.pipeline.store_batch
        for item in items:
            if type(item) is RowChange:  # the usual item first: one type() per change
                seq = run.seq
                run.seq += 1
                if run.txn is not None and (run.txn.txn_key, seq) > run.stored:
                    run.pending.append((seq, item))
                    if len(run.pending) >= batch:
                        self._store(run)
            elif type(item) is TxnBegin:
                run.txn, run.seq = item, 0
                run.write_back, run.write_back_noted = None, False
            elif type(item) is WriteBack:
                self._store(run)  # what came before the marker is not an echo
                run.write_back = item
            elif type(item) is TableShape:
                self._store(run)  # the changes before it have the old columns
                run.versioner.shape(item)
            elif type(item) is TxnCommit:
                self._store(run, commit=item)
            elif type(item) is Idle:
                if item.reached == "drained":
                    run.drained = True
                if run.txn is None:
                    run.idle_at = item.resume_position
                    self.metrics.lag_seconds.labels(run.source.name).set(0)

    def _store(self, run: _SourceRun, commit: TxnCommit | None = None) -> None:
        txn = run.txn
        if txn is None:
            return
        name = run.source.name
        already_complete = txn.txn_key <= run.complete_txn
        note_write_back = run.write_back is not None and not run.write_back_noted and not already_complete
        if run.pending or (commit and not already_complete) or note_write_back:
            stored: list[Event] = []
            with self.store.transaction():
                if note_write_back:
                    assert run.write_back is not None  # note_write_back says so
                    self.sync.echoed(name, run.write_back)
                    run.write_back_noted = True
                echo = run.write_back is not None
                if run.pending:
                    stored = run.versioner.version_all(txn, run.pending, echo)
                    self.store.set_stored(name, txn.txn_key, run.pending[-1][0])
                if commit and not already_complete:
                    self.store.mark_complete(name, txn.txn_key, txn.position, commit.resume_position)
            self.events_stored += len(run.pending)
            self._count(name, run.pending)
            self.metrics.lag_seconds.labels(name).set(max(0.0, time.time() - txn.commit_ts.timestamp()))
            if run.pending:
                run.stored = max(run.stored, (txn.txn_key, run.pending[-1][0]))
            _remember(run, stored)
            run.pending.clear()
        if commit:
            run.complete_txn = max(run.complete_txn, txn.txn_key)
            run.stored = max(run.stored, (txn.txn_key, WHOLE_TRANSACTION))
            run.to_ack = commit.resume_position
            run.idle_at = None
            run.txn = None

    # -- checkpoints ---------------------------------------------------------------

    def checkpoint(self) -> None:
        """Apply what is wholly stored to every target, make targets durable, acknowledge sources."""
        held = self.store.held_keys()
        applied: dict[tuple[str, str], Position] = {}
        for name, run in self.runs.items():
            for target in self.targets:
                self._apply(target, name, run.complete_txn, held, applied, run=run)
        review = self.store.last_txn(REVIEW_SOURCE)  # rows resolved by hand
        for target in self.targets if review else ():
            self._apply(target, REVIEW_SOURCE, review, held, applied)
        for name in self.runs:  # rows re-read by 'cdc backfill', after what the stream gave
            pseudo = backfill_source(name)
            last = self.store.last_txn(pseudo)
            for target in self.targets if last else ():

                def stale(doc: dict[str, Any], target: str = target.name) -> bool:
                    return backfill_stale(self.store, doc, target)

                self._apply(target, pseudo, last, held, applied, skip=stale)
        if self.sync_targets:
            with self.store.transaction():
                self.sync.take_reviews()
        for member, target in self.sync_targets.items():
            pseudo = sync_source(member)
            self._apply(
                target,
                pseudo,
                self.store.last_txn(pseudo),
                {},
                applied,
                skip=lambda doc: self.sync.not_to_write(doc, held),
            )
        for target in self._all_targets():
            target.checkpoint()
        self.metrics.checkpointed()
        acknowledged: list[tuple[str, str]] = []
        for name, run in self.runs.items():
            position = run.idle_at or run.to_ack
            if position is not None and position != run.acked:
                run.source.acknowledge(position)
                acknowledged.append((name, position))
                run.acked = position
            run.to_ack = None
            self._forget_applied(run)
        if applied or acknowledged:
            with self.store.transaction():
                for (target_name, source), target_position in applied.items():
                    self.store.record_target_position(target_name, source, target_position)
                for name, position in acknowledged:
                    self.store.set_acked(name, position)

    def _forget_applied(self, run: _SourceRun) -> None:
        """Drop from memory the events every target holds."""
        name = run.source.name
        floor = min(
            (target.position(name) or NOWHERE for target in self.targets),
            default=(run.complete_txn, WHOLE_TRANSACTION),
        )
        applied = bisect.bisect_right(run.recent, floor, key=_POSITION)
        if applied:
            run.recent_from = max(run.recent_from, run.recent[applied - 1].position)
            del run.recent[:applied]

    def _count(self, source: str, pending: list[tuple[int, RowChange]]) -> None:
        counts = Counter((change.schema, change.table, change.op) for _, change in pending)
        for (schema, table, op), count in counts.items():
            self.metrics.events.labels(source, f"{schema}.{table}", op).inc(count)

    def prune(self) -> int:
        """Drop events past ``event_log.retain_days`` in short transactions, for at most
        ``PRUNE_BUDGET_SECONDS`` at a time, so that streaming never waits long for it."""
        cutoff = time.time() - self.settings.event_log.retain_days * 86400
        deadline = time.monotonic() + PRUNE_BUDGET_SECONDS
        pruned = 0
        while time.monotonic() < deadline:
            with self.store.transaction():
                count = self.store.prune_events(cutoff, PRUNE_BATCH)
            pruned += count
            if count < PRUNE_BATCH:
                break
        if pruned:
            log.info(
                "pruned %d events older than %g days from the event log",
                pruned,
                self.settings.event_log.retain_days,
                extra={"pruned": pruned},
            )
        return pruned

    def _all_targets(self) -> list[Target]:
        return [*self.targets, *self.sync_targets.values()]

    def _apply(
        self,
        target: Target,
        source: str,
        upto_txn: str,
        held: dict[tuple[str, str, str, str], Position],
        applied: dict[tuple[str, str], Position],
        skip: Callable[[dict], bool] | None = None,
        run: _SourceRun | None = None,
    ) -> None:
        """Apply to ``target`` the events of ``source`` after its position up to ``upto_txn``:
        from memory (``run``'s recent events) once the target holds what came before them,
        else from the event log."""
        position = target.position(source) or NOWHERE
        if not upto_txn or position[0] > upto_txn:
            return
        limit = target.batch_size
        while True:
            if run is not None and position >= run.recent_from:
                events = _recent_after(run.recent, position, upto_txn, limit)
            else:
                events = self.store.events_after(source, position, upto_txn, limit)
            if not events:
                break
            for event in events:
                since = held.get((event.source, event.schema, event.table, event.key_json)) if held else None
                event.held = since is not None and event.position >= since
                if skip is not None and not event.held:
                    event.held = skip(json.loads(event.doc))
            started = time.perf_counter()
            holding = self.settings.pipeline.on_bad_row == "hold"
            bad_rows.apply(target, source, events, held, self.store, self._on_conflict, holding)
            self.metrics.apply_seconds.labels(target.name).observe(time.perf_counter() - started)
            position = events[-1].position
            applied[(target.name, source)] = position
            if len(events) < limit:
                break


def _remember(run: _SourceRun, stored: list[Event]) -> None:
    """Keep the events just stored in memory for the targets, at most ``RECENT_EVENTS`` of them
    (the older ones are then read back from the event log by a target that is behind)."""
    run.recent.extend(stored)
    excess = len(run.recent) - RECENT_EVENTS
    if excess > 0:
        run.recent_from = run.recent[excess - 1].position
        del run.recent[:excess]


def _recent_after(recent: list[Event], after: Position, upto_txn: str, limit: int) -> list[Event]:
    """The events in ``recent`` after position ``after`` in transactions up to ``upto_txn``."""
    start = bisect.bisect_right(recent, after, key=_POSITION)
    end = bisect.bisect_right(recent, (upto_txn, WHOLE_TRANSACTION), key=_POSITION)
    return recent[start : min(end, start + limit)]


def backfill_stale(store: StateStore, doc: dict[str, Any], target: str) -> bool:
    """Whether the daemon must not write a re-read row into ``target``: meant for another target,
    or the stream holds a change of the row committed at or after the read began."""
    backfill = doc["backfill"]
    if backfill["target"] not in (None, target):
        return True
    last = store.row_last_txn(doc["source"], doc["schema"], doc["table"], dumps_row(doc["key"]))
    return last is not None and last >= backfill["read_at"]
