"""What the conflict rules read (a row change as seen by the daemon) and what they report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any



@dataclass(frozen=True, slots=True)
class Change:
    """One versioned row change, with what the rules need of it."""

    event_id: str
    source: str
    table: str  # "schema.table"
    key: str  # the key's JSON text
    op: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    commit_ts: datetime
    writer: str | None
    txid: str | None
    changed: frozenset[str] = frozenset()  # the event's "changed" columns (every column of an insert)

    @property
    def author(self) -> str:
        """Who made the change: the writer column's value, else the source and transaction."""
        return self.writer if self.writer is not None else f"{self.source}:{self.txid}"


@dataclass(frozen=True, slots=True)
class TableRules:
    """The per-table settings the rules use (``[[tables]]`` in the configuration)."""

    version_column: str | None = None
    writer_column: str | None = None
    ignore_columns: frozenset[str] = frozenset()
    natural_keys: tuple[tuple[str, ...], ...] = ()
    status_column: str | None = None
    status_order: tuple[str, ...] = ()
    bookkeeping: frozenset[str] = field(init=False, repr=False, compare=False)  # left out of field comparisons

    def __post_init__(self) -> None:
        extra = {c for c in (self.version_column, self.writer_column) if c}
        object.__setattr__(self, "bookkeeping", self.ignore_columns | extra)


@dataclass(frozen=True, slots=True)
class Conflict:
    type: str
    severity: str
    table: str
    key: str
    fields: tuple[str, ...]
    events: tuple[Change, ...]  # the earlier write(s) first, the one that fired the rule last
    rule: str
    evidence: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""
