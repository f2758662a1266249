"""The state store's records of conflict detection: natural keys, conflicts, held keys, entity rows.

A mixin of ``StateStore`` (it uses the store's connection, ``_db``), kept apart so that each
file has one job; call the writing methods inside ``store.transaction()``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, cast

Position = tuple[str, int]
_SEEDED = "natural_keys_seeded:"  # meta key prefix, then the JSON of [source, schema, table]
_LOOKUP_CHUNK = 500  # natural key values per holders query (well within SQLite's limit on parameters)


class ConflictRecords:
    _db: sqlite3.Connection

    def natural_key_holders(
        self, source: str, schema: str, table: str, names: str, values: list[str]
    ) -> dict[str, list[tuple[str, str]]]:
        """For each of ``values`` (values JSON of the natural key ``names``) that rows of the
        table hold: their (key, event id), by key."""
        found: dict[str, list[tuple[str, str]]] = {}
        set_id = self._natural_key_set(source, schema, table, names, create=False)
        for start in range(0, len(values), _LOOKUP_CHUNK) if set_id is not None else ():
            chunk = values[start : start + _LOOKUP_CHUNK]
            rows = self._db.execute(
                f"SELECT vals, key, event_id FROM natural_key_rows WHERE set_id = ? AND vals IN ({', '.join('?' * len(chunk))})"
                " ORDER BY vals, key",
                (set_id, *chunk),
            )
            for vals, key, event_id in rows:
                found.setdefault(vals, []).append((key, event_id))
        return found

    def write_natural_keys(
        self, source: str, dropped_rows: list[tuple[str, str, str]], held: list[tuple[str, str, str, str, str, str]]
    ) -> None:
        """The rows ``dropped_rows`` (schema, table, key) hold none of their natural keys any more,
        then rows hold ``held`` (schema, table, names JSON, values JSON, key, event id)."""
        self._db.executemany(
            "DELETE FROM natural_key_rows WHERE key = ? AND set_id IN (SELECT set_id"
            " FROM natural_key_sets WHERE source = ? AND schema_name = ? AND table_name = ?)",
            [(key, source, schema, table) for schema, table, key in dropped_rows],
        )
        sets: dict[tuple[str, str, str], int] = {}
        rows = []
        for schema, table, names, vals, key, event_id in held:
            set_id = sets.get((schema, table, names))
            if set_id is None:
                # create=True makes the set if it is missing (INSERT ... RETURNING): never None
                set_id = sets[(schema, table, names)] = cast(
                    int, self._natural_key_set(source, schema, table, names, create=True)
                )
            rows.append((set_id, vals, key, event_id))
        self._db.executemany("INSERT OR REPLACE INTO natural_key_rows VALUES (?, ?, ?, ?)", rows)

    def _natural_key_set(self, source: str, schema: str, table: str, names: str, create: bool) -> int | None:
        """The id of the natural key ``names`` (JSON) of the table; None if none is stored and not ``create``."""
        where = "source = ? AND schema_name = ? AND table_name = ? AND names = ?"
        row = self._db.execute(
            f"SELECT set_id FROM natural_key_sets WHERE {where}", (source, schema, table, names)
        ).fetchone()
        if row is None and create:
            row = self._db.execute(
                "INSERT INTO natural_key_sets (source, schema_name, table_name, names)"
                " VALUES (?, ?, ?, ?) RETURNING set_id",
                (source, schema, table, names),
            ).fetchone()
        return None if row is None else row[0]

    def drop_natural_keys(self, source: str, schema: str, table: str, key: str) -> None:
        """The row holds no natural key any more."""
        self.write_natural_keys(source, [(schema, table, key)], [])

    def forget_natural_keys(self, source: str, schema: str, table: str) -> None:
        """No row of the table holds a natural key any more (before its keys are read again)."""
        self._db.execute(
            "DELETE FROM natural_key_rows WHERE set_id IN (SELECT set_id FROM natural_key_sets"
            " WHERE source = ? AND schema_name = ? AND table_name = ?)",
            (source, schema, table),
        )

    def natural_key_duplicates(self, source: str, schema: str, table: str) -> Iterator[tuple[str, str, list[str]]]:
        """Each natural key that several rows of the table hold: (names JSON, values JSON, their keys)."""
        rows = self._db.execute(
            "SELECT s.names, n.vals, json_group_array(n.key) FROM natural_key_rows n"
            " JOIN natural_key_sets s ON s.set_id = n.set_id"
            " WHERE s.source = ? AND s.schema_name = ? AND s.table_name = ?"
            " GROUP BY n.set_id, n.vals HAVING count(*) > 1 ORDER BY n.set_id, n.vals",
            (source, schema, table),
        )
        for names, vals, keys in rows:
            yield names, vals, json.loads(keys)

    def seeded_natural_keys(self, source: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(schema, table) -> when the natural keys of its rows that existed before cdc were read:
        ``natural_keys`` (the configuration read), ``position`` (the read's), ``read_at`` (Unix time)."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1", (f"{_SEEDED}[{json.dumps(source)},",)
        )
        found = {}
        for key, value in rows:
            _, schema, table = json.loads(key[len(_SEEDED) :])
            found[(schema, table)] = json.loads(value)
        return found

    def set_seeded_natural_keys(self, source: str, schema: str, table: str, seeded: dict[str, Any] | None) -> None:
        """Record (None: forget) that the natural keys of the table's existing rows were read."""
        key = _SEEDED + json.dumps([source, schema, table])
        if seeded is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute(
                "INSERT INTO meta VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2", (key, json.dumps(seeded))
            )

    def add_conflict(self, conflict_id: str, source: str, conflict, status: str, resolution: dict | None) -> None:
        events = [
            {
                "event_id": e.event_id,
                "commit_ts": e.commit_ts.isoformat(timespec="microseconds"),
                "writer": e.writer,
                "source": e.source,
                "op": e.op,
                "before": {f: (e.before or {}).get(f) for f in conflict.fields},
                "after": {f: (e.after or {}).get(f) for f in conflict.fields},
            }
            for e in conflict.events
        ]
        self._db.execute(
            "INSERT OR REPLACE INTO conflicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conflict_id,
                conflict.type,
                conflict.severity,
                source,
                conflict.table,
                conflict.key,
                json.dumps(list(conflict.fields)),
                json.dumps(events, ensure_ascii=False),
                conflict.rule,
                json.dumps(conflict.evidence, ensure_ascii=False, default=str),
                conflict.explanation,
                status,
                json.dumps(resolution, ensure_ascii=False, default=str) if resolution is not None else None,
                events[-1]["commit_ts"],
                time.time(),
            ),
        )

    def conflicts(
        self,
        *,
        conflict_id: str | None = None,
        type: str | None = None,
        table: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int | None = None,
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
        self._db.execute(
            "INSERT OR IGNORE INTO held_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
            (source, schema, table, key, conflict_id, since[0], since[1]),
        )

    def release(self, conflict_id: str) -> None:
        self._db.execute("DELETE FROM held_keys WHERE conflict_id = ?", (conflict_id,))

    def held_keys(self) -> dict[tuple[str, str, str, str], Position]:
        """Each held key and the position from which its changes wait."""
        rows = self._db.execute(
            "SELECT source, schema_name, table_name, key, min(txn_key || ':' || printf('%010d', seq))"
            " FROM held_keys GROUP BY source, schema_name, table_name, key"
        )
        return {(r[0], r[1], r[2], r[3]): (r[4].rsplit(":", 1)[0], int(r[4].rsplit(":", 1)[1])) for r in rows}

    def set_conflict_status(self, conflict_id: str, status: str, resolution: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE conflicts SET status = ?, resolution = ? WHERE id = ?",
            (status, json.dumps(resolution, ensure_ascii=False, default=str), conflict_id),
        )

    def open_conflicts(self) -> dict[str, int]:
        """Pending conflicts by type."""
        return dict(self._db.execute("SELECT type, count(*) FROM conflicts WHERE status = 'pending' GROUP BY type"))

    def entity_row(self, entity: str, key: str) -> str | None:
        """The state of an entity key (``cdc.conflicts.vectors.EntityRow`` as JSON), if any."""
        row = self._db.execute("SELECT state FROM entity_rows WHERE entity = ? AND key = ?", (entity, key)).fetchone()
        return row[0] if row else None

    def set_entity_row(self, entity: str, key: str, state: str) -> None:
        self._db.execute(
            "INSERT INTO entity_rows VALUES (?1, ?2, ?3) ON CONFLICT (entity, key) DO UPDATE SET state = ?3",
            (entity, key, state),
        )
