"""Version vectors of an entity held by several sources, and how a divergence is resolved (pure).

Every key of an entity (``[[entities]]``) has a vector: per member source, how many of that
source's changes the entity's agreed row includes. Each member has the vector of the row it
holds now (``seen``): its own last change, or the last synced row cdc wrote into it, as its
stream shows. A member's change made on a row holding everything the entity holds is
ordered; one made without having seen another member's change is concurrent: a
``divergence`` (or a ``duplicate_key`` when both inserted the key), resolved by policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cdc.conflicts.resolution import three_way_merge

Vector = dict[str, int]


def dominates(a: Vector, b: Vector) -> bool:
    """Whether ``a`` includes every change ``b`` includes."""
    return all(a.get(source, 0) >= count for source, count in b.items())


def merged(a: Vector, b: Vector) -> Vector:
    return {source: max(a.get(source, 0), b.get(source, 0)) for source in sorted({*a, *b})}


@dataclass(slots=True)
class EntityRow:
    """What cdc knows of one entity key: the agreed row, its vector, and each member's copy."""

    vector: Vector = field(default_factory=dict)
    row: dict[str, Any] | None = None  # the agreed row (None: deleted, or never seen)
    row_event: str | None = None  # the event that made it (for conflict records)
    row_source: str | None = None
    row_ts: str | None = None  # its commit timestamp (ISO-8601)
    seen: dict[str, Vector] = field(default_factory=dict)  # member -> the vector of the row it holds
    sent: dict[str, Vector] = field(default_factory=dict)  # member -> the vector of the last row sent to it

    def to_json(self) -> str:
        return json.dumps(
            {
                "vector": self.vector,
                "row": self.row,
                "row_event": self.row_event,
                "row_source": self.row_source,
                "row_ts": self.row_ts,
                "seen": self.seen,
                "sent": self.sent,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> EntityRow:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            data["vector"],
            data["row"],
            data["row_event"],
            data["row_source"],
            data["row_ts"],
            data["seen"],
            data["sent"],
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a member's change does to its entity key."""

    concurrent: bool
    vector: Vector  # the entity's vector afterwards
    mine: Vector  # the vector of the row the member holds now
    unseen: tuple[str, ...]  # the members whose changes the member had not seen


def observe(state: EntityRow, member: str) -> Outcome:
    """A new change of ``member``: ordered or concurrent, and the vectors it makes."""
    base = state.seen.get(member, {})
    mine = dict(base)
    mine[member] = max(base.get(member, 0), state.vector.get(member, 0)) + 1
    unseen = tuple(
        source for source, count in sorted(state.vector.items()) if source != member and base.get(source, 0) < count
    )
    return Outcome(bool(unseen), merged(state.vector, mine), mine, unseen)


@dataclass(frozen=True, slots=True)
class Side:
    """One of two concurrent versions of an entity row."""

    source: str
    row: dict[str, Any] | None
    commit_ts: str  # ISO-8601
    base: dict[str, Any] | None = None  # the row this side changed (for a three-way merge)


def differing_fields(a: dict[str, Any] | None, b: dict[str, Any] | None, ignore: frozenset[str]) -> list[str]:
    """The columns (held by both rows) whose values differ, bookkeeping columns left out."""
    if a is None or b is None:
        return sorted((a or b or {}).keys() - ignore)
    return sorted(name for name in a.keys() & b.keys() if name not in ignore and not same_value(a[name], b[name]))


def same_value(a: Any, b: Any) -> bool:
    """Equal values, whichever source's form they take (numbers as text, timestamps with or
    without a zone, booleans as 0/1)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    return _normal(a) == _normal(b)


def _normal(value: Any) -> Any:
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    text = str(value)
    try:
        return Decimal(text)
    except InvalidOperation:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def resolve(
    policy: str, mine: Side, theirs: Side, priority: list[str], owners: dict[str, str]
) -> tuple[dict[str, Any] | None, str]:
    """The resolved row of two concurrent versions, and the source that won (``"merged"`` when
    both contributed). ``policy`` is never ``manual`` here."""
    newer, older = (mine, theirs) if _later(mine, theirs, priority) else (theirs, mine)
    if policy == "source_priority":
        first, second = (
            (mine, theirs) if _rank(mine.source, priority) <= _rank(theirs.source, priority) else (theirs, mine)
        )
        if first.row is None or second.row is None or not owners:
            return first.row, first.source
        row = dict(first.row)
        for name, owner in owners.items():
            if owner == second.source and name in second.row:
                row[name] = second.row[name]
        return row, first.source if row == first.row else "merged"
    if policy == "field_merge" and newer.row is not None and older.row is not None and mine.base is not None:
        row = three_way_merge(mine.base, older.row, newer.row)
        return row, newer.source if row == newer.row else "merged"
    return newer.row, newer.source


def _later(mine: Side, theirs: Side, priority: list[str]) -> bool:
    """Last writer wins: the later commit; ties go to the higher priority, then to ``mine``
    (read later from the streams)."""
    mine_ts, theirs_ts = _moment(mine.commit_ts), _moment(theirs.commit_ts)
    if mine_ts != theirs_ts:
        return mine_ts > theirs_ts
    return _rank(mine.source, priority) <= _rank(theirs.source, priority)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _rank(source: str, priority: list[str]) -> int:
    return priority.index(source) if source in priority else len(priority)
