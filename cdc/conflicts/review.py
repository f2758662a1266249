"""The review queue: a person resolves a held conflict (``cdc conflicts resolve``).

The resolved row becomes an event of the ``review`` pseudo-source in the event log; the
daemon applies it to the targets at its next checkpoint (it runs in another process and
shares the state store), and the key is released, so later changes flow again.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from cdc import event_doc
from cdc.conflicts.resolution import three_way_merge
from cdc.errors import ReviewError
from cdc.model import REVIEW_SOURCE, Event, make_event_id
from cdc.state.store import StateStore
from cdc.values import dumps_row


def resolve(
    store: StateStore,
    conflict_id: str,
    *,
    keep: str | None = None,
    merge: bool = False,
    row: dict[str, Any] | None = None,
    by: str = "cdc conflicts resolve",
) -> dict[str, Any]:
    """Resolve a conflict by keeping one event's row, merging, or a given row; the resolution."""
    found = store.conflicts(conflict_id=conflict_id)
    if not found:
        raise ReviewError(f"no conflict {conflict_id!r} (see 'cdc conflicts list')")
    record = found[0]
    if record["status"] == "resolved_by_hand":
        raise ReviewError(f"conflict {conflict_id} is already resolved: {json.dumps(record['resolution'])}")
    if sum((keep is not None, merge, row is not None)) != 1:
        raise ReviewError("give exactly one of --keep EVENT_ID, --merge or --row JSON")
    docs = [json.loads(store.event_doc(e["event_id"]) or "null") for e in record["events"]]
    if any(doc is None for doc in docs):
        raise ReviewError(f"the events of conflict {conflict_id} are no longer in the event log")
    last = docs[-1]
    how: dict[str, Any]  # how the row was chosen, part of the resolution
    if keep is not None:
        chosen = next((doc for doc in docs if doc["event_id"] == keep), None)
        if chosen is None:
            ids = ", ".join(doc["event_id"] for doc in docs)
            raise ReviewError(f"event {keep} is not part of conflict {conflict_id} (its events: {ids})")
        resolved, how = chosen["after"], {"kept": keep}
    elif merge:
        first = docs[0]
        if first["before"] is None or first["after"] is None or last["after"] is None:
            raise ReviewError("--merge needs two updates of the row; use --keep or --row")
        resolved, how = three_way_merge(first["before"], first["after"], last["after"]), {"merged": True}
    else:
        missing = [column for column in last["key"] if column not in (row or {})]
        if missing:
            raise ReviewError(f"--row must hold the key column(s) {', '.join(missing)}")
        resolved, how = row, {"row": True}
    resolution = {"policy": "manual", "resolved_row": resolved, "by": by, **how}
    _store_resolution(store, record, last, resolved, resolution)
    return resolution


def _store_resolution(
    store: StateStore,
    record: dict[str, Any],
    last: dict[str, Any],
    resolved: dict[str, Any] | None,
    resolution: dict[str, Any],
) -> None:
    now = datetime.now(UTC)
    txn_key = f"{time.time_ns():020d}"
    event_id = make_event_id(REVIEW_SOURCE, txn_key, 0)
    op = "update" if resolved is not None else "delete"
    key = last["key"] if resolved is None else {column: resolved[column] for column in last["key"]}
    doc = event_doc.render(
        event_id=event_id,
        source=last["source"],
        schema=last["schema"],
        table=last["table"],
        op=op,
        key=dumps_row(key),
        version=last["version"],
        before=last["after"] if resolved is not None else last["before"],
        after=resolved,
        commit_ts=now.isoformat(timespec="microseconds"),
        position=txn_key,
        writer=resolution["by"],
        conflicts=[record["id"]],
    )
    event = Event(
        REVIEW_SOURCE,
        txn_key,
        0,
        event_id,
        last["schema"],
        last["table"],
        op,
        dumps_row(key),
        now.isoformat(timespec="microseconds"),
        doc,
        origin=last["source"],
    )
    with store.transaction():
        store.append([event])
        store.set_conflict_status(record["id"], "resolved_by_hand", resolution)
        store.release(record["id"])
