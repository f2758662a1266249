"""The state store's queries of the event log for people and DBA tasks: ``cdc events``, ``cdc replay``,
``cdc status``, and the pruning of old events.

A mixin of ``StateStore`` (it uses the store's connection, ``_db``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from cdc.model import Event


class EventQueries:
    _db: sqlite3.Connection

    def query_events(
        self,
        *,
        source: str | None = None,
        table: str | None = None,
        key: dict[str, str] | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
    ) -> Iterator[str]:
        """Event documents matching the filters, oldest first (for ``cdc events``)."""
        where, params = _event_filters(source, table, key, since, until)
        sql = f"SELECT doc FROM events WHERE {where} ORDER BY log_id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        for (doc,) in self._db.execute(sql, params):
            yield doc

    def replayable(
        self,
        *,
        after_log_id: int,
        limit: int,
        source: str | None = None,
        table: str | None = None,
        key: dict[str, str] | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[Event]:
        """Events matching the filters after ``after_log_id``, in log order, that a target can be
        sent again (rows cdc wrote into sources are left out)."""
        where, params = _event_filters(source, table, key, since, until)
        rows = self._db.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} AND log_id > ? AND source NOT LIKE 'sync:%'"
            " ORDER BY log_id LIMIT ?",
            [*params, after_log_id, limit],
        ).fetchall()
        return [logged_event(row) for row in rows]

    def count_replayable(
        self,
        *,
        source: str | None = None,
        table: str | None = None,
        key: dict[str, str] | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> dict[str, int]:
        """How many events ``replayable`` would give, by "schema.table"."""
        where, params = _event_filters(source, table, key, since, until)
        return dict(
            self._db.execute(
                f"SELECT schema_name || '.' || table_name, count(*) FROM events WHERE {where}"
                " AND source NOT LIKE 'sync:%' GROUP BY 1 ORDER BY 1",
                params,
            ).fetchall()
        )

    def prune_events(self, recorded_before: float, limit: int) -> int:
        """Delete up to ``limit`` events recorded before the cutoff that every target holds, no
        pending conflict names, and no natural key points to; how many went."""
        return self._db.execute(
            "DELETE FROM events WHERE log_id IN (SELECT e.log_id FROM events e WHERE e.recorded_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM target_positions t WHERE t.source = e.source"
            "  AND (t.txn_key < e.txn_key OR (t.txn_key = e.txn_key AND t.seq < e.seq)))"
            " AND NOT EXISTS (SELECT 1 FROM natural_key_sets s JOIN natural_key_rows n ON n.set_id = s.set_id"
            "  WHERE s.source = e.source AND s.schema_name = e.schema_name AND s.table_name = e.table_name"
            "  AND n.key = e.key AND n.event_id = e.event_id)"
            " AND NOT EXISTS (SELECT 1 FROM conflicts c, json_each(c.events) j WHERE c.status = 'pending'"
            "  AND json_extract(j.value, '$.event_id') = e.event_id)"
            " ORDER BY e.log_id LIMIT ?)",
            (recorded_before, limit),
        ).rowcount

    def oldest_event(self) -> tuple[str, str] | None:
        """The oldest event still in the log (what ``replay`` can reach back to): (commit_ts, event_id)."""
        row = self._db.execute("SELECT commit_ts, event_id FROM events ORDER BY log_id LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def counts(self) -> dict[str, Any]:
        events = dict(self._db.execute("SELECT source, count(*) FROM events GROUP BY source").fetchall())
        oldest = self._db.execute("SELECT min(commit_ts), max(commit_ts), max(recorded_at) FROM events").fetchone()
        return {
            "events_by_source": events,
            "oldest_commit_ts": oldest[0],
            "newest_commit_ts": oldest[1],
            "last_recorded_at": oldest[2],
        }

    def events_recorded_since(self, since: float) -> int:
        return self._db.execute("SELECT count(*) FROM events WHERE recorded_at >= ?", (since,)).fetchone()[0]


def _event_filters(
    source: str | None, table: str | None, key: dict[str, str] | None, since: str | None, until: str | None
) -> tuple[str, list[Any]]:
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


EVENT_COLUMNS = (
    "source, txn_key, seq, event_id, schema_name, table_name, op, key, commit_ts, doc, native, origin, log_id"
)


def logged_event(row: tuple) -> Event:
    """An event read back from the log (its columns as ``EVENT_COLUMNS`` lists them)."""
    stream, txn_key, seq, event_id, schema, table, op, key, commit_ts, doc, native, origin, log_id = row
    return Event(
        stream,
        txn_key,
        seq,
        event_id,
        schema,
        table,
        op,
        key,
        commit_ts,
        doc,
        json.loads(native) if native else None,
        origin=origin,
        log_id=log_id,
    )


def _json_path(column: str) -> str:
    return "$." + json.dumps(column)
