"""Each row's version and liveness, counted in memory during a state store transaction.

The versioner asks for a row's version once per change. Instead of a statement per change,
the rows of a batch are read in a few queries (``prefetch``), counted in memory, and
written back in one statement just before the transaction commits (``flush``); a rollback
forgets them. Outside a transaction every call reads the table itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

RowKey = tuple[str, str, str, str]  # source, schema, table, the key's JSON text
_CHUNK = 400  # keys per prefetch query (within SQLite's limit on parameters)


class _Row:
    __slots__ = ("event_id", "live", "version")

    def __init__(self, version: int, event_id: str, live: bool) -> None:
        self.version, self.event_id, self.live = version, event_id, live


class RowVersions:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._rows: dict[RowKey, _Row | None] = {}  # None: the row is not in the table
        self._changed: dict[RowKey, _Row] = {}  # counted since the last flush

    def prefetch(self, source: str, keys: Iterable[tuple[str, str, str]]) -> None:
        """Read the rows of ``keys`` ((schema, table, key) of one source) not read yet, in few queries."""
        wanted: dict[tuple[str, str], list[str]] = {}
        for schema, table, key in keys:
            if (source, schema, table, key) not in self._rows:
                wanted.setdefault((schema, table), []).append(key)
        for (schema, table), table_keys in wanted.items():
            unique = list(dict.fromkeys(table_keys))
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                for key in chunk:
                    self._rows[(source, schema, table, key)] = None
                rows = self._db.execute(
                    "SELECT key, version, last_event_id, live FROM row_versions"
                    f" WHERE source = ? AND schema_name = ? AND table_name = ? AND key IN ({','.join('?' * len(chunk))})",
                    (source, schema, table, *chunk),
                )
                for key, version, event_id, live in rows:
                    self._rows[(source, schema, table, key)] = _Row(version, event_id, bool(live))

    def _row(self, row_key: RowKey) -> _Row | None:
        if row_key in self._rows:
            return self._rows[row_key]
        found = self._db.execute(
            "SELECT version, last_event_id, live FROM row_versions"
            " WHERE source = ? AND schema_name = ? AND table_name = ? AND key = ?",
            row_key,
        ).fetchone()
        row = None if found is None else _Row(found[0], found[1], bool(found[2]))
        if self._db.in_transaction:
            self._rows[row_key] = row
        return row

    def first(self, row_key: RowKey, event_id: str) -> bool:
        """Count the first change of a row never seen (version 1, live); False, changing nothing,
        when the row is known already."""
        if self._row(row_key) is not None:
            return False
        self._rows[row_key] = self._changed[row_key] = _Row(1, event_id, True)
        self._outside_a_transaction()
        return True

    def next(self, row_key: RowKey, event_id: str, live: bool) -> int:
        """Count one more change of the row and return its version."""
        row = self._row(row_key)
        if row is None:
            row = self._rows[row_key] = _Row(0, event_id, live)
        row.version += 1
        row.event_id, row.live = event_id, live
        self._changed[row_key] = row
        version = row.version
        self._outside_a_transaction()
        return version

    def version(self, row_key: RowKey) -> int:
        row = self._row(row_key)
        return 0 if row is None else row.version

    def is_live(self, row_key: RowKey) -> bool | None:
        row = self._row(row_key)
        return None if row is None else row.live

    def set_gone(self, row_key: RowKey) -> None:
        row = self._row(row_key)
        if row is not None:
            row.live = False
            self._changed[row_key] = row
            self._outside_a_transaction()

    def forget_table(self, source: str, schema: str, table: str) -> None:
        """Every row of the table starts anew."""
        for cache in (self._rows, self._changed):
            for row_key in [k for k in cache if k[:3] == (source, schema, table)]:
                del cache[row_key]
        self._db.execute(
            "DELETE FROM row_versions WHERE source = ? AND schema_name = ? AND table_name = ?", (source, schema, table)
        )

    def _outside_a_transaction(self) -> None:
        if not self._db.in_transaction:  # nothing would write it later
            self.flush()

    def flush(self) -> None:
        """Write the rows counted so far in this transaction (inside it, before it commits); they
        stay in memory until it ends."""
        if self._changed:
            self._db.executemany(
                "INSERT INTO row_versions VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " version = excluded.version, last_event_id = excluded.last_event_id, live = excluded.live",
                [(*k, row.version, row.event_id, int(row.live)) for k, row in self._changed.items()],
            )
            self._changed.clear()
        if not self._db.in_transaction:
            self._rows.clear()

    def forget(self) -> None:
        """The transaction ended: what it counted is written, or (rolled back) never happened."""
        self._rows.clear()
        self._changed.clear()
