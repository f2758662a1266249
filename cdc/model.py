"""The event model: row changes read from a source and the versioned events made of them.

A source yields, for every committed transaction, a ``TxnBegin``, its ``RowChange`` s in
commit order, and a ``TxnCommit``. A transaction that cdc itself wrote into the source (syncing an entity) starts with a
``WriteBack``. Between transactions it may yield ``Idle`` with a
position the pipeline may acknowledge once everything before it is durable.

Positions: ``txn_key`` is a source-specific string whose lexicographic order is the order
of transactions in that source (PostgreSQL: the commit LSN as 16 hex digits), and ``seq``
numbers the changes inside a transaction from 0. ``(txn_key, seq)`` is therefore a total
order of a source's changes, used to drop anything already stored or applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdc.values import compact_json, event_row, load_doc


@dataclass(slots=True)
class TxnBegin:
    """Start of a committed source transaction."""

    txn_key: str
    position: str  # human-readable position of the transaction (LSN, GTID, file:pos)
    xid: str | None
    commit_ts: datetime


@dataclass(slots=True)
class TxnCommit:
    """End of a source transaction; ``resume_position`` is what to acknowledge to the source."""

    txn_key: str
    resume_position: str


@dataclass(slots=True)
class Idle:
    """Nothing is pending in the source up to ``resume_position``: it may be acknowledged."""

    resume_position: str
    reached: str = ""  # the position the stream has reached, for --drain


@dataclass(slots=True)
class WriteBack:
    """Marks the transaction it opens as cdc's own write of synced rows into this source.

    ``target`` wrote the events of pseudo-source ``source`` up to ``(txn_key, seq)`` of the
    state store ``installation`` (None: a cdc before installation identities); the
    transaction's row changes are echoes of that write, never new changes.
    """

    target: str
    source: str
    txn_key: str
    seq: int
    installation: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "target": self.target,
                "source": self.source,
                "txn_key": self.txn_key,
                "seq": self.seq,
                "installation": self.installation,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> WriteBack | None:
        """The marker a write-back transaction carries; None if ``text`` is not one."""
        try:
            data = json.loads(text)
            installation = data.get("installation")
            return cls(
                str(data["target"]),
                str(data["source"]),
                str(data["txn_key"]),
                int(data["seq"]),
                None if installation is None else str(installation),
            )
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True, slots=True)
class SourceColumn:
    """A column of a source table: its name and the source's own name of its type
    (PostgreSQL's ``format_type``, e.g. ``character varying(20)``; MariaDB's column type,
    e.g. ``varchar(20)``)."""

    name: str
    type: str


@dataclass(slots=True)
class TableShape:
    """The columns of a captured table as the stream describes them (pgoutput's Relation
    message, the binlog's table map), given before the changes that use them.

    A source gives it whenever it learns a table's columns (the pipeline tells a DDL from a
    repetition by comparing with the shape it recorded). ``filled`` names the columns whose
    existing rows hold values no row event gave (a column added with a default); ``rewrites``
    says the source knows the DDL behind the shape changed existing rows otherwise. The
    pipeline adds what it sees itself (a type changed other than by widening, a renamed
    column) and then has the table read again to bring the targets in line.
    """

    schema: str
    table: str
    columns: tuple[SourceColumn, ...]
    rewrites: bool = False
    filled: frozenset[str] = frozenset()


@dataclass(slots=True)
class RowChange:
    """One row change of a source transaction, values already turned into Python values.

    ``native_before``/``native_after`` optionally carry the source's own text form of the
    values (PostgreSQL's output functions), so that a target of the same kind can store
    them untouched.
    """

    schema: str
    table: str
    op: str
    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    native_before: dict[str, str | None] | None = None
    native_after: dict[str, str | None] | None = None

    def native_form(self) -> dict[str, Any] | None:
        """The key (of the row as it was) and the after image in the source's text form, if it has one."""
        if self.native_after is None and self.native_before is None:
            return None
        image = self.native_before if self.native_before is not None else self.native_after
        key = None if image is None else {column: image.get(column) for column in self.key}
        return {"key": key, "after": self.native_after}


@dataclass(slots=True, eq=False)
class Event:
    """One versioned event, the one shape it has from the versioner to the targets.

    The versioner makes it from a ``RowChange`` (``change``), the state store's event log
    keeps it, and targets apply it: from memory while they keep up, read back from the log
    (``change`` None) when they are behind or a DBA replays it. ``stream`` is what it is
    logged under: a source, or a pseudo-source whose rows belong to ``origin``.
    """

    stream: str
    txn_key: str
    seq: int
    event_id: str
    schema: str
    table: str
    op: str
    key_json: str  # the key's JSON object, as the event log keeps it
    commit_ts: str
    doc: str  # the event's JSON document (the README's form)
    native: dict[str, Any] | None = None  # {"key": {...}, "after": {...}} in the source's text form
    origin: str | None = None  # the source a pseudo-source's row belongs to
    change: RowChange | None = None  # the row change it was made from, while it is in memory
    log_id: int = 0  # its place in the event log, once read back from it
    held: bool = False  # its key waits in the review queue: row targets keep the last agreed row
    _images: RowImages | None = field(default=None, init=False, repr=False)
    _schema_change: Any = field(default=None, init=False, repr=False)  # False: read, none there

    @property
    def schema_change(self) -> dict[str, Any] | None:
        """The ``schema_change`` record the event carries (``SCHEMA_CHANGE_KEY`` of its
        document: the first change of its table after the table's columns changed), if any."""
        found = self._schema_change
        if found is None:
            found = load_doc(self.doc).get(SCHEMA_CHANGE_KEY) if _SCHEMA_CHANGE_TEXT in self.doc else None
            self._schema_change = False if found is None else found
        return found or None

    def carry_schema_change(self, record: dict[str, Any]) -> None:
        """The versioner gives a new event the record its document holds."""
        self._schema_change = record

    @property
    def source(self) -> str:
        """The source whose row this is (what ``table_map`` and the document's ``source`` name)."""
        return self.origin or self.stream

    @property
    def position(self) -> tuple[str, int]:
        return (self.txn_key, self.seq)

    @property
    def key(self) -> dict[str, Any]:
        return json.loads(self.key_json)

    def images(self) -> RowImages:
        """The key, before and after images with the values the document holds (``event_value``),
        taken from the row change while it is in memory, else read from the document once."""
        if self._images is None:
            change = self.change
            if change is not None:
                self._images = RowImages(event_row(change.key) or {}, event_row(change.before), event_row(change.after))
            else:
                doc = load_doc(self.doc)
                self._images = RowImages(doc["key"], doc["before"], doc["after"])
        return self._images


@dataclass(frozen=True, slots=True)
class RowImages:
    """An event's row values as its JSON document holds them (numbers with a fraction as ``Decimal``)."""

    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None


SCHEMA_CHANGE_KEY = "schema_change"
_SCHEMA_CHANGE_TEXT = f'"{SCHEMA_CHANGE_KEY}":'


def make_event_id(source: str, position: str, seq: int) -> str:
    """The event id: stable across restarts and replays (``crm:0/16B3748:3``)."""
    return f"{source}:{position}:{seq}"


_decode_json = json.JSONDecoder().raw_decode


def add_conflict_ids(doc: str, conflict_ids: list[str]) -> str:
    """An event document (JSON text) with ``conflict_ids`` added to its ``conflicts``, the rest of its text as it was."""
    start = doc.rindex('"conflicts":[') + len('"conflicts":')
    present, end = _decode_json(doc, start)
    return f"{doc[:start]}{compact_json(present + conflict_ids)}{doc[end:]}"


def changed_columns(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """Columns whose value differs between the two images, in the after image's order.

    Every column of an inserted row counts as changed; none of a deleted row.
    """
    if after is None:
        return []
    if before is None:
        return list(after)
    return [name for name, value in after.items() if name not in before or before[name] != value]


# Syncing an entity: the rows cdc writes into a member source are the events of the
# pseudo-source "sync:<member>", applied by the member's sync target, whose transactions
# mark themselves (PostgreSQL: a logical message; MySQL: the row of SYNC_POSITION_TABLE,
# written first) so that the member's stream tells them from new changes.
SYNC_MESSAGE_PREFIX = "cdc.sync"
SYNC_POSITION_TABLE = "cdc.sync_positions"


def sync_source(member: str) -> str:
    """The pseudo-source of the rows to write into the member source ``member``."""
    return f"sync:{member}"


REVIEW_SOURCE = "review"  # the pseudo-source of rows resolved by hand


def backfill_source(source: str) -> str:
    """The pseudo-source of the rows re-read from ``source`` (``cdc backfill``)."""
    return f"backfill:{source}"
