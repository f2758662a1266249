"""``cdc replay``: send a slice of the event log again to one database target.

The events matching the filters (source, table, key, commit time) are applied in the order
they were logged, as upserts and deletes by key, without moving the target's stream
position: replaying a range twice leaves the same rows. A batch the target refuses is
retried event by event so that every failing row is reported with its key and the reason,
and the others still land.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cdc.config import Settings, TargetSettings
from cdc.errors import ReplayError
from cdc.model import Event
from cdc.progress import Progress
from cdc.state.store import StateStore
from cdc.targets import TargetError, make_target


@dataclass(frozen=True, slots=True)
class EventFilter:
    source: str | None = None
    table: str | None = None
    key: dict[str, str] = field(default_factory=dict)
    since: str | None = None
    until: str | None = None

    def as_query(self) -> dict[str, Any]:
        return {"source": self.source, "table": self.table, "key": self.key, "since": self.since, "until": self.until}


@dataclass
class ReplayResult:
    tables: dict[str, int]  # "schema.table" -> events
    sent: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"event_id", "table", "key", "reason"}


def replay_target(settings: Settings, name: str) -> TargetSettings:
    for target in settings.targets:
        if target.name == name:
            if target.kind == "jsonl":
                raise ReplayError(
                    f"target {name} is a jsonl log, which keeps every event once: replay into a"
                    " database target, or read the log with 'cdc events'"
                )
            return target
    known = ", ".join(t.name for t in settings.targets) or "none"
    raise ReplayError(f"no target named {name!r} in the configuration (targets: {known})")


def replay(
    settings: Settings,
    store: StateStore,
    target_name: str,
    selection: EventFilter,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ReplayResult:
    """Send the selected events to the target (or, ``dry_run``, only count them)."""
    target_settings = replay_target(settings, target_name)
    result = ReplayResult(store.count_replayable(**selection.as_query()))
    if dry_run:
        return result
    target = make_target(target_settings, store)
    target.open()
    try:
        after = 0
        while True:
            events = store.replayable(after_log_id=after, limit=target_settings.batch_size, **selection.as_query())
            if not events:
                break
            _send(target, events, result)
            after = events[-1].log_id
            if progress is not None:
                progress.add(len(events))
    finally:
        target.close()
    return result


def _send(target: Any, events: list[Event], result: ReplayResult) -> None:
    """Apply events source by source in log order; on a refusal, one by one to name each failure."""
    run: list[Event] = []
    for event in events:
        if run and event.source != run[0].source:
            _apply(target, run, result)
            run = []
        run.append(event)
    if run:
        _apply(target, run, result)


def _apply(target: Any, events: list[Event], result: ReplayResult) -> None:
    try:
        target.apply(events[0].source, events, record=False)
        result.sent += len(events)
        return
    except TargetError as exc:
        if not exc.fatal:
            raise
    for event in events:
        try:
            target.apply(event.source, [event], record=False)
            result.sent += 1
        except TargetError as exc:
            if not exc.fatal:
                raise
            result.failed.append(
                {
                    "event_id": event.event_id,
                    "table": f"{event.schema}.{event.table}",
                    "key": json.dumps(event.key, ensure_ascii=False, default=str),
                    "reason": str(exc),
                }
            )
