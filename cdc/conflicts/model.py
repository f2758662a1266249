"""What the conflict rules read (a row change as seen by the daemon) and what they report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdc.values import json_value

_UNKNOWN: Any = object()  # an image not held in that form
_decode = json.JSONDecoder().raw_decode


class Change:
    """One versioned row change, with what the rules need of it.

    A change the daemon makes (``of_texts``) holds each row image as the JSON text of its
    event document, and, while it is new, as the source's Python values too. ``before`` and
    ``after`` parse the text on first use; ``before_value`` and ``after_value`` read one
    column without parsing the image where they can. So the rules open no image in the usual
    case, and a row's history in memory (``keep_texts_only``) holds one string per image.
    """

    __slots__ = (
        "_after",
        "_after_values",
        "_before",
        "_before_values",
        "after_text",
        "before_text",
        "changed",
        "commit_ts",
        "earlier",
        "event_id",
        "key",
        "op",
        "source",
        "table",
        "txid",
        "writer",
    )

    def __init__(
        self,
        event_id: str,
        source: str,
        table: str,
        key: str,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        commit_ts: datetime,
        writer: str | None,
        txid: str | None,
        changed: frozenset[str] = frozenset(),
    ) -> None:
        self.event_id = event_id
        self.source = source
        self.table = table  # "schema.table"
        self.key = key  # the key's JSON text
        self.op = op
        self.commit_ts = commit_ts
        self.writer = writer
        self.txid = txid
        self.changed = changed  # the event's "changed" columns (every column of an insert)
        self.before_text: str | None = None  # the images' JSON texts, when known
        self.after_text: str | None = None
        self._before = before  # the images as the event document holds them (JSON values)
        self._after = after
        self._before_values: dict[str, Any] | None = _UNKNOWN  # the images in the source's Python values
        self._after_values: dict[str, Any] | None = _UNKNOWN
        self.earlier: tuple[Change, ...] = ()  # the row's updates before this change that rules still read

    @classmethod
    def of_texts(
        cls,
        event_id: str,
        source: str,
        table: str,
        key: str,
        op: str,
        before_text: str,
        after_text: str,
        commit_ts: datetime,
        writer: str | None,
        txid: str | None,
        changed: frozenset[str],
        before_values: dict[str, Any] | None,
        after_values: dict[str, Any] | None,
    ) -> Change:
        """A new change: its images as JSON texts (``dumps_row``'s) and as the Python values they encode."""
        change = cls.__new__(cls)  # each slot set once: a change is made for every event
        change.event_id, change.source, change.table, change.key, change.op = event_id, source, table, key, op
        change.commit_ts, change.writer, change.txid, change.changed = commit_ts, writer, txid, changed
        change.before_text, change.after_text, change._before, change._after = (
            before_text,
            after_text,
            _UNKNOWN,
            _UNKNOWN,
        )
        change._before_values, change._after_values, change.earlier = before_values, after_values, ()
        return change

    @property
    def before(self) -> dict[str, Any] | None:
        if self._before is _UNKNOWN:
            self._before = _parse(self.before_text)
        return self._before

    @property
    def after(self) -> dict[str, Any] | None:
        if self._after is _UNKNOWN:
            self._after = _parse(self.after_text)
        return self._after

    @property
    def has_before(self) -> bool:
        """Whether there is a before image (without parsing it)."""
        if self._before is not _UNKNOWN:
            return self._before is not None
        return self._before_values is not None if self._before_values is not _UNKNOWN else self.before_text != "null"

    @property
    def has_after(self) -> bool:
        if self._after is not _UNKNOWN:
            return self._after is not None
        return self._after_values is not None if self._after_values is not _UNKNOWN else self.after_text != "null"

    def before_value(self, column: str) -> Any:
        """One column of the before image, as the event document holds it (None: no such column)."""
        if self._before is _UNKNOWN and (values := self._before_values) is not _UNKNOWN:
            return None if values is None else json_value(values.get(column))
        image = self.before
        return None if image is None else image.get(column)

    def after_value(self, column: str) -> Any:
        """One column of the after image, as the event document holds it (None: no such column)."""
        if self._after is _UNKNOWN and (values := self._after_values) is not _UNKNOWN:
            return None if values is None else json_value(values.get(column))
        image = self.after
        return None if image is None else image.get(column)

    def after_is(self, values: dict[str, Any] | None) -> None:
        """The after image is also ``values`` in Python values (found equal by its text)."""
        self._after_values = values

    def keep_texts_only(self) -> None:
        """Let go of the images' other forms where their texts can give them again."""
        if self.before_text is not None:
            self._before, self._before_values = _UNKNOWN, _UNKNOWN
        if self.after_text is not None:
            self._after, self._after_values = _UNKNOWN, _UNKNOWN

    @property
    def author(self) -> str:
        """Who made the change: the writer column's value, else the source and transaction."""
        return self.writer if self.writer is not None else f"{self.source}:{self.txid}"

    def _fields(self) -> tuple:
        return (
            self.event_id,
            self.source,
            self.table,
            self.key,
            self.op,
            self.before,
            self.after,
            self.commit_ts,
            self.writer,
            self.txid,
            self.changed,
        )

    def __eq__(self, other: object) -> bool:
        return self._fields() == other._fields() if isinstance(other, Change) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Change(event_id={self.event_id!r}, table={self.table!r}, key={self.key}, op={self.op!r}, "
            f"writer={self.writer!r}, commit_ts={self.commit_ts.isoformat()})"
        )


def _parse(text: str | None) -> dict[str, Any] | None:
    return None if text is None or text == "null" else _decode(text)[0]


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
    natural_key_columns: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        extra = {c for c in (self.version_column, self.writer_column) if c}
        object.__setattr__(self, "bookkeeping", self.ignore_columns | extra)
        object.__setattr__(self, "natural_key_columns", frozenset(c for k in self.natural_keys for c in k))


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
