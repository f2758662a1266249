"""Each row's recent history, as the rules read it: its last change with the earlier updates
still within the window.

The rows changed lately are kept in memory, in two generations (the rows changed lately,
and those changed before them, dropped whole when the newer is full: a cheap LRU cache);
the history of a row not held is read from the event log, for a whole batch at once
(``read_ahead``) or, failing that, row by row.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cdc.conflicts.model import Change
from cdc.state.store import StateStore

HISTORY_LIMIT = 50  # changes of one row the rules look at
HISTORY_CACHE_ROWS = 10_000  # rows whose recent history stays in memory, at most


class RowHistories:
    """The histories of one source's rows."""

    def __init__(self, store: StateStore, source: str) -> None:
        self._store = store
        self._source = source
        # "schema.table" -> key -> the row's last change (with ``Change.earlier``)
        self._history: dict[str, dict[str, Change]] = {}
        self._older_history: dict[str, dict[str, Change]] = {}
        self._rows_in_history = 0  # in the newer generation
        self._read_ahead: dict[tuple[str, str], Change] = {}  # ("schema.table", key) -> last change, for a batch

    @property
    def changes_in_memory(self) -> int:
        return sum(
            1 + len(last.earlier)
            for cache in (self._history, self._older_history)
            for rows in cache.values()
            for last in rows.values()
        )

    def forget_table(self, qualified: str) -> None:
        """The table was truncated: its rows start anew."""
        for cache in (self._history, self._older_history):
            cache.pop(qualified, None)
        self._read_ahead = {k: v for k, v in self._read_ahead.items() if k[0] != qualified}
        self._rows_in_history = sum(map(len, self._history.values()))

    def read_ahead(self, rows: list[tuple[str, str, str]]) -> None:
        """Read the histories of the rows ((schema, table, key)) that memory does not hold, at once."""
        self._read_ahead.clear()
        wanted: dict[tuple[str, str], list[str]] = {}
        for schema, table, key in rows:
            qualified = f"{schema}.{table}"
            if key not in self._history.get(qualified, ()) and key not in self._older_history.get(qualified, ()):
                wanted.setdefault((schema, table), []).append(key)
        for (schema, table), keys in wanted.items():
            qualified = f"{schema}.{table}"
            for key, docs in self._store.rows_history(self._source, schema, table, keys, HISTORY_LIMIT).items():
                self._read_ahead[(qualified, key)] = _last_of(docs, key)

    def last_change(self, qualified: str, schema: str, table: str, key: str) -> Change | None:
        """The last change of a row seen before, with its earlier updates: from memory, else from the event log."""
        rows = self._history.get(qualified)
        last = None if rows is None else rows.get(key)
        if last is None:
            older = self._older_history.get(qualified)
            last = None if older is None else older.pop(key, None)  # ``remember`` brings it forward
        if last is None and self._read_ahead:
            last = self._read_ahead.pop((qualified, key), None)
        if last is None:
            docs = self._store.row_history(self._source, schema, table, key, HISTORY_LIMIT)
            if docs:
                last = _last_of(docs, key)
        return last

    def remember(self, qualified: str, key: str, change: Change) -> None:
        """``change`` is the row's last change now."""
        rows = self._history.get(qualified)
        if rows is None or key not in rows:
            if self._rows_in_history >= HISTORY_CACHE_ROWS // 2:
                self._older_history, self._history, self._rows_in_history = self._history, {}, 0
                rows = None
            if rows is None:
                rows = self._history[qualified] = {}
            self._rows_in_history += 1
        rows[key] = change


def _last_of(docs: list[str], key: str) -> Change:
    """A row's last change, with its earlier updates, from its events' documents (oldest first)."""
    changes = [change_from_doc(json.loads(doc), key) for doc in docs]
    last = changes[-1]
    last.earlier = tuple(c for c in changes[:-1] if c.op == "update")
    return last


def change_from_doc(doc: dict[str, Any], key: str) -> Change:
    return Change(
        doc["event_id"],
        doc["source"],
        f"{doc['schema']}.{doc['table']}",
        key,
        doc["op"],
        doc["before"],
        doc["after"],
        datetime.fromisoformat(doc["commit_ts"]),
        doc["writer"],
        doc["txid"],
        frozenset(doc["changed"]),
    )
