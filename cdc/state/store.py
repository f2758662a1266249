"""Embedded state store: SQLite in WAL mode under ``state_dir``.

Holds, per source, the last stored change and the last completely stored transaction
(with the position to acknowledge for it), the version of every row seen, and the event
log that targets apply from and ``cdc events`` queries, and the store's identity, which
targets keep with their positions (``cdc.state.identity``). The daemon is the only writer;
``cdc status`` and ``cdc events`` read concurrently.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdc.errors import StateStoreError
from cdc.model import Event, add_conflict_ids
from cdc.state.conflict_records import ConflictRecords
from cdc.state.event_queries import EVENT_COLUMNS, EventQueries, logged_event
from cdc.state.identity import Installation, ensure_identity, read_identity
from cdc.state.row_versions import RowVersions
from cdc.state.schema import SCHEMA as _SCHEMA
from cdc.state.schema import SCHEMA_VERSION
from cdc.state.transaction import StoreTransaction
from cdc.values import compact_json

Position = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TableShapeRecord:
    """A table's columns as recorded (JSON ``[{"name", "type"}]``), the columns its last schema
    change added, dropped or retyped, and that change's commit time ('' if none yet)."""

    columns_json: str
    reshaped: tuple[str, ...] = ()
    reshaped_at: str = ""


WHOLE_TRANSACTION = 2**31 - 1  # the seq that stands for "every change of the transaction"
NOWHERE: Position = ("", -1)
_HISTORY_CHUNK = 400  # rows per history query (within SQLite's limit on parameters)


@dataclass(frozen=True, slots=True)
class SourceState:
    source: str
    stored: Position
    complete_txn: str
    complete_position: str | None
    complete_resume: str | None
    acked: str | None
    acked_at: float | None


class StateStore(ConflictRecords, EventQueries):
    """The SQLite state store of one daemon."""

    def __init__(self, state_dir: Path, readonly: bool = False) -> None:
        self.path = Path(state_dir) / "state.db"
        self.transaction_serial = 0  # counts write transactions: which one is (or was last) open
        self._before_commit: list[Callable[[], None]] = []
        self._appended: dict[str, Event] = {}  # the events of the open transaction, by event id
        self._unwritten: list[Event] = []  # appended in the open transaction, not written yet
        self._unwritten_rows: set[tuple[str, str, str]] = set()  # their rows (schema, table, key)
        try:
            if readonly:
                if not self.path.exists():
                    raise StateStoreError(f"{self.path}: no state store yet (has 'cdc run' started?)")
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
                self._versions = RowVersions(self._db)
                self._db.execute("PRAGMA busy_timeout=10000")
                self.installation: Installation = read_identity(self._db)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._versions = RowVersions(self._db)
                self._db.execute("PRAGMA busy_timeout=10000")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                new_store = self.get_meta("schema_version") is None
                self._check_schema_version()
                self._migrate()
                self.installation = ensure_identity(self._db, new_store)
        except sqlite3.Error as exc:
            raise StateStoreError(f"{self.path}: cannot open the state store: {exc}") from None
        except PermissionError as exc:
            raise StateStoreError(f"{state_dir}: cannot create the state directory: {exc.strerror}") from None

    def _migrate(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        if "origin" not in columns:  # the source a review-queue resolution belongs to
            self._db.execute("ALTER TABLE events ADD COLUMN origin TEXT")
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'natural_keys'").fetchone():
            self._migrate_natural_keys()
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(row_versions)")}
        if "live" not in columns:  # whether the row exists at the source
            self._db.execute("ALTER TABLE row_versions ADD COLUMN live INTEGER NOT NULL DEFAULT 1")
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _migrate_natural_keys(self) -> None:
        """Natural keys as schema 1 kept them, each row naming its source, table and key columns,
        into their sets (schema 2), at once."""
        with self.transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO natural_key_sets (source, schema_name, table_name, names)"
                " SELECT DISTINCT source, schema_name, table_name, names FROM natural_keys"
            )
            self._db.execute(
                "INSERT OR REPLACE INTO natural_key_rows SELECT s.set_id, n.vals, n.key, n.event_id"
                " FROM natural_keys n JOIN natural_key_sets s USING (source, schema_name, table_name, names)"
            )
            self._db.execute("DROP TABLE natural_keys")

    def _check_schema_version(self) -> None:
        """Refuse a store written by a newer cdc (before migrating anything: a migrated store is
        marked with this schema version, so that an older cdc refuses it in turn)."""
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
            " FROM sources WHERE source = ?",
            (source,),
        ).fetchone()
        if row is None:
            return SourceState(source, NOWHERE, "", None, None, None, None)
        return SourceState(source, (row[0], row[1]), row[2], row[3], row[4], row[5], row[6])

    def source_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT source FROM sources ORDER BY source")]

    def set_acked(self, source: str, position: str) -> None:
        self._db.execute(
            "INSERT INTO sources (source, acked, acked_at, updated_at) VALUES (?1, ?2, ?3, ?3)"
            " ON CONFLICT (source) DO UPDATE SET acked = ?2, acked_at = ?3, updated_at = ?3",
            (source, position, time.time()),
        )

    # -- writing events ------------------------------------------------------------

    def transaction(self) -> StoreTransaction:
        return StoreTransaction(self)

    def before_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` inside the open ``transaction()`` just before it commits (not if it rolls back)."""
        self._before_commit.append(callback)

    def prefetch_rows(self, source: str, keys: list[tuple[str, str, str]]) -> None:
        """Read the versions of these rows ((schema, table, key)) at once, for the changes of a batch."""
        self._versions.prefetch(source, keys)

    def next_version(self, source: str, schema: str, table: str, key: str, event_id: str, live: bool) -> int:
        """Count one more change of the row and return its version (inside ``transaction()``)."""
        return self._versions.next((source, schema, table, key), event_id, live)

    def row_last_txn(self, source: str, schema: str, table: str, key: str) -> str | None:
        """The transaction key of the row's last stored change (None: none, or pruned)."""
        self._write_pending()
        row = self._db.execute(
            "SELECT e.txn_key FROM row_versions r JOIN events e ON e.event_id = r.last_event_id"
            " WHERE r.source = ? AND r.schema_name = ? AND r.table_name = ? AND r.key = ?",
            (source, schema, table, key),
        ).fetchone()
        return row[0] if row else None

    def row_version(self, source: str, schema: str, table: str, key: str) -> int:
        return self._versions.version((source, schema, table, key))

    def first_version(self, source: str, schema: str, table: str, key: str, event_id: str) -> bool:
        """Count the first change of a row never seen (version 1, live; inside ``transaction()``);
        False, changing nothing, when the row is known already."""
        return self._versions.first((source, schema, table, key), event_id)

    def is_live(self, source: str, schema: str, table: str, key: str) -> bool | None:
        """Whether the row exists at the source as far as the daemon knows (None: never seen)."""
        return self._versions.is_live((source, schema, table, key))

    def set_gone(self, source: str, schema: str, table: str, key: str) -> None:
        """The row left its key (an update changed its primary key): it no longer exists there."""
        self._versions.set_gone((source, schema, table, key))

    def forget_rows(self, source: str, schema: str, table: str) -> None:
        """The table was truncated: its rows start anew (versions, liveness, natural keys)."""
        self._versions.forget_table(source, schema, table)
        self._db.execute(
            "DELETE FROM natural_key_rows WHERE set_id IN (SELECT set_id FROM natural_key_sets"
            " WHERE source = ? AND schema_name = ? AND table_name = ?)",
            (source, schema, table),
        )

    def append(self, events: list[Event]) -> None:
        """Store events (inside ``transaction()``: they are written together before it commits,
        or before anything reads the event log in it)."""
        self._unwritten.extend(events)
        self._unwritten_rows.update((event.schema, event.table, event.key_json) for event in events)
        for event in events:
            self._appended[event.event_id] = event
        if not self._db.in_transaction:
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the events appended and the row versions counted so far in the open transaction."""
        self._versions.flush()
        events, self._unwritten = self._unwritten, []
        self._unwritten_rows.clear()
        if not events:
            return
        now = time.time()
        self._db.executemany(
            "INSERT INTO events (source, txn_key, seq, event_id, schema_name, table_name, op, key,"
            " commit_ts, recorded_at, doc, native, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    e.stream,
                    e.txn_key,
                    e.seq,
                    e.event_id,
                    e.schema,
                    e.table,
                    e.op,
                    e.key_json,
                    e.commit_ts,
                    now,
                    e.doc,
                    None if e.native is None else compact_json(e.native),
                    e.origin,
                )
                for e in events
            ],
        )

    def add_event_conflicts(self, event_id: str, conflict_ids: list[str]) -> None:
        """The stored event also raised ``conflict_ids`` (found when its transaction was settled):
        its document in the log, and the event itself if it is of the open transaction."""
        event = self._appended.get(event_id)
        self._write_pending()
        if event is not None:
            event.doc = add_conflict_ids(event.doc, conflict_ids)
            self._db.execute("UPDATE events SET doc = ? WHERE event_id = ?", (event.doc, event_id))
            return
        row = self._db.execute("SELECT doc FROM events WHERE event_id = ?", (event_id,)).fetchone()
        if row is not None:
            self._db.execute(
                "UPDATE events SET doc = ? WHERE event_id = ?", (add_conflict_ids(row[0], conflict_ids), event_id)
            )

    # -- the rules' history, and the transactions' bookkeeping -------------------------

    def row_history(self, source: str, schema: str, table: str, key: str, limit: int) -> list[str]:
        """The documents of a row's latest events, oldest first."""
        if (schema, table, key) in self._unwritten_rows:
            self._write_pending()
        rows = self._db.execute(
            "SELECT doc FROM events WHERE schema_name = ? AND table_name = ? AND key = ? AND source = ?"
            " ORDER BY log_id DESC LIMIT ?",
            (schema, table, key, source, limit),
        ).fetchall()
        return [row[0] for row in reversed(rows)]

    def rows_history(self, source: str, schema: str, table: str, keys: list[str], limit: int) -> dict[str, list[str]]:
        """``row_history`` of many rows of a table at once (rows without events left out)."""
        self._write_pending()
        found: dict[str, list[str]] = {}
        for start in range(0, len(keys), _HISTORY_CHUNK):
            chunk = keys[start : start + _HISTORY_CHUNK]
            rows = self._db.execute(
                "SELECT key, doc FROM (SELECT key, doc, log_id, row_number() OVER (PARTITION BY key ORDER BY log_id DESC)"
                " AS newest FROM events WHERE schema_name = ? AND table_name = ? AND source = ?"
                f" AND key IN ({','.join('?' * len(chunk))})) WHERE newest <= ? ORDER BY log_id",
                (schema, table, source, *chunk, limit),
            )
            for key, doc in rows:
                found.setdefault(key, []).append(doc)
        return found

    def last_txn(self, source: str) -> str:
        self._write_pending()
        row = self._db.execute("SELECT max(txn_key) FROM events WHERE source = ?", (source,)).fetchone()
        return row[0] or ""

    def event_doc(self, event_id: str) -> str | None:
        self._write_pending()
        row = self._db.execute("SELECT doc FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    def mark_complete(self, source: str, txn_key: str, position: str, resume: str) -> None:
        """The transaction ``txn_key`` is wholly stored (inside ``transaction()``)."""
        self._db.execute(
            "INSERT INTO sources (source, stored_txn, stored_seq, complete_txn, complete_position,"
            " complete_resume, updated_at) VALUES (?1, ?2, ?6, ?2, ?3, ?4, ?5)"
            " ON CONFLICT (source) DO UPDATE SET stored_txn = ?2, stored_seq = ?6,"
            " complete_txn = ?2, complete_position = ?3, complete_resume = ?4, updated_at = ?5",
            (source, txn_key, position, resume, time.time(), WHOLE_TRANSACTION),
        )

    def set_stored(self, source: str, txn_key: str, seq: int) -> None:
        """The last change stored for ``source`` (inside the ``transaction()`` that stored it)."""
        self._db.execute(
            "INSERT INTO sources (source, stored_txn, stored_seq, updated_at) VALUES (?1, ?2, ?3, ?4)"
            " ON CONFLICT (source) DO UPDATE SET stored_txn = ?2, stored_seq = ?3, updated_at = ?4",
            (source, txn_key, seq, time.time()),
        )

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2", (key, value))

    # -- snapshots -------------------------------------------------------------------

    def snapshot_tables(self, source: str) -> dict[tuple[str, str], tuple[list | None, int, bool]]:
        """(schema, table) -> (last key read, rows read, done) of each table of the source's snapshot."""
        rows = self._db.execute(
            "SELECT schema_name, table_name, last_key, rows_read, done FROM snapshot_tables WHERE source = ?", (source,)
        ).fetchall()
        return {(r[0], r[1]): (json.loads(r[2]) if r[2] else None, r[3], bool(r[4])) for r in rows}

    def set_snapshot_table(
        self, source: str, schema: str, table: str, last_key: list | None, rows_read: int, done: bool
    ) -> None:
        self._db.execute(
            "INSERT INTO snapshot_tables VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (source, schema_name, table_name)"
            " DO UPDATE SET last_key = ?4, rows_read = ?5, done = ?6",
            (source, schema, table, json.dumps(last_key) if last_key is not None else None, rows_read, int(done)),
        )

    def forget_snapshot(self, source: str) -> None:
        self._db.execute("DELETE FROM snapshot_tables WHERE source = ?", (source,))
        self._db.execute("DELETE FROM meta WHERE key = ?", (f"snapshot:{source}",))

    # -- reading events ------------------------------------------------------------

    def events_after(self, source: str, after: Position, upto_txn: str, limit: int) -> list[Event]:
        """Events of ``source`` after position ``after`` in transactions up to ``upto_txn``."""
        self._write_pending()
        txn_key, seq = after
        rows = self._db.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE source = ?1 AND (txn_key > ?2 OR (txn_key = ?2 AND seq > ?3))"
            " AND txn_key <= ?4 ORDER BY txn_key, seq LIMIT ?5",
            (source, txn_key, seq, upto_txn, limit),
        ).fetchall()
        return [logged_event(row) for row in rows]

    def position_of(self, event_id: str) -> tuple[str, Position] | None:
        self._write_pending()
        row = self._db.execute("SELECT source, txn_key, seq FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return (row[0], (row[1], row[2])) if row else None

    def record_target_position(self, target: str, source: str, position: Position) -> None:
        self._db.execute(
            "INSERT INTO target_positions VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (target, source)"
            " DO UPDATE SET txn_key = ?3, seq = ?4, updated_at = ?5",
            (target, source, position[0], position[1], time.time()),
        )

    def table_shape(self, source: str, schema: str, table: str) -> TableShapeRecord | None:
        """The columns recorded for a captured table, if any (``table_shapes``)."""
        row = self._db.execute(
            "SELECT columns, reshaped, reshaped_at FROM table_shapes"
            " WHERE source = ? AND schema_name = ? AND table_name = ?",
            (source, schema, table),
        ).fetchone()
        return None if row is None else TableShapeRecord(row[0], tuple(json.loads(row[1])), row[2])

    def table_shapes(self, source: str) -> dict[tuple[str, str], TableShapeRecord]:
        rows = self._db.execute(
            "SELECT schema_name, table_name, columns, reshaped, reshaped_at FROM table_shapes WHERE source = ?",
            (source,),
        )
        return {(r[0], r[1]): TableShapeRecord(r[2], tuple(json.loads(r[3])), r[4]) for r in rows}

    def set_table_shape(self, source: str, schema: str, table: str, shape: TableShapeRecord) -> None:
        """Record a table's columns (inside ``transaction()``, with the event that first uses them)."""
        self._db.execute(
            "INSERT INTO table_shapes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, schema_name, table_name)"
            " DO UPDATE SET columns = excluded.columns, reshaped = excluded.reshaped, reshaped_at = excluded.reshaped_at",
            (source, schema, table, shape.columns_json, json.dumps(list(shape.reshaped)), shape.reshaped_at),
        )

    def target_positions(self) -> list[tuple[str, str, str, int, float]]:
        return self._db.execute(
            "SELECT target, source, txn_key, seq, updated_at FROM target_positions ORDER BY target, source"
        ).fetchall()
