"""The natural keys of one state store transaction, settled together before it commits.

Noting a natural key and asking who else holds it, change by change, costs a statement per
change. Instead the detector notes each change's natural keys here as it goes (``drop`` a
row's keys, ``hold`` a key for a row), and before the transaction commits the batch is
settled at once: the holders already stored of the keys it holds are read in one query per
table and key columns (``lookups``), the noted operations are replayed in order over them
(``settle``), so that each held key meets exactly the owner it would have met change by
change, and the outcome is written in two statements.

The natural keys of rows that were in a table before cdc are read once (``cdc.ops.seed_keys``)
and stored with ``existing_holder`` in place of an event id: ``existing_row_change`` is such a
row as the rules see it, and ``existing_duplicate`` the conflict of two of them holding the
same key at that read. Pure: no I/O here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from cdc.conflicts.model import Change, Conflict
from cdc.conflicts.rules import duplicate_natural_key

Table = tuple[str, str]  # schema, table
Row = tuple[Table, str]  # table, key
StoredRow = tuple[str, str, str, str, str, str]  # schema, table, names JSON, values JSON, key, event id


class StoredHolder(NamedTuple):
    """A row holding a natural key in the state store before this batch."""

    key: str
    event_id: str


class HeldKey(NamedTuple):
    """A natural key a change gave its row; ``report`` False for changes only noted (snapshots, echoes)."""

    stored: StoredRow  # as the state store keeps it
    names: tuple[str, ...]
    values: tuple[Any, ...]
    change: Change
    position: tuple[str, int]
    report: bool

    @property
    def table(self) -> Table:
        return (self.stored[0], self.stored[1])

    @property
    def names_json(self) -> str:
        return self.stored[2]

    @property
    def values_json(self) -> str:
        return self.stored[3]

    @property
    def key(self) -> str:
        return self.stored[4]


held_key = functools.partial(tuple.__new__, HeldKey)  # HeldKey of one tuple of its fields, made without a Python call
Owner = StoredHolder | HeldKey


@dataclass(slots=True)
class Settled:
    """What a batch comes to: each held key that another row held first, with that row's
    holding; the held keys no other row held; the rows whose stored keys go; the keys to store."""

    owned: list[tuple[HeldKey, Owner]] = field(default_factory=list)
    unowned: list[HeldKey] = field(default_factory=list)
    dropped_rows: list[Row] = field(default_factory=list)
    kept: list[StoredRow] = field(default_factory=list)


class NaturalKeyBatch:
    """The natural-key operations of one transaction, in the order the changes came."""

    __slots__ = ("_drops", "_ops")

    def __init__(self) -> None:
        self._ops: list[HeldKey | Row] = []
        self._drops = 0

    def __bool__(self) -> bool:
        return bool(self._ops)

    def drop(self, table: Table, key: str) -> None:
        """The row holds none of its natural keys any more (before it is given its new ones)."""
        self._ops.append((table, key))
        self._drops += 1

    def hold(self, held: HeldKey) -> None:
        self._ops.append(held)

    def lookups(self) -> dict[tuple[Table, str], list[str]]:
        """(table, names JSON) -> the values JSON held in this batch, whose stored holders ``settle`` needs."""
        found: dict[tuple[Table, str], dict[str, None]] = {}
        for op in self._ops:
            if type(op) is HeldKey:
                schema, table, names, values = op.stored[:4]
                found.setdefault(((schema, table), names), {})[values] = None
        return {group: list(values) for group, values in found.items()}

    def settle(self, stored: dict[tuple[Table, str, str], list[StoredHolder]]) -> Settled:
        """Replay the batch over ``stored``: (table, names JSON, values JSON) -> the rows holding
        that key before the batch, in the order the first is to be taken as owner."""
        if not stored and not self._drops and self._all_distinct():  # the usual case: nothing to replay
            held = cast("list[HeldKey]", self._ops)  # no drops: every op holds a key
            return Settled([], held, [], [op.stored for op in held])
        # a row's generation grows with each drop: a holding noted at an older one is over
        generation: dict[Row, int] = {}
        holders: dict[tuple[Table, str, str], list[tuple[str, Owner, int]]] = {
            entry: [(holder.key, holder, 0) for holder in same] for entry, same in stored.items()
        }
        settled = Settled()
        dropped: dict[Row, None] = {}
        for op in self._ops:
            if type(op) is not HeldKey:
                row = cast(Row, op)
                generation[row] = generation.get(row, 0) + 1
                dropped[row] = None
                continue
            schema, table, names, values, key, _ = op.stored
            entry = ((schema, table), names, values)
            same = holders.setdefault(entry, [])
            owner = next(
                (
                    holder
                    for other, holder, noted in same
                    if other != key and generation.get((entry[0], other), 0) == noted
                ),
                None,
            )
            same.append((key, op, generation.get((entry[0], key), 0)))
            if owner is None:
                settled.unowned.append(op)
            else:
                settled.owned.append((op, owner))
        settled.dropped_rows = list(dropped)
        settled.kept = [
            holder.stored
            for same in holders.values()
            for key, holder, noted in same
            if type(holder) is HeldKey and generation.get((holder.table, key), 0) == noted
        ]
        return settled

    def _all_distinct(self) -> bool:
        """Whether no two keys held in the batch are the same (the usual case)."""
        # by values alone: the same values of another table or key taken for a repeat costs a replay, nothing else
        held = cast("list[HeldKey]", self._ops)  # asked only when the batch has no drops
        return len({op.stored[3] for op in held}) == len(held)


EXISTING_ROWS = "existing rows"  # the rule of a duplicate found among the rows read before cdc streamed
_EXISTING = "existing@"


def existing_holder(read_at: int) -> str:
    """The event id stored for a natural key of a row that existed before cdc, read at ``read_at`` (Unix time)."""
    return f"{_EXISTING}{read_at}"


def is_existing_holder(event_id: str) -> bool:
    return event_id.startswith(_EXISTING)


def existing_row_change(
    source: str, table: Table, key: str, names: tuple[str, ...], values: tuple[Any, ...], holder: str
) -> Change:
    """A row read before cdc streamed (``holder`` from ``existing_holder``), as the rules see
    it: its natural key ``names`` and their values, at the time of that read."""
    qualified = f"{table[0]}.{table[1]}"
    read_at = datetime.fromtimestamp(int(holder[len(_EXISTING) :]), UTC)
    return Change(
        f"existing:{source}:{qualified}:{key}:{','.join(names)}",  # one per row and natural key, whenever read
        source,
        qualified,
        key,
        "existing",
        None,
        dict(zip(names, values)),
        read_at,
        None,
        EXISTING_ROWS,
        frozenset(names),
    )


def existing_duplicate(
    source: str, table: Table, names: tuple[str, ...], values: tuple[Any, ...], owner: str, key: str, holder: str
) -> Conflict:
    """Rows ``owner`` and ``key`` both held the natural key when cdc first read the table."""
    first = existing_row_change(source, table, owner, names, values, holder)
    second = existing_row_change(source, table, key, names, values, holder)
    shown = ", ".join(f"{n}={v}" for n, v in zip(names, values))
    return replace(
        duplicate_natural_key(second, first, names, values),
        rule=EXISTING_ROWS,
        explanation=f"{second.table} {key} has {shown}, which {owner} has too: both rows were there when"
        f" cdc first read the table's natural keys at {second.commit_ts:%H:%M:%S} UTC",
    )
