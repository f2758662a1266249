"""Bad rows: a change a target cannot take, held for a person (``[pipeline] on_bad_row = "hold"``).

A target that cannot store a change (a value its column cannot hold, a row its constraints
refuse) raises ``BadRowError``. With ``on_bad_row = "stop"`` (the default) the daemon stops on
it, with one line naming the target, table, key and column. With ``"hold"`` the change becomes
a pending ``bad_row`` conflict, its reason the explanation, and its key is held from that
change on, as a ``manual`` conflict holds it: no row target gets a later change of the key
until ``cdc conflicts resolve ID --keep EVENT_ID`` (once the cause is fixed) or ``--row JSON``
releases it. Every other key streams on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cdc.conflicts.history import change_from_doc
from cdc.conflicts.model import Conflict
from cdc.conflicts.rules import SEVERITY
from cdc.errors import BadRowError
from cdc.model import Event
from cdc.state.store import Position, StateStore
from cdc.targets import Target
from cdc.values import load_doc

log = logging.getLogger("cdc.pipeline")

BAD_ROW = "bad_row"
HeldKeys = dict[tuple[str, str, str, str], Position]  # (source, schema, table, key) -> held from


def apply(
    target: Target,
    source: str,
    events: list[Event],
    held: HeldKeys,
    store: StateStore,
    on_conflict: Callable[[dict], None] | None,
    holding: bool,
) -> None:
    """``target.apply`` the events. A change the target cannot take stops the daemon with one
    line naming it, or (``holding``) is held as a ``bad_row`` conflict, its key's later changes
    too (in ``held`` as well), and the batch is applied again without them."""
    while True:
        try:
            target.apply(source, events)
            return
        except BadRowError as error:
            index, failure = locate(target, source, events, error)
            bad = events[index]
            if not holding:
                raise BadRowError(
                    f"{describe(target.name, bad, failure)}; fix the cause and start cdc again, or set"
                    ' [pipeline] on_bad_row = "hold" to hold such changes for review',
                    bad.event_id,
                    failure.column,
                ) from None
            hold(store, target.name, bad, failure, on_conflict)
            row = (bad.source, bad.schema, bad.table, bad.key_json)
            held[row] = min(held.get(row, bad.position), bad.position)
            for event in events[index:]:
                if (event.source, event.schema, event.table, event.key_json) == row:
                    event.held = True


def describe(target: str, event: Event, error: BadRowError) -> str:
    """What cannot be applied where, and why, in one line."""
    column = f", column {error.column}" if error.column else ""
    return (
        f"target {target} cannot take the {event.op} of source {event.source} table {event.schema}.{event.table}"
        f" key {event.key_json}{column} (event {event.event_id}): {error}"
    )


def locate(target: Target, source: str, events: list[Event], error: BadRowError) -> tuple[int, BadRowError]:
    """Which of ``events`` ``target`` cannot take, and why: the one ``error`` names, else the first
    that fails when they are applied one at a time (each before it is then applied, with its
    position). ``error`` itself when none fails alone."""
    for index, event in enumerate(events):
        if event.event_id == error.event_id:
            return index, error
    for index, event in enumerate(events):
        try:
            target.apply(source, [event])
        except BadRowError as failure:
            return index, failure
    raise error


def hold(
    store: StateStore, target: str, event: Event, error: BadRowError, on_conflict: Callable[[dict], None] | None
) -> str:
    """Record ``event`` as a pending ``bad_row`` conflict and hold its key from it on; its id."""
    conflict_id = f"{BAD_ROW}:{event.event_id}"
    change = change_from_doc(load_doc(event.doc), event.key_json)
    explanation = (
        f"{describe(target, event, error)}; fix the cause, then run 'cdc conflicts resolve {conflict_id}"
        f" --keep {event.event_id}' (or --row JSON with the row to write)"
    )
    conflict = Conflict(
        BAD_ROW,
        SEVERITY[BAD_ROW],
        change.table,
        event.key_json,
        (error.column,) if error.column else (),
        (change,),
        "bad row",
        {"target": target, "reason": str(error)},
        explanation,
    )
    with store.transaction():
        store.add_conflict(conflict_id, event.source, conflict, "pending", None)
        store.hold(event.source, event.schema, event.table, event.key_json, conflict_id, event.position)
    log.error(
        "bad_row conflict: %s",
        explanation,
        extra={"conflict": conflict_id, "source": event.source, "severity": "error", "status": "pending"},
    )
    if on_conflict is not None:
        on_conflict(store.conflicts(conflict_id=conflict_id)[0])
    return conflict_id
