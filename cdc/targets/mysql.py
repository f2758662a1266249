"""The ``mysql`` target (MySQL 8, MariaDB 10.6+): upserts and deletes by key, position in the same transaction.

Like the postgres target, every ``apply`` is one transaction holding the batch's rows and,
in ``position_table`` (default ``cdc.applied_positions``; in MySQL the schema is a
database), the last applied position per source with the identity of the state store that
wrote it (``cdc.targets.base``); a crash leaves both or neither. Rows are
upserted with ``INSERT ... ON DUPLICATE KEY UPDATE`` (so a conflict on *any* unique key of
the target table updates that row), deleted by key, and a truncate becomes ``DELETE FROM``
(TRUNCATE would commit on its own). Values always come from the event's JSON document and
are converted by the target column's type (``cdc.targets.convert``), read once per table
from information_schema; MariaDB's JSON columns (LONGTEXT with a ``json_valid`` check) are
recognised by that check.

The session runs in UTC with a fixed ``sql_mode``: STRICT_ALL_TABLES (refuse, never
truncate), NO_AUTO_VALUE_ON_ZERO (a replicated id 0 stays 0), and without
NO_BACKSLASH_ESCAPES, which would break the driver's quoting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pymysql

from cdc.config import TargetSettings
from cdc.dsn import mysql_params, redact_dsn
from cdc.errors import BadRowError, DsnError, TargetError
from cdc.model import Event
from cdc.problems import Problem
from cdc.state.identity import WITHOUT_IDENTITY, Installation
from cdc.state.store import StateStore
from cdc.targets.base import DatabaseTarget, consecutive_runs
from cdc.targets.convert import (
    ConversionError,
    Converter,
    column_converter,
    convert_row,
    mysql_family,
    old_key_and_after,
)

_SESSION = "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'"
_JSON_CHECK = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)
# Errors that retrying cannot cure, beyond pymysql's IntegrityError, DataError, ProgrammingError
# and NotSupportedError: unknown column, incorrect value, CHECK failed (MariaDB, MySQL), invalid JSON.
_FATAL_CODES = {1054, 1292, 1366, 4025, 3819, 3140}
_DENIED = {1142, 1044}  # the command (ALTER) or the database refused to the account
_FATAL_CLASSES = (
    pymysql.err.IntegrityError,
    pymysql.err.DataError,
    pymysql.err.ProgrammingError,
    pymysql.err.NotSupportedError,
)
# Of those, the ones about a row rather than the table: a value or a row the table refuses.
_BAD_ROW_CODES = {1292, 1366, 4025, 3819, 3140}
_BAD_ROW_CLASSES = (pymysql.err.IntegrityError, pymysql.err.DataError)


@dataclass(slots=True)
class _Table:
    """A target table: its quoted name and, per source column, the quoted target column and converter."""

    name: str
    quoted: str
    column_map: dict[str, str]
    families: dict[str, tuple[str, str]]  # casefolded target column -> (column, family)
    resolved: dict[str, tuple[str, Converter]] = field(default_factory=dict)


class MysqlTarget(DatabaseTarget):
    def __init__(
        self, settings: TargetSettings, marks_writes: bool = False, installation: Installation = WITHOUT_IDENTITY
    ) -> None:
        super().__init__(settings, marks_writes, installation)
        self._conn: pymysql.connections.Connection | None = None
        self._tables: dict[tuple[str, str, str], _Table] = {}
        self._statements: dict[tuple, str] = {}
        self._is_mariadb = False
        schema, table = settings.position_table.split(".", 1)
        self._position_schema = quote(schema)
        self._position_table = f"{quote(schema)}.{quote(table)}"

    # -- connection --------------------------------------------------------------

    def open(self) -> None:
        assert self._settings.dsn is not None
        try:
            self._conn = pymysql.connect(**mysql_params(self._settings.dsn, self._settings.password), autocommit=False)
            self._is_mariadb = "mariadb" in self._conn.get_server_info().lower()
            with self._conn.cursor() as cur:
                cur.execute(_SESSION, ())
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {self._position_schema}", ())
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._position_table} ("
                    " target VARCHAR(255) NOT NULL, source VARCHAR(255) NOT NULL, txn_key TEXT NOT NULL,"
                    " seq BIGINT NOT NULL, event_id TEXT NOT NULL,"
                    " applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), installation VARCHAR(64),"
                    " PRIMARY KEY (target, source)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                    (),
                )
                self._add_installation_column(cur)
                cur.execute(
                    f"SELECT source, txn_key, seq, installation FROM {self._position_table} WHERE target = %s",
                    (self.name,),
                )
                rows = cur.fetchall()
            self._conn.commit()
        except TargetError:
            self.close()
            raise
        except pymysql.MySQLError as exc:
            self.close()
            raise _error(f"target {self.name} ({redact_dsn(self._settings.dsn)})", exc) from None
        except DsnError as exc:
            raise DsnError(f"target {self.name}: {exc}") from None
        self._take_positions(rows)

    def _add_installation_column(self, cur: pymysql.cursors.Cursor) -> None:
        """A position table made by a cdc before installation identities gets their column."""
        schema, table = self._settings.position_table.split(".", 1)
        cur.execute(
            "SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
            " AND COLUMN_NAME = 'installation'",
            (schema, table),
        )
        if cur.fetchone():
            return
        statement = f"ALTER TABLE {self._position_table} ADD COLUMN installation VARCHAR(64)"
        try:
            cur.execute(statement, ())
        except pymysql.MySQLError as exc:
            if not exc.args or exc.args[0] not in _DENIED:
                raise
            raise TargetError(
                f"target {self.name}: the position table {self._settings.position_table} lacks the column"
                f" installation, which the cdc user may not add: grant it ALTER on it, or run"
                f" {statement.replace('%%', '%')!r} as an administrator",
                fatal=True,
            ) from None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.MySQLError:
                pass
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
            with self._conn.cursor() as cur:
                # the position first: for a sync target it tells the source's stream that the
                # transaction's rows are echoes of cdc's own write
                if record:
                    cur.execute(
                        f"INSERT INTO {self._position_table} (target, source, txn_key, seq, event_id, installation)"
                        " VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE txn_key = VALUES(txn_key),"
                        " seq = VALUES(seq), event_id = VALUES(event_id), installation = VALUES(installation),"
                        " applied_at = CURRENT_TIMESTAMP(6)",
                        (self.name, source, last.txn_key, last.seq, last.event_id, self._installation.id),
                    )
                for statement, params in consecutive_runs(actions):
                    cur.executemany(statement, params)
            self._conn.commit()
        except TargetError:
            self._rollback()
            raise
        except pymysql.MySQLError as exc:
            self._rollback()
            raise _error(f"target {self.name}", exc) from None
        if record:
            self._positions[source] = (last.txn_key, last.seq)

    def _rollback(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rollback()
        except pymysql.MySQLError:
            self.close()  # the connection is gone; the daemon opens a new target

    def _actions(self, event: Event) -> list[tuple[str, tuple[Any, ...]]]:
        if event.held:
            return []
        table = self._table(event.source, event.schema, event.table)
        if event.op == "truncate":
            return [(f"DELETE FROM {table.quoted}", ())]
        old_key, after = old_key_and_after(event)
        key_names = list(old_key)
        new_key = {name: after[name] for name in key_names} if after is not None else None
        actions = []
        try:
            if after is None or old_key != new_key:
                actions.append(self._delete(table, event, old_key))
            if after is not None:
                actions.append(self._upsert(table, event, key_names, after))
        except ConversionError as exc:
            raise BadRowError(
                f"target {self.name}: table {table.name}: event {event.event_id}: {exc}", event.event_id
            ) from None
        return actions

    def _delete(self, table: _Table, event: Event, key: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
        names = tuple(key)
        columns = [self._column(table, event, name) for name in names]
        cache_key = ("delete", table.quoted, names)
        statement = self._statements.get(cache_key)
        if statement is None:
            condition = " AND ".join(f"{quoted} = %s" for quoted, _ in columns)
            statement = self._statements[cache_key] = f"DELETE FROM {table.quoted} WHERE {condition}"
        values = convert_row(key, {name: convert for name, (_, convert) in zip(names, columns)})
        return statement, tuple(values.values())

    def _upsert(
        self, table: _Table, event: Event, key_names: list[str], after: dict[str, Any]
    ) -> tuple[str, tuple[Any, ...]]:
        names = tuple(after)
        columns = [self._column(table, event, name) for name in names]
        cache_key = ("upsert", table.quoted, names, tuple(key_names))
        statement = self._statements.get(cache_key)
        if statement is None:
            quoted = [column for column, _ in columns]
            updates = [f"{column} = VALUES({column})" for column, name in zip(quoted, names) if name not in key_names]
            if not updates:  # only key columns: an existing row is already right
                first = quoted[names.index(key_names[0])] if key_names and key_names[0] in names else quoted[0]
                updates = [f"{first} = {first}"]
            statement = self._statements[cache_key] = (
                f"INSERT INTO {table.quoted} ({', '.join(quoted)}) VALUES ({', '.join(['%s'] * len(names))})"
                f" ON DUPLICATE KEY UPDATE {', '.join(updates)}"
            )
        values = convert_row(after, {name: convert for name, (_, convert) in zip(names, columns)})
        return statement, tuple(values.values())

    # -- catalog -------------------------------------------------------------------

    def _table(self, source: str, schema: str, table: str) -> _Table:
        cache_key = (source, schema, table)
        found = self._tables.get(cache_key)
        if found is None:
            qualified = f"{schema}.{table}"
            mapped = self._settings.mapped_table(source, schema, table)
            column_map = self._settings.mapped_columns(source, schema, table)
            database, name = mapped.split(".", 1)
            families = self._families(database, name)
            if not families:
                raise TargetError(
                    f"target {self.name}: table {mapped} does not exist in the target database: "
                    f"create it (with the columns of {source}:{qualified} and a primary key on "
                    "its key columns) or map it with table_map",
                    fatal=True,
                )
            found = self._tables[cache_key] = _Table(mapped, f"{quote(database)}.{quote(name)}", column_map, families)
        return found

    def _families(self, database: str, table: str) -> dict[str, tuple[str, str]]:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS"
                " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (database, table),
            )
            columns = {name: mysql_family(data_type, column_type) for name, data_type, column_type in cur.fetchall()}
            if self._is_mariadb and columns:
                cur.execute(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
                    " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
                    (database, table),
                )
                for (clause,) in cur.fetchall():
                    match = _JSON_CHECK.fullmatch(clause.strip())
                    if match is not None and match.group(1).replace("``", "`") in columns:
                        columns[match.group(1).replace("``", "`")] = "json"
        # MySQL column names are case-insensitive.
        return {name.casefold(): (name, family) for name, family in columns.items()}

    def _column(self, table: _Table, event: Event, name: str) -> tuple[str, Converter]:
        found = table.resolved.get(name)
        if found is None:
            target_name = table.column_map.get(name, name)
            column = table.families.get(target_name.casefold())
            if column is None:
                raise TargetError(
                    f"target {self.name}: table {table.name} has no column {target_name!r} "
                    f"(of {event.source}:{event.schema}.{event.table}): add it to the target table "
                    "or map it with column_map",
                    fatal=True,
                )
            found = table.resolved[name] = (quote(column[0]), column_converter(column[1]))
        return found


def quote(identifier: str) -> str:
    """A backtick-quoted identifier for statements run with parameters (``%`` doubled for pymysql)."""
    return "`" + identifier.replace("`", "``").replace("%", "%%") + "`"


def _error(where: str, exc: pymysql.MySQLError) -> TargetError:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    fatal = isinstance(exc, _FATAL_CLASSES) or code in _FATAL_CODES
    text = " ".join(f"({code}) {message}".split()) if code else " ".join(str(message).split()) or type(exc).__name__
    if isinstance(exc, _BAD_ROW_CLASSES) or code in _BAD_ROW_CODES:
        return BadRowError(f"{where}: {text}")
    return TargetError(f"{where}: {text}", fatal=fatal)


def make(settings: TargetSettings, store: StateStore, marks_writes: bool = False) -> MysqlTarget:
    return MysqlTarget(settings, marks_writes, store.installation)


def check(settings: TargetSettings) -> list[Problem]:
    """Nothing is checked before the daemon opens the target (its first apply says what is wrong)."""
    return []
