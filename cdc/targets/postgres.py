"""The ``postgres`` target: upserts and deletes by key, batched, position in the same transaction.

Every batch runs in one transaction that also records, in ``position_table``
(default ``cdc.applied_positions``), the last applied position per source with the
identity of the state store that wrote it (``cdc.targets.base``); a crash therefore leaves
either the whole batch with its position or neither. Values from a
PostgreSQL source travel in their text form, untouched, and the server reads them with the
input function of the target column's type, as its own logical replication does (a key's
values cast to that type, ``cdc.targets.postgres_sql``). Events without that text form (from
a MySQL source) carry the values of their JSON document, converted by the target column's
type (``cdc.targets.convert``: base64 to bytea, JSON to json text, lists to arrays...); a
value no column can hold (text with a NUL) is a ``BadRowError`` naming the table, the event
and the column. Column types are read once per table from the catalog. Target tables must
exist with a primary key or unique index on the key columns; ``table_map`` and
``column_map`` rename tables and columns.
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
from cdc.state.identity import WITHOUT_IDENTITY, Installation
from cdc.state.store import StateStore
from cdc.targets.base import DatabaseTarget, consecutive_runs
from cdc.targets.convert import (
    ConversionError,
    Converter,
    column_converter,
    convert_row,
    old_key_and_after,
    postgres_converter,
)
from cdc.targets.postgres_sql import (
    COLUMNS_SQL,
    Merge,
    delete_statement,
    merge_statements,
    truncate_statement,
    upsert_statement,
)

COPY_ROWS = 2  # upserts of one table in a row, at least, that go through a staging table


@dataclass(frozen=True, slots=True)
class _Action:
    statement: sql.Composed
    params: tuple[Any, ...]
    merge: Merge | None = None  # how a run of it goes set-based (upserts)


@dataclass(frozen=True, slots=True)
class _Column:
    """A column of a target table: its type as a cast names it, and the converter of JSON values."""

    type: str
    convert: Converter


class PostgresTarget(DatabaseTarget):
    def __init__(
        self, settings: TargetSettings, marks_writes: bool = False, installation: Installation = WITHOUT_IDENTITY
    ) -> None:
        super().__init__(settings, marks_writes, installation)
        self._conn: psycopg.Connection | None = None
        self._tables: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}
        self._statements: dict[tuple, sql.Composed] = {}
        self._columns: dict[str, dict[str, _Column]] = {}  # target table -> its columns
        self._upserts: dict[tuple, tuple[sql.Composed, Merge | None]] = {}  # each with its set-based form
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
                    " applied_at timestamptz NOT NULL DEFAULT now(), installation text, PRIMARY KEY (target, source))"
                ).format(self._position_table)
            )
            self._add_installation_column()
            rows = self._conn.execute(
                sql.SQL("SELECT source, txn_key, seq, installation FROM {} WHERE target = %s").format(
                    self._position_table
                ),
                (self.name,),
            ).fetchall()
        except psycopg.Error as exc:
            self.close()
            raise TargetError(f"target {self.name} ({redact_dsn(self._settings.dsn)}): {one_line(exc)}") from None
        except DsnError as exc:
            raise DsnError(f"target {self.name}: {exc}") from None
        self._take_positions(rows)

    def _add_installation_column(self) -> None:
        """A position table made by a cdc before installation identities gets their column."""
        assert self._conn is not None
        schema, table = self._settings.position_table.split(".", 1)
        if self._conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
            " AND column_name = 'installation'",
            (schema, table),
        ).fetchone():
            return
        statement = sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS installation text").format(self._position_table)
        try:
            self._conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            self.close()
            raise TargetError(
                f"target {self.name}: the position table {self._settings.position_table} lacks the column"
                f" installation, which the cdc user may not add: run {statement.as_string()!r} as the table's owner",
                fatal=True,
            ) from None

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
                    marker = WriteBack(self.name, source, last.txn_key, last.seq, self._installation.id)
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
                        "INSERT INTO {} (target, source, txn_key, seq, event_id, installation)"
                        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (target, source) DO UPDATE SET"
                        " txn_key = EXCLUDED.txn_key, seq = EXCLUDED.seq, event_id = EXCLUDED.event_id,"
                        " installation = EXCLUDED.installation, applied_at = now()"
                    ).format(self._position_table),
                    (self.name, source, last.txn_key, last.seq, last.event_id, self._installation.id),
                )
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise TargetError(f"target {self.name}: {one_line(exc)}") from None
        except (psycopg.DataError, psycopg.IntegrityError) as exc:  # a value or a row the table refuses
            raise BadRowError(f"target {self.name}: {one_line(exc)}") from None
        except psycopg.Error as exc:  # the data or the target's tables are wrong: retrying cannot help
            raise TargetError(f"target {self.name}: {one_line(exc)}", fatal=True) from None
        self._positions[source] = (last.txn_key, last.seq)

    def _merge(self, cur: psycopg.Cursor, merge: Merge, statement: sql.Composed, rows: list[tuple[Any, ...]]) -> None:
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
            return [_Action(truncate_statement(table), ())]
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
            types = {name: column.type for name, column in self._target_columns(table).items()}
            statement = self._statements[cache_key] = delete_statement(table, [columns.get(n, n) for n in names], types)
        return _Action(statement, tuple(key.values()))

    def _upsert(self, table: str, columns: dict[str, str], key_names: list[str], after: dict[str, Any]) -> _Action:
        names = tuple(after)
        cache_key = (table, names, tuple(key_names))
        found = self._upserts.get(cache_key)
        if found is None:
            targets = [columns.get(n, n) for n in names]
            keys = [columns.get(n, n) for n in key_names]
            statement = upsert_statement(table, targets, keys)
            stage = f"cdc_stage_{len(self._upserts)}"
            merge = merge_statements(stage, table, targets, keys) if all(n in names for n in key_names) else None
            found = self._upserts[cache_key] = (statement, merge)
        return _Action(found[0], tuple(after.values()), found[1])

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
        converters = {name: column.convert for name, column in self._target_columns(table).items()}
        by_source = {name: converters.get(columns.get(name, name), _TEXT) for name in [*key, *(after or ())]}
        try:
            key = convert_row(key, by_source)
            if after is not None:
                after = convert_row(after, by_source, f"target {self.name}: table {table}: key {event.key_json}")
        except ConversionError as exc:
            raise BadRowError(
                f"target {self.name}: table {table}: event {event.event_id}: {exc}",
                event.event_id,
                exc.column,
            ) from None
        return key, after

    def _target_columns(self, table: str) -> dict[str, _Column]:
        """The target table's columns, read from the catalog once (none: it does not exist)."""
        found = self._columns.get(table)
        if found is None:
            assert self._conn is not None
            rows = self._conn.execute(COLUMNS_SQL, table.split(".", 1)).fetchall()
            found = self._columns[table] = {
                column: _Column(cast, postgres_converter(udt)) for column, cast, udt in rows
            }
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


def make(settings: TargetSettings, store: StateStore, marks_writes: bool = False) -> PostgresTarget:
    return PostgresTarget(settings, marks_writes, store.installation)


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
