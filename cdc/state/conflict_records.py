"""The state store's records of conflict detection: natural keys, conflicts, held keys, entity rows.

A mixin of ``StateStore`` (it uses the store's connection, ``_db``), kept apart so that each
file has one job; call the writing methods inside ``store.transaction()``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

Position = tuple[str, int]
# the event document of a row other than ?6 holding natural key ?4 = ?5 in table ?1 ?2.?3
_NATURAL_KEY_OWNER = ("SELECT e.doc FROM natural_keys n JOIN events e ON e.event_id = n.event_id WHERE n.source = ?1"
                      " AND n.schema_name = ?2 AND n.table_name = ?3 AND n.names = ?4 AND n.vals = ?5 AND n.key != ?6"
                      " LIMIT 1")


class ConflictRecords:
    _db: sqlite3.Connection

    def hold_natural_keys(self, source: str, schema: str, table: str, key: str, event_id: str,
                          keys: list[tuple[str, str]], new_row: bool = False) -> list[str | None]:
        """The row's natural keys are now ``keys`` (names JSON, values JSON; none after a delete),
        and for each, the latest event document of another live row of the table holding it, if
        any. A ``new_row`` (never seen before) has none yet to replace."""
        if not new_row:
            self.drop_natural_keys(source, schema, table, key)
        return [self._db.execute(f"INSERT OR REPLACE INTO natural_keys VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                                 f" RETURNING ({_NATURAL_KEY_OWNER})",
                                 (source, schema, table, names, values, key, event_id)).fetchone()[0]
                for names, values in keys]

    def natural_key_owner(self, source: str, schema: str, table: str, names: str, values: str,
                          key: str) -> str | None:
        """The latest event document of another live row holding the natural key, if any."""
        row = self._db.execute(_NATURAL_KEY_OWNER, (source, schema, table, names, values, key)).fetchone()
        return row[0] if row else None

    def drop_natural_keys(self, source: str, schema: str, table: str, key: str) -> None:
        """The row holds no natural key any more."""
        self._db.execute("DELETE FROM natural_keys WHERE source = ? AND schema_name = ? AND table_name = ?"
                         " AND key = ?", (source, schema, table, key))

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

    def set_conflict_status(self, conflict_id: str, status: str, resolution: dict[str, Any]) -> None:
        self._db.execute("UPDATE conflicts SET status = ?, resolution = ? WHERE id = ?",
                         (status, json.dumps(resolution, ensure_ascii=False, default=str), conflict_id))

    def open_conflicts(self) -> dict[str, int]:
        """Pending conflicts by type."""
        return dict(self._db.execute("SELECT type, count(*) FROM conflicts WHERE status = 'pending' GROUP BY type"))

    def entity_row(self, entity: str, key: str) -> str | None:
        """The state of an entity key (``cdc.conflicts.vectors.EntityRow`` as JSON), if any."""
        row = self._db.execute("SELECT state FROM entity_rows WHERE entity = ? AND key = ?", (entity, key)).fetchone()
        return row[0] if row else None

    def set_entity_row(self, entity: str, key: str, state: str) -> None:
        self._db.execute("INSERT INTO entity_rows VALUES (?1, ?2, ?3) ON CONFLICT (entity, key) DO UPDATE"
                         " SET state = ?3", (entity, key, state))
