"""Embedded state store: SQLite in WAL mode under ``state_dir``.

Holds, per source, the last stored change and the last completely stored transaction
(with the position to acknowledge for it), the version of every row seen, and the event
log that targets apply from and ``cdc events`` queries. The daemon is the only writer;
``cdc status`` and ``cdc events`` read concurrently.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from cdc.model import StoredEvent

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY,
    stored_txn TEXT NOT NULL DEFAULT '',
    stored_seq INTEGER NOT NULL DEFAULT -1,
    complete_txn TEXT NOT NULL DEFAULT '',
    complete_position TEXT,
    complete_resume TEXT,
    acked TEXT,
    acked_at REAL,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS row_versions (
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_event_id TEXT NOT NULL,
    live INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (source, schema_name, table_name, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    log_id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    txn_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    op TEXT NOT NULL,
    key TEXT NOT NULL,
    commit_ts TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    doc TEXT NOT NULL,
    native TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_position ON events (source, txn_key, seq);
CREATE INDEX IF NOT EXISTS events_by_id ON events (event_id);
CREATE INDEX IF NOT EXISTS events_by_row ON events (schema_name, table_name, key);
CREATE INDEX IF NOT EXISTS events_by_time ON events (commit_ts);
CREATE TABLE IF NOT EXISTS conflicts (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    fields TEXT NOT NULL,
    events TEXT NOT NULL,
    rule TEXT NOT NULL,
    evidence TEXT NOT NULL,
    explanation TEXT NOT NULL,
    status TEXT NOT NULL,
    resolution TEXT,
    commit_ts TEXT NOT NULL,
    detected_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conflicts_by_time ON conflicts (commit_ts);
CREATE TABLE IF NOT EXISTS natural_keys (
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    names TEXT NOT NULL,
    vals TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (source, schema_name, table_name, names, vals, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS natural_keys_by_row ON natural_keys (source, schema_name, table_name, key);
CREATE INDEX IF NOT EXISTS natural_keys_by_event ON natural_keys (event_id);
CREATE TABLE IF NOT EXISTS held_keys (
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    conflict_id TEXT NOT NULL,
    txn_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (source, schema_name, table_name, key, conflict_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entity_rows (
    entity TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (entity, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshot_tables (
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    last_key TEXT,
    rows_read INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, schema_name, table_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target_positions (
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    txn_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (target, source)
);
"""

Position = tuple[str, int]
WHOLE_TRANSACTION = 2**31 - 1  # the seq that stands for "every change of the transaction"
NOWHERE: Position = ("", -1)


class StateStoreError(Exception):
    """The state store cannot be opened or used."""


@dataclass(frozen=True, slots=True)
class SourceState:
    source: str
    stored: Position
    complete_txn: str
    complete_position: str | None
    complete_resume: str | None
    acked: str | None
    acked_at: float | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What the versioner hands to ``StateStore.append``."""

    source: str
    txn_key: str
    seq: int
    event_id: str
    schema: str
    table: str
    op: str
    key: str
    commit_ts: str
    doc: str
    native: str | None
    origin: str | None = None


class StateStore:
    """The SQLite state store of one daemon."""

    def __init__(self, state_dir: Path, readonly: bool = False) -> None:
        self.path = Path(state_dir) / "state.db"
        try:
            if readonly:
                if not self.path.exists():
                    raise StateStoreError(f"{self.path}: no state store yet (has 'cdc run' started?)")
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                self._migrate()
                self._check_schema_version()
            self._db.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as exc:
            raise StateStoreError(f"{self.path}: cannot open the state store: {exc}") from None
        except PermissionError as exc:
            raise StateStoreError(f"{state_dir}: cannot create the state directory: {exc.strerror}") from None

    def _migrate(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        if "origin" not in columns:  # the source a review-queue resolution belongs to
            self._db.execute("ALTER TABLE events ADD COLUMN origin TEXT")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(row_versions)")}
        if "live" not in columns:  # whether the row exists at the source
            self._db.execute("ALTER TABLE row_versions ADD COLUMN live INTEGER NOT NULL DEFAULT 1")

    def _check_schema_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise StateStoreError(f"{self.path}: written by a newer cdc (schema {row[0]}); upgrade cdc")

    def close(self) -> None:
        self._db.close()

    # -- sources -------------------------------------------------------------------

    def source_state(self, source: str) -> SourceState:
        row = self._db.execute(
            "SELECT stored_txn, stored_seq, complete_txn, complete_position, complete_resume, acked, acked_at"
            " FROM sources WHERE source = ?", (source,)).fetchone()
        if row is None:
            return SourceState(source, NOWHERE, "", None, None, None, None)
        return SourceState(source, (row[0], row[1]), row[2], row[3], row[4], row[5], row[6])

    def source_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT source FROM sources ORDER BY source")]

    def set_acked(self, source: str, position: str) -> None:
        self._db.execute(
            "INSERT INTO sources (source, acked, acked_at, updated_at) VALUES (?1, ?2, ?3, ?3)"
            " ON CONFLICT (source) DO UPDATE SET acked = ?2, acked_at = ?3, updated_at = ?3",
            (source, position, time.time()))

    # -- writing events ------------------------------------------------------------

    def transaction(self) -> "_Transaction":
        return _Transaction(self._db)

    def next_version(self, source: str, schema: str, table: str, key: str, event_id: str, live: bool) -> int:
        """Count one more change of the row and return its version (inside ``transaction()``)."""
        return self._db.execute(
            "INSERT INTO row_versions VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT DO UPDATE SET"
            " version = version + 1, last_event_id = excluded.last_event_id, live = excluded.live"
            " RETURNING version", (source, schema, table, key, event_id, int(live))).fetchone()[0]

    def row_last_txn(self, source: str, schema: str, table: str, key: str) -> str | None:
        """The transaction key of the row's last stored change (None: none, or pruned)."""
        row = self._db.execute(
            "SELECT e.txn_key FROM row_versions r JOIN events e ON e.event_id = r.last_event_id"
            " WHERE r.source = ? AND r.schema_name = ? AND r.table_name = ? AND r.key = ?",
            (source, schema, table, key)).fetchone()
        return row[0] if row else None

    def row_version(self, source: str, schema: str, table: str, key: str) -> int:
        row = self._db.execute("SELECT version FROM row_versions WHERE source = ? AND schema_name = ?"
                               " AND table_name = ? AND key = ?", (source, schema, table, key)).fetchone()
        return row[0] if row else 0

    def first_version(self, source: str, schema: str, table: str, key: str, event_id: str) -> bool:
        """Count the first change of a row never seen (version 1, live; inside ``transaction()``);
        False, changing nothing, when the row is known already."""
        return self._db.execute(
            "INSERT INTO row_versions VALUES (?, ?, ?, ?, 1, ?, 1) ON CONFLICT DO NOTHING RETURNING version",
            (source, schema, table, key, event_id)).fetchone() is not None

    def is_live(self, source: str, schema: str, table: str, key: str) -> bool | None:
        """Whether the row exists at the source as far as the daemon knows (None: never seen)."""
        row = self._db.execute("SELECT live FROM row_versions WHERE source = ? AND schema_name = ?"
                               " AND table_name = ? AND key = ?", (source, schema, table, key)).fetchone()
        return None if row is None else bool(row[0])

    def set_gone(self, source: str, schema: str, table: str, key: str) -> None:
        """The row left its key (an update changed its primary key): it no longer exists there."""
        self._db.execute("UPDATE row_versions SET live = 0 WHERE source = ? AND schema_name = ? AND table_name = ?"
                         " AND key = ?", (source, schema, table, key))
        self._db.execute("DELETE FROM natural_keys WHERE source = ? AND schema_name = ? AND table_name = ?"
                         " AND key = ?", (source, schema, table, key))

    def forget_rows(self, source: str, schema: str, table: str) -> None:
        """The table was truncated: its rows start anew (versions, liveness, natural keys)."""
        for table_name in ("row_versions", "natural_keys"):
            self._db.execute(f"DELETE FROM {table_name} WHERE source = ? AND schema_name = ? AND table_name = ?",
                             (source, schema, table))

    def append(self, events: list[NewEvent]) -> None:
        """Store events (inside ``transaction()``)."""
        now = time.time()
        self._db.executemany(
            "INSERT INTO events (source, txn_key, seq, event_id, schema_name, table_name, op, key,"
            " commit_ts, recorded_at, doc, native, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(e.source, e.txn_key, e.seq, e.event_id, e.schema, e.table, e.op, e.key, e.commit_ts, now, e.doc,
              e.native, e.origin) for e in events])

    # -- conflicts -------------------------------------------------------------------

    def row_history(self, source: str, schema: str, table: str, key: str, limit: int) -> list[str]:
        """The documents of a row's latest events, oldest first."""
        rows = self._db.execute(
            "SELECT doc FROM events WHERE schema_name = ? AND table_name = ? AND key = ? AND source = ?"
            " ORDER BY log_id DESC LIMIT ?", (schema, table, key, source, limit)).fetchall()
        return [row[0] for row in reversed(rows)]

    def set_natural_keys(self, source: str, schema: str, table: str, key: str, event_id: str,
                         keys: list[tuple[str, str]], new_row: bool = False) -> None:
        """The row's natural keys are now ``keys`` (names JSON, values JSON); none after a delete.
        A ``new_row`` (never seen before) has none yet to replace."""
        if not new_row:
            self._db.execute("DELETE FROM natural_keys WHERE source = ? AND schema_name = ? AND table_name = ?"
                             " AND key = ?", (source, schema, table, key))
        for names, values in keys:
            self._db.execute("INSERT OR REPLACE INTO natural_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (source, schema, table, names, values, key, event_id))

    def natural_key_owner(self, source: str, schema: str, table: str, names: str, values: str,
                          key: str) -> str | None:
        """The latest event document of another live row holding the natural key, if any."""
        row = self._db.execute(
            "SELECT e.doc FROM natural_keys n JOIN events e ON e.event_id = n.event_id WHERE n.source = ?"
            " AND n.schema_name = ? AND n.table_name = ? AND n.names = ? AND n.vals = ? AND n.key != ? LIMIT 1",
            (source, schema, table, names, values, key)).fetchone()
        return row[0] if row else None

    def add_conflict(self, conflict_id: str, source: str, conflict, status: str, resolution: dict | None) -> None:
        events = [{"event_id": e.event_id, "commit_ts": e.commit_ts.isoformat(timespec="microseconds"),
                   "writer": e.writer, "source": e.source, "op": e.op,
                   "before": {f: (e.before or {}).get(f) for f in conflict.fields},
                   "after": {f: (e.after or {}).get(f) for f in conflict.fields}} for e in conflict.events]
        self._db.execute(
            "INSERT OR REPLACE INTO conflicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (conflict_id, conflict.type, conflict.severity, source, conflict.table, conflict.key,
             json.dumps(list(conflict.fields)), json.dumps(events, ensure_ascii=False), conflict.rule,
             json.dumps(conflict.evidence, ensure_ascii=False, default=str), conflict.explanation, status,
             json.dumps(resolution, ensure_ascii=False, default=str) if resolution is not None else None,
             events[-1]["commit_ts"], time.time()))

    def conflicts(self, *, conflict_id: str | None = None, type: str | None = None, table: str | None = None,
                  status: str | None = None, since: str | None = None, limit: int | None = None
                  ) -> list[dict[str, Any]]:
        clauses, params = ["1 = 1"], []
        for column, value in (("id", conflict_id), ("type", type), ("table_name", table), ("status", status)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since:
            clauses.append("commit_ts >= ?")
            params.append(since)
        sql = f"SELECT * FROM conflicts WHERE {' AND '.join(clauses)} ORDER BY commit_ts, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        cursor = self._db.execute(sql, params)
        names = [d[0] for d in cursor.description]
        found = []
        for row in cursor.fetchall():
            record = dict(zip(names, row))
            for column in ("fields", "events", "evidence", "resolution"):
                record[column] = json.loads(record[column]) if record[column] is not None else None
            record["table"] = record.pop("table_name")
            found.append(record)
        return found

    def hold(self, source: str, schema: str, table: str, key: str, conflict_id: str, since: Position) -> None:
        """Row targets get no change of the key from position ``since`` on until the conflict is resolved."""
        self._db.execute("INSERT OR IGNORE INTO held_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (source, schema, table, key, conflict_id, since[0], since[1]))

    def release(self, conflict_id: str) -> None:
        self._db.execute("DELETE FROM held_keys WHERE conflict_id = ?", (conflict_id,))

    def held_keys(self) -> dict[tuple[str, str, str, str], Position]:
        """Each held key and the position from which its changes wait."""
        rows = self._db.execute("SELECT source, schema_name, table_name, key, min(txn_key || ':' || printf('%010d', seq))"
                                " FROM held_keys GROUP BY source, schema_name, table_name, key")
        return {(r[0], r[1], r[2], r[3]): (r[4].rsplit(":", 1)[0], int(r[4].rsplit(":", 1)[1])) for r in rows}

    def last_txn(self, source: str) -> str:
        row = self._db.execute("SELECT max(txn_key) FROM events WHERE source = ?", (source,)).fetchone()
        return row[0] or ""

    def event_doc(self, event_id: str) -> str | None:
        row = self._db.execute("SELECT doc FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    def set_conflict_status(self, conflict_id: str, status: str, resolution: dict[str, Any]) -> None:
        self._db.execute("UPDATE conflicts SET status = ?, resolution = ? WHERE id = ?",
                         (status, json.dumps(resolution, ensure_ascii=False, default=str), conflict_id))

    def mark_complete(self, source: str, txn_key: str, position: str, resume: str) -> None:
        """The transaction ``txn_key`` is wholly stored (inside ``transaction()``)."""
        self._db.execute(
            "INSERT INTO sources (source, stored_txn, stored_seq, complete_txn, complete_position,"
            " complete_resume, updated_at) VALUES (?1, ?2, ?6, ?2, ?3, ?4, ?5)"
            " ON CONFLICT (source) DO UPDATE SET stored_txn = ?2, stored_seq = ?6,"
            " complete_txn = ?2, complete_position = ?3, complete_resume = ?4, updated_at = ?5",
            (source, txn_key, position, resume, time.time(), WHOLE_TRANSACTION))

    def set_stored(self, source: str, txn_key: str, seq: int) -> None:
        """The last change stored for ``source`` (inside the ``transaction()`` that stored it)."""
        self._db.execute(
            "INSERT INTO sources (source, stored_txn, stored_seq, updated_at) VALUES (?1, ?2, ?3, ?4)"
            " ON CONFLICT (source) DO UPDATE SET stored_txn = ?2, stored_seq = ?3, updated_at = ?4",
            (source, txn_key, seq, time.time()))

    # -- entities held by several sources ---------------------------------------------

    def entity_row(self, entity: str, key: str) -> str | None:
        """The state of an entity key (``cdc.conflicts.vectors.EntityRow`` as JSON), if any."""
        row = self._db.execute("SELECT state FROM entity_rows WHERE entity = ? AND key = ?", (entity, key)).fetchone()
        return row[0] if row else None

    def set_entity_row(self, entity: str, key: str, state: str) -> None:
        self._db.execute("INSERT INTO entity_rows VALUES (?1, ?2, ?3) ON CONFLICT (entity, key) DO UPDATE"
                         " SET state = ?3", (entity, key, state))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2", (key, value))

    # -- snapshots -------------------------------------------------------------------

    def snapshot_tables(self, source: str) -> dict[tuple[str, str], tuple[list | None, int, bool]]:
        """(schema, table) -> (last key read, rows read, done) of each table of the source's snapshot."""
        rows = self._db.execute("SELECT schema_name, table_name, last_key, rows_read, done FROM snapshot_tables"
                                " WHERE source = ?", (source,)).fetchall()
        return {(r[0], r[1]): (json.loads(r[2]) if r[2] else None, r[3], bool(r[4])) for r in rows}

    def set_snapshot_table(self, source: str, schema: str, table: str, last_key: list | None, rows_read: int,
                           done: bool) -> None:
        self._db.execute(
            "INSERT INTO snapshot_tables VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (source, schema_name, table_name)"
            " DO UPDATE SET last_key = ?4, rows_read = ?5, done = ?6",
            (source, schema, table, json.dumps(last_key) if last_key is not None else None, rows_read, int(done)))

    def forget_snapshot(self, source: str) -> None:
        self._db.execute("DELETE FROM snapshot_tables WHERE source = ?", (source,))
        self._db.execute("DELETE FROM meta WHERE key = ?", (f"snapshot:{source}",))

    # -- reading events ------------------------------------------------------------

    def events_after(self, source: str, after: Position, upto_txn: str, limit: int) -> list[StoredEvent]:
        """Events of ``source`` after position ``after`` in transactions up to ``upto_txn``."""
        txn_key, seq = after
        rows = self._db.execute(
            "SELECT log_id, coalesce(origin, source), txn_key, seq, event_id, schema_name, table_name, op, key,"
            " doc, native FROM events WHERE source = ?1 AND (txn_key > ?2 OR (txn_key = ?2 AND seq > ?3))"
            " AND txn_key <= ?4 ORDER BY txn_key, seq LIMIT ?5",
            (source, txn_key, seq, upto_txn, limit)).fetchall()
        return [_stored_event(row) for row in rows]

    def position_of(self, event_id: str) -> tuple[str, Position] | None:
        row = self._db.execute("SELECT source, txn_key, seq FROM events WHERE event_id = ?",
                               (event_id,)).fetchone()
        return (row[0], (row[1], row[2])) if row else None

    def record_target_position(self, target: str, source: str, position: Position) -> None:
        self._db.execute(
            "INSERT INTO target_positions VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (target, source)"
            " DO UPDATE SET txn_key = ?3, seq = ?4, updated_at = ?5",
            (target, source, position[0], position[1], time.time()))

    def target_positions(self) -> list[tuple[str, str, str, int, float]]:
        return self._db.execute(
            "SELECT target, source, txn_key, seq, updated_at FROM target_positions ORDER BY target, source"
        ).fetchall()

    def query_events(self, *, source: str | None = None, table: str | None = None,
                     key: dict[str, str] | None = None, since: str | None = None, until: str | None = None,
                     limit: int | None = None) -> Iterator[str]:
        """Event documents matching the filters, oldest first (for ``cdc events``)."""
        where, params = _event_filters(source, table, key, since, until)
        sql = f"SELECT doc FROM events WHERE {where} ORDER BY log_id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        for (doc,) in self._db.execute(sql, params):
            yield doc

    def replayable(self, *, after_log_id: int, limit: int, source: str | None = None, table: str | None = None,
                   key: dict[str, str] | None = None, since: str | None = None,
                   until: str | None = None) -> list[StoredEvent]:
        """Events matching the filters after ``after_log_id``, in log order, that a target can be
        sent again (rows cdc wrote into sources are left out)."""
        where, params = _event_filters(source, table, key, since, until)
        rows = self._db.execute(
            "SELECT log_id, coalesce(origin, source), txn_key, seq, event_id, schema_name, table_name, op, key,"
            f" doc, native FROM events WHERE {where} AND log_id > ? AND source NOT LIKE 'sync:%'"
            " ORDER BY log_id LIMIT ?", [*params, after_log_id, limit]).fetchall()
        return [_stored_event(row) for row in rows]

    def count_replayable(self, *, source: str | None = None, table: str | None = None,
                         key: dict[str, str] | None = None, since: str | None = None,
                         until: str | None = None) -> dict[str, int]:
        """How many events ``replayable`` would give, by "schema.table"."""
        where, params = _event_filters(source, table, key, since, until)
        return dict(self._db.execute(
            f"SELECT schema_name || '.' || table_name, count(*) FROM events WHERE {where}"
            " AND source NOT LIKE 'sync:%' GROUP BY 1 ORDER BY 1", params).fetchall())

    def prune_events(self, recorded_before: float, limit: int) -> int:
        """Delete up to ``limit`` events recorded before the cutoff that every target holds, no
        pending conflict names, and no natural key points to; how many went."""
        return self._db.execute(
            "DELETE FROM events WHERE log_id IN (SELECT e.log_id FROM events e WHERE e.recorded_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM target_positions t WHERE t.source = e.source"
            "  AND (t.txn_key < e.txn_key OR (t.txn_key = e.txn_key AND t.seq < e.seq)))"
            " AND NOT EXISTS (SELECT 1 FROM natural_keys n WHERE n.event_id = e.event_id)"
            " AND NOT EXISTS (SELECT 1 FROM conflicts c, json_each(c.events) j WHERE c.status = 'pending'"
            "  AND json_extract(j.value, '$.event_id') = e.event_id)"
            " ORDER BY e.log_id LIMIT ?)", (recorded_before, limit)).rowcount

    def oldest_event(self) -> tuple[str, str] | None:
        """The oldest event still in the log (what ``replay`` can reach back to): (commit_ts, event_id)."""
        row = self._db.execute("SELECT commit_ts, event_id FROM events ORDER BY log_id LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def counts(self) -> dict[str, Any]:
        events = dict(self._db.execute("SELECT source, count(*) FROM events GROUP BY source").fetchall())
        oldest = self._db.execute("SELECT min(commit_ts), max(commit_ts), max(recorded_at) FROM events").fetchone()
        return {"events_by_source": events, "oldest_commit_ts": oldest[0], "newest_commit_ts": oldest[1],
                "last_recorded_at": oldest[2]}

    def open_conflicts(self) -> dict[str, int]:
        """Pending conflicts by type."""
        return dict(self._db.execute("SELECT type, count(*) FROM conflicts WHERE status = 'pending' GROUP BY type"))

    def events_recorded_since(self, since: float) -> int:
        return self._db.execute("SELECT count(*) FROM events WHERE recorded_at >= ?", (since,)).fetchone()[0]


class _Transaction:
    """``with store.transaction():`` — one SQLite write transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _event_filters(source: str | None, table: str | None, key: dict[str, str] | None, since: str | None,
                   until: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of an event query by source, table, key and time."""
    clauses, params = ["1 = 1"], []
    if source:
        clauses.append("source = ?")
        params.append(source)
    if table:
        schema, _, name = table.rpartition(".")
        if schema:
            clauses.append("schema_name = ?")
            params.append(schema)
        clauses.append("table_name = ?")
        params.append(name)
    for column, value in (key or {}).items():
        clauses.append("CAST(json_extract(key, ?) AS TEXT) = ?")
        params.extend([_json_path(column), value])
    if since:
        clauses.append("commit_ts >= ?")
        params.append(since)
    if until:
        clauses.append("commit_ts < ?")
        params.append(until)
    return " AND ".join(clauses), params


def _json_path(column: str) -> str:
    return "$." + json.dumps(column)


def _stored_event(row: tuple) -> StoredEvent:
    native = json.loads(row[10]) if row[10] else None
    return StoredEvent(
        log_id=row[0], source=row[1], txn_key=row[2], seq=row[3], event_id=row[4], schema=row[5],
        table=row[6], op=row[7], key=json.loads(row[8]), json=row[9], native=native)
