"""The ``postgres`` target: upserts and deletes by key, batched, position in the same transaction.

Every batch runs in one transaction that also records, in ``position_table``
(default ``cdc.applied_positions``), the last applied position per source; a crash
therefore leaves either the whole batch with its position or neither. Values from a
PostgreSQL source travel in their text form, untouched, and the server casts them to the
target column's type. Events without that text form (from a MySQL source) carry the
values of their JSON document, converted by the target column's type
(``cdc.targets.convert``: base64 to bytea, JSON to json text, lists to arrays...), read
once per table from information_schema. Target tables must exist with a primary key or
unique index on the key columns; ``table_map`` and ``column_map`` rename tables and columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from cdc.config import TargetSettings
from cdc.dsn import connect_kwargs, redact_dsn
from cdc.errors import BadRowError, DsnError, TargetError
from cdc.logs import one_line
from cdc.model import SYNC_MESSAGE_PREFIX, Event, WriteBack
from cdc.problems import Problem
from cdc.targets.base import DatabaseTarget, consecutive_runs
from cdc.targets.convert import (
    ConversionError,
    Converter,
    column_converter,
    convert_row,
    old_key_and_after,
    postgres_family,
)

COPY_ROWS = 2  # upserts of one table in a row, at least, that go through a staging table


@dataclass(frozen=True, slots=True)
class _Action:
    statement: sql.Composed
    params: tuple[Any, ...]
    merge: _Merge | None = None  # how a run of it goes set-based (upserts)


@dataclass(frozen=True, slots=True)
class _Merge:
    """How a run of upserts of one table and set of columns goes in set-based: COPY into a
    staging table with the target columns' types, then one INSERT ... SELECT ... ON CONFLICT
    (a set holds each key once)."""

    create: sql.Composed
    copy: sql.Composed
    merge: sql.Composed
    empty: sql.Composed
    key_positions: tuple[int, ...]


class PostgresTarget(DatabaseTarget):
    def __init__(self, settings: TargetSettings, marks_writes: bool = False) -> None:
        super().__init__(settings, marks_writes)
        self._conn: psycopg.Connection | None = None
        self._tables: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}
        self._statements: dict[tuple, sql.Composed] = {}
        self._converters: dict[str, dict[str, Converter]] = {}  # target table -> column -> converter
        self._upserts: dict[tuple, tuple[sql.Composed, _Merge | None]] = {}  # each with its set-based form
        schema, table = settings.position_table.split(".", 1)
        self._position_table = sql.Identifier(schema, table)
        self._position_schema = sql.Identifier(schema)

    # -- connection --------------------------------------------------------------

    def open(self) -> None:
        assert self._settings.dsn is not None
        try:
            self._conn = psycopg.connect(
                **connect_kwargs(self._settings.dsn, self._settings.password),
                autocommit=True,
                options="-c timezone=UTC -c datestyle=ISO",
            )
            self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._position_schema))
            self._conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (target text NOT NULL, source text NOT NULL,"
                    " txn_key text NOT NULL, seq bigint NOT NULL, event_id text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (target, source))"
                ).format(self._position_table)
            )
            rows = self._conn.execute(
                sql.SQL("SELECT source, txn_key, seq FROM {} WHERE target = %s").format(self._position_table),
                (self.name,),
            ).fetchall()
        except psycopg.Error as exc:
            self.close()
            raise TargetError(f"target {self.name} ({redact_dsn(self._settings.dsn)}): {one_line(exc)}") from None
        self._positions = {source: (txn_key, seq) for source, txn_key, seq in rows}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- applying ------------------------------------------------------------------

    def apply(self, source: str, events: list[Event], record: bool = True) -> None:
        """Write the events' rows, and (``record``) the last one's position, in one transaction;
        a replay (``record=False``) leaves the stream's position alone."""
        if not events:
            return
        assert self._conn is not None
        last = events[-1]
        try:
            actions = [action for event in events for action in self._actions(event)]
            with self._conn.transaction(), self._conn.cursor() as cur:
                if self._marks_writes and record:  # first, so that the source's stream knows the rows as echoes
                    marker = WriteBack(self.name, source, last.txn_key, last.seq)
                    cur.execute("SELECT pg_logical_emit_message(true, %s, %s)", (SYNC_MESSAGE_PREFIX, marker.to_json()))
                for (statement, merge), params in consecutive_runs(((a.statement, a.merge), a.params) for a in actions):
                    if merge is not None and len(params) >= COPY_ROWS:
                        self._merge(cur, merge, statement, params)
                    else:
                        cur.executemany(statement, params)
                if not record:
                    return
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (target, source, txn_key, seq, event_id) VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (target, source) DO UPDATE SET txn_key = EXCLUDED.txn_key,"
                        " seq = EXCLUDED.seq, event_id = EXCLUDED.event_id, applied_at = now()"
                    ).format(self._position_table),
                    (self.name, source, last.txn_key, last.seq, last.event_id),
                )
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise TargetError(f"target {self.name}: {one_line(exc)}") from None
        except (psycopg.DataError, psycopg.IntegrityError) as exc:  # a value or a row the table refuses
            raise BadRowError(f"target {self.name}: {one_line(exc)}") from None
        except psycopg.Error as exc:  # the data or the target's tables are wrong: retrying cannot help
            raise TargetError(f"target {self.name}: {one_line(exc)}", fatal=True) from None
        except ConversionError as exc:
            raise TargetError(f"target {self.name}: {exc}", fatal=True) from None
        self._positions[source] = (last.txn_key, last.seq)

    def _merge(self, cur: psycopg.Cursor, merge: _Merge, statement: sql.Composed, rows: list[tuple[Any, ...]]) -> None:
        """Upsert ``rows`` set-based, each once and a key's rows in their order (a trigger on the
        target sees every change, as one by one); one by one after all if another unique index
        of the table refuses a set (where the order of the rows decides)."""
        positions = merge.key_positions
        assert self._conn is not None
        try:
            sets = _unique_runs(rows, positions)
        except TypeError:  # a key value that is not hashable (an array in the key)
            cur.executemany(statement, rows)
            return
        cur.execute(merge.create)
        for part in sets:
            if len(part) < COPY_ROWS:
                cur.executemany(statement, part)
                continue
            with cur.copy(merge.copy) as copy:
                for row in part:
                    copy.write_row(row)
            try:
                with self._conn.transaction():  # a savepoint
                    cur.execute(merge.merge)
            except psycopg.errors.UniqueViolation:
                cur.executemany(statement, part)
            cur.execute(merge.empty)

    def _actions(self, event: Event) -> list[_Action]:
        if event.held:
            return []
        table, columns = self._table(event.source, event.schema, event.table)
        if event.op == "truncate":
            return [_Action(sql.SQL("TRUNCATE {}").format(_identifier(table)), ())]
        key, after = self._images(event, table, columns)
        actions = []
        old_key = key
        new_key = {column: after[column] for column in key} if after is not None else None
        if after is None or old_key != new_key:
            actions.append(self._delete(table, columns, old_key))
        if after is not None:
            actions.append(self._upsert(table, columns, list(key), after))
        return actions

    def _delete(self, table: str, columns: dict[str, str], key: dict[str, Any]) -> _Action:
        names = tuple(key)
        cache_key = ("delete", table, names)
        statement = self._statements.get(cache_key)
        if statement is None:
            condition = sql.SQL(" AND ").join(
                sql.SQL("{} = %s").format(sql.Identifier(columns.get(n, n))) for n in names
            )
            statement = self._statements[cache_key] = sql.SQL("DELETE FROM {} WHERE {}").format(
                _identifier(table), condition
            )
        return _Action(statement, tuple(key.values()))

    def _upsert(self, table: str, columns: dict[str, str], key_names: list[str], after: dict[str, Any]) -> _Action:
        names = tuple(after)
        cache_key = (table, names, tuple(key_names))
        found = self._upserts.get(cache_key)
        if found is None:
            target_names = [sql.Identifier(columns.get(n, n)) for n in names]
            keys = [sql.Identifier(columns.get(n, n)) for n in key_names]
            updates = [
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(columns.get(n, n)))
                for n in names
                if n not in key_names
            ]
            conflict = (
                sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(updates)) if updates else sql.SQL("DO NOTHING")
            )
            statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
                _identifier(table),
                sql.SQL(", ").join(target_names),
                sql.SQL(", ").join(sql.Placeholder() * len(names)),
                sql.SQL(", ").join(keys),
                conflict,
            )
            merge = (
                self._set_based(table, target_names, keys, conflict, names, key_names)
                if all(n in names for n in key_names)
                else None
            )
            found = self._upserts[cache_key] = (statement, merge)
        return _Action(found[0], tuple(after.values()), found[1])

    def _set_based(
        self,
        table: str,
        target_names: list[sql.Identifier],
        keys: list[sql.Identifier],
        conflict: sql.Composable,
        names: tuple[str, ...],
        key_names: list[str],
    ) -> _Merge:
        stage = sql.Identifier(f"cdc_stage_{len(self._upserts)}")
        columns = sql.SQL(", ").join(target_names)
        return _Merge(
            create=sql.SQL(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
            ).format(stage, columns, _identifier(table)),
            copy=sql.SQL("COPY {} ({}) FROM STDIN").format(stage, columns),
            merge=sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
                _identifier(table), columns, columns, stage, sql.SQL(", ").join(keys), conflict
            ),
            empty=sql.SQL("TRUNCATE {}").format(stage),
            key_positions=tuple(names.index(n) for n in key_names),
        )

    def _images(
        self, event: Event, table: str, columns: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The key (of the row as it was) and the after image to write.

        The source's text form when it has one; else the JSON document's values converted
        by the target columns' types.
        """
        if event.native is not None and event.native.get("key") is not None:
            return event.native["key"], event.native["after"]
        key, after = old_key_and_after(event)
        converters = self._column_converters(table)
        by_source = {name: converters.get(columns.get(name, name), _TEXT) for name in [*key, *(after or ())]}
        try:
            key = convert_row(key, by_source)
            if after is not None:
                after = convert_row(after, by_source)
        except ConversionError as exc:
            raise BadRowError(
                f"target {self.name}: table {table}: event {event.event_id}: {exc}", event.event_id
            ) from None
        return key, after

    def _column_converters(self, table: str) -> dict[str, Converter]:
        found = self._converters.get(table)
        if found is None:
            assert self._conn is not None
            schema, name = table.split(".", 1)
            rows = self._conn.execute(
                "SELECT column_name, udt_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (schema, name),
            ).fetchall()
            found = self._converters[table] = {column: column_converter(postgres_family(udt)) for column, udt in rows}
        return found

    def _table(self, source: str, schema: str, table: str) -> tuple[str, dict[str, str]]:
        cache_key = (source, schema, table)
        found = self._tables.get(cache_key)
        if found is None:
            found = self._tables[cache_key] = (
                self._settings.mapped_table(source, schema, table),
                self._settings.mapped_columns(source, schema, table),
            )
        return found


_TEXT = column_converter("text")  # a column the target lacks: the INSERT will say so


def _unique_runs(rows: list[tuple[Any, ...]], key_positions: tuple[int, ...]) -> list[list[tuple[Any, ...]]]:
    """``rows`` cut into consecutive runs in which no key appears twice."""
    runs: list[list[tuple[Any, ...]]] = [[]]
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        key = tuple(row[i] for i in key_positions)
        if key in seen:
            runs.append([])
            seen.clear()
        seen.add(key)
        runs[-1].append(row)
    return runs


def _identifier(qualified: str) -> sql.Identifier:
    return sql.Identifier(*qualified.split(".", 1))


def make(settings: TargetSettings, store: object, marks_writes: bool = False) -> PostgresTarget:
    return PostgresTarget(settings, marks_writes)


def check(settings: TargetSettings) -> list[Problem]:
    """Whether the target database can be reached with the configured DSN and password."""
    assert settings.dsn is not None  # a postgres target needs one (TargetSettings' validation)
    try:
        psycopg.connect(**connect_kwargs(settings.dsn, settings.password)).close()
    except (psycopg.Error, DsnError) as exc:
        return [
            Problem(
                f"cannot connect to {redact_dsn(settings.dsn)}: {one_line(exc)}",
                "check the target's dsn, password and pg_hba.conf",
            )
        ]
    return []
