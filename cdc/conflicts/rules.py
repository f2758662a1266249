"""The detection rules (the README's conflict taxonomy), as pure functions of a row's recent history.

``detect`` sees one new change of a row, the previous change the daemon recorded for that
row (however old), and the row's changes within the detection window; it returns the
conflicts that change causes. Bookkeeping columns (version, writer and ``ignore_columns``)
are left out of the field comparisons.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from cdc.conflicts.model import Change, Conflict, TableRules

SEVERITY = {
    "lost_update": "error",
    "concurrent_overwrite": "warning",
    "duplicate_key": "error",
    "update_delete": "warning",
    "state_regression": "warning",
    "divergence": "warning",
    "stream_gap": "critical",
    "bad_row": "error",
}


def detect(
    change: Change,
    previous: Change | None,
    recent: Sequence[Change],
    rules: TableRules,
    window: timedelta,
    live: bool | None = None,
    unseen: frozenset[str] | None = None,
) -> list[Conflict]:
    """The conflicts ``change`` causes; ``recent`` holds the row's earlier changes, oldest first.

    ``live`` says whether the row existed before the change (None: as ``previous`` shows);
    a truncate or a primary-key change ends a row without a delete event. ``unseen`` are
    columns a schema change touched after ``previous``: its image holds no value of theirs
    to compare with.
    """
    op = change.op
    if previous is None and not recent and op == "insert":
        return []  # a new row: nothing to compare it with
    if live is None:
        live = previous is not None and previous.op != "delete"
    in_window = _updates_within(change, recent, window)
    found: list[Conflict] = []
    gap = stream_gap(change, previous if live else None, unseen)
    if gap:
        found.append(gap)
    if op == "insert" and live and previous is not None:
        found.append(
            _conflict(
                "duplicate_key",
                change,
                (previous, change),
                tuple(sorted(json.loads(change.key))),
                "an insert of a key that belongs to a live row",
                f"{_who(change)} inserted {change.table} {change.key}, which already existed "
                f"(last written by {_who(previous)} at {_time(previous)})",
            )
        )
    if op == "update":
        lost = (
            None
            if previous is None
            else lost_update(  # (only a previous update can be reverted)
                change,
                previous,
                rules,
                within_window=previous.op == "update" and any(e.event_id == previous.event_id for e in in_window),
            )
        )
        if lost:
            found.append(lost)
        if in_window:
            found += concurrent_overwrites(change, in_window, rules, exclude=lost)
        regression = state_regression(change, rules) if rules.status_column else None
        if regression:
            found.append(regression)
    elif op == "delete":
        deleted = update_delete(change, in_window, rules)
        if deleted:
            found.append(deleted)
    return found


def _updates_within(change: Change, recent: Sequence[Change], window: timedelta) -> list[Change]:
    """The updates of ``recent`` within the window before ``change``: the only earlier changes
    of the window that rules compare (none, the usual case of a row's first update, needs no clock)."""
    updates = [e for e in recent if e.op == "update"]
    if not updates:
        return updates
    since = change.commit_ts - window
    return [e for e in updates if e.commit_ts >= since and e.event_id != change.event_id]


def stream_gap(change: Change, previous: Change | None, unseen: frozenset[str] | None = None) -> Conflict | None:
    """A before-image unlike the last after-image recorded (but for the ``unseen`` columns): changes were missed."""
    if change.op not in ("update", "delete") or previous is None:
        return None
    if change.before_text is not None and change.before_text == previous.after_text:
        return None  # the same text: the same image (the usual case, found without reading either)
    before, recorded = change.before, previous.after
    if before is None or recorded is None:
        return None
    if before.keys() == recorded.keys():  # the usual case: the same columns
        differing = tuple(sorted(name for name, value in before.items() if value != recorded[name]))
    else:
        differing = tuple(
            sorted(name for name in before.keys() | recorded.keys() if before.get(name) != recorded.get(name))
        )
    if unseen:
        differing = tuple(name for name in differing if name not in unseen)
    if not differing:
        return None
    return _conflict(
        "stream_gap",
        change,
        (previous, change),
        differing,
        "the before-image differs from the last after-image recorded",
        f"{change.table} {change.key}: {', '.join(differing)} changed without cdc seeing it "
        f"between {_time(previous)} and {_time(change)}",
        evidence={"recorded": _subset(previous.after, differing), "before": _subset(change.before, differing)},
    )


def lost_update(change: Change, previous: Change, rules: TableRules, within_window: bool = True) -> Conflict | None:
    """(b) a stale full-row save reverted the previous write (only when that write is
    ``within_window``), else (a) the version column did not advance."""
    if change.op != "update" or previous.op == "delete" or not previous.has_after or not change.has_after:
        return None
    return _stale_save(change, previous, rules, within_window) or _version_not_advanced(change, previous, rules)


def _stale_save(change: Change, previous: Change, rules: TableRules, within_window: bool) -> Conflict | None:
    if (
        not within_window
        or not previous.has_before
        or _identity(change, rules, strict=True) == _identity(previous, rules, strict=True)
    ):
        return None
    mine = change.changed - rules.bookkeeping
    theirs = previous.changed - rules.bookkeeping
    if not theirs or not (mine - theirs):
        return None
    if not all(change.after_value(f) == previous.before_value(f) != previous.after_value(f) for f in theirs):
        return None
    fields = tuple(sorted(theirs))
    return _conflict(
        "lost_update",
        change,
        (previous, change),
        fields,
        "a stale full-row save reverted the previous write",
        f"{', '.join(fields)} set by {_who(previous)} at {_time(previous)} was reverted by "
        f"{_who(change)} at {_time(change)} from a copy read before it",
        evidence={"lost": _subset(previous.after, fields), "restored": _subset(change.after, fields)},
    )


def _version_not_advanced(change: Change, previous: Change, rules: TableRules) -> Conflict | None:
    column = rules.version_column
    if not column:
        return None
    old, new = previous.after_value(column), change.after_value(column)
    if old is None or new is None or _advanced(old, new):
        return None
    return _conflict(
        "lost_update",
        change,
        (previous, change),
        (column,),
        "version_column did not advance (a write based on a stale read)",
        f"{_who(change)} wrote {change.table} {change.key} at {_time(change)} with "
        f"{column} {new}, not past {old} written by {_who(previous)} at {_time(previous)}: "
        "it was based on a stale read",
        evidence={"previous_version": old, "new_version": new},
    )


def concurrent_overwrites(
    change: Change, in_window: Sequence[Change], rules: TableRules, exclude: Conflict | None = None
) -> list[Conflict]:
    """Another writer changed one of the same fields within the window (an insert sets fields
    but changes none, so creating a row and another writer's first edit do not conflict)."""
    if change.op != "update":
        return []
    found = []
    for earlier in reversed(in_window):
        if earlier.op != "update" or _identity(earlier, rules) == _identity(change, rules):
            continue
        mine = change.changed - rules.bookkeeping
        if exclude is not None and any(earlier.event_id == e.event_id for e in exclude.events):
            continue
        fields = tuple(sorted(mine & (earlier.changed - rules.bookkeeping)))
        if fields:
            found.append(
                _conflict(
                    "concurrent_overwrite",
                    change,
                    (earlier, change),
                    fields,
                    "two writers changed the same field within the window",
                    f"{', '.join(fields)} set by {_who(earlier)} at {_time(earlier)} was overwritten by "
                    f"{_who(change)} at {_time(change)}",
                    evidence={"overwritten": _subset(earlier.after, fields), "written": _subset(change.after, fields)},
                )
            )
            break  # the most recent other writer is the one overwritten
    return found


def update_delete(change: Change, in_window: Sequence[Change], rules: TableRules) -> Conflict | None:
    """A delete within the window of another writer's update of the row.

    A delete's writer column shows the last updater, not the deleter, so the deleting
    transaction is what tells them apart.
    """
    if change.op != "delete":
        return None
    for earlier in reversed(in_window):
        if earlier.op == "update" and (earlier.source, earlier.txid) != (change.source, change.txid):
            fields = tuple(sorted(earlier.changed - rules.bookkeeping))
            return _conflict(
                "update_delete",
                change,
                (earlier, change),
                fields,
                "a delete within the window of another writer's update",
                f"{_who(change)} deleted {change.table} {change.key} at {_time(change)}, "
                f"{_ago(earlier, change)} after {_who(earlier)} updated "
                f"{', '.join(fields) or 'it'}: that update is lost",
                evidence={"updated": _subset(earlier.after, fields)},
            )
    return None


def state_regression(change: Change, rules: TableRules) -> Conflict | None:
    """The status column moved against its configured order."""
    column, order = rules.status_column, rules.status_order
    if not column or change.op != "update":
        return None
    old, new = change.before_value(column), change.after_value(column)
    if old == new or old not in order or new not in order or order.index(new) > order.index(old):
        return None  # the usual case, an unchanged status, is found first
    return _conflict(
        "state_regression",
        change,
        (change,),
        (column,),
        f"{column} moved against status_order",
        f"{change.table} {change.key}: {column} moved back from {old} to {new} ({_who(change)} at {_time(change)})",
        evidence={"from": old, "to": new, "order": list(order)},
    )


def natural_key_values(
    after: dict[str, Any] | None, rules: TableRules, read: Callable[[Any], Any] | None = None
) -> list[tuple[tuple[str, ...], tuple[Any, ...]]]:
    """The natural keys wholly set in a row image (the row after a change); ``read`` turns the
    image's values into the form the event document holds them in, if they are not in it."""
    if after is None:
        return []
    keys = []
    for names in rules.natural_keys:
        values = natural_key_of(after, names, read)
        if values is not None:
            keys.append((names, values))
    return keys


def natural_key_of(
    image: dict[str, Any], names: tuple[str, ...], read: Callable[[Any], Any] | None = None
) -> tuple[Any, ...] | None:
    """The values of the natural key ``names`` in a row image, None unless all are set; ``read``
    as for ``natural_key_values`` (it must leave a text as it is)."""
    if len(names) == 1:  # the usual natural key, one text column: read without loops
        value = image.get(names[0])
        if read is not None and type(value) is not str:
            value = read(value)
        return None if value is None or value == "" else (value,)
    values = tuple(map(image.get, names))
    if read is not None:
        values = tuple(map(read, values))
    return None if None in values or "" in values else values


def duplicate_natural_key(change: Change, owner: Change, names: tuple[str, ...], values: tuple[Any, ...]) -> Conflict:
    """``change`` gave its row a natural key that ``owner``'s live row already holds."""
    shown = ", ".join(f"{n}={v}" for n, v in zip(names, values))
    return _conflict(
        "duplicate_key",
        change,
        (owner, change),
        names,
        "a natural key already belongs to a live row",
        f"{_who(change)} gave {change.table} {change.key} {shown} at {_time(change)}, which "
        f"{owner.table} {owner.key} already has (written by {_who(owner)} at {_time(owner)})",
        evidence={"natural_key": dict(zip(names, values)), "owner_key": owner.key},
    )


# -- helpers ---------------------------------------------------------------------------


def _conflict(
    kind: str,
    change: Change,
    events: tuple[Change, ...],
    fields: tuple[str, ...],
    rule: str,
    explanation: str,
    evidence: dict[str, Any] | None = None,
) -> Conflict:
    return Conflict(kind, SEVERITY[kind], change.table, change.key, fields, events, rule, evidence or {}, explanation)


def _identity(change: Change, rules: TableRules, strict: bool = False) -> tuple:
    """Who wrote a change: the writer column; without one, the source (or, ``strict``, the transaction)."""
    if rules.writer_column:
        return (change.writer,)
    return (change.source, change.txid) if strict else (change.source,)


def _advanced(old: Any, new: Any) -> bool:
    if type(old) is int and type(new) is int:  # the usual version column
        return new > old
    try:
        return float(new) > float(old)
    except (TypeError, ValueError):
        return new != old


def _who(change: Change) -> str:
    if change.op == "delete" or not change.writer:
        return f"{change.source} (transaction {change.txid})"
    return change.writer


def _time(change: Change) -> str:
    return change.commit_ts.strftime("%H:%M:%S")


def _ago(earlier: Change, later: Change) -> str:
    return f"{(later.commit_ts - earlier.commit_ts).total_seconds():.0f}s"


def _subset(image: dict[str, Any] | None, fields: Sequence[str]) -> dict[str, Any]:
    return {name: (image or {}).get(name) for name in fields}
