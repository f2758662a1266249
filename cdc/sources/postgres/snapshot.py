"""Reading PostgreSQL tables for ``cdc snapshot``: a consistent start that the stream joins.

The slot is created with ``EXPORT_SNAPSHOT`` on a replication connection, and the tables are
read in that very snapshot (``SET TRANSACTION SNAPSHOT``) while the connection stays open:
the rows read are the database exactly at the slot's consistent point, where streaming
then starts, so that nothing is missed or seen twice. Rows come in primary-key order, in
chunks (keyset pagination), every column in its text form decoded by the same loaders as
the stream's, so a snapshot row and a streamed row of the same values are alike.

Before a new snapshot creates its slot it makes sure of what the stream needs besides
the slot, with ``cdc setup``'s own statements (the publication of every configured table,
REPLICA IDENTITY FULL), or refuses, creating nothing, when a person must act first (a
setting, a privilege, a table without a primary key): a slot whose WAL predated its
publication could not stream.

A snapshot resumed after an interruption cannot have its exported snapshot back: the rest
is read in a fresh one, and the stream (from the same consistent point) brings what
changed in between.

The DBA's ``--where`` goes in through ``condition.where_clause``; every query is run with
parameters (so names go in as ``cdc.sql_names.identifier``) and prepared, which holds one
statement only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.pq.abc import PGconn

from cdc.config import SourceSettings
from cdc.dsn import connect_kwargs, conninfo, redact_dsn
from cdc.errors import CommandError, ExitCode
from cdc.logs import one_line
from cdc.model import RowChange
from cdc.sources.base import SourceError
from cdc.sources.postgres import admin
from cdc.sources.postgres.condition import where_clause
from cdc.sources.postgres.protocol import format_lsn, parse_lsn
from cdc.sources.postgres.stream import SESSION_OPTIONS
from cdc.sources.postgres.values import ValueDecoder
from cdc.sql_names import identifier

log = logging.getLogger("cdc.ops.snapshot")
_SETUP_FIRST = (
    ": have a role that may run what 'cdc setup --print-sql' prints (or 'cdc setup' with its DSN),"
    " then 'cdc snapshot' again"
)
_COLUMNS_SQL = """
SELECT a.attname, a.atttypid,
    coalesce(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) + 1, 0)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""


class PostgresSnapshot:
    """The tables of one PostgreSQL source, read consistently with where its stream starts."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.where = f"source {settings.name} ({redact_dsn(settings.dsn)})"
        self._replication: PGconn | None = None
        self._conn: psycopg.Connection | None = None
        self._decoder = ValueDecoder()

    def begin(self, resume: dict[str, Any] | None) -> dict[str, Any]:
        """Open the read; a new snapshot creates the slot and says where the stream starts."""
        if resume is not None:  # the exported snapshot is gone: the rest in a fresh read
            self.begin_read()
            return resume
        self._connect()
        assert self._conn is not None
        self._prepare_stream()
        lsn, snapshot = self._create_slot()
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        log.info(
            "slot %s created at %s; reading in its exported snapshot",
            self.settings.slot_name,
            format_lsn(lsn),
            extra={"source": self.settings.name, "position": format_lsn(lsn)},
        )
        return {"txn_key": f"{lsn - 1:016X}", "position": f"snapshot@{format_lsn(lsn)}", "resume": format_lsn(lsn)}

    def begin_read(self) -> str:
        """Open a consistent read without a slot (``cdc backfill``, counting rows); the position
        (as a transaction key) that every change committed after the read began is at or after."""
        self._connect()
        assert self._conn is not None
        row = self._conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        lsn = parse_lsn(row[0])
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return f"{lsn:016X}"

    def _connect(self) -> None:
        try:
            self._conn = psycopg.connect(
                **connect_kwargs(self.settings.dsn, self.settings.password),
                options=f"{SESSION_OPTIONS} -c standard_conforming_strings=on",  # as condition.py reads --where
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise SourceError(f"{self.where}: cannot connect: {one_line(exc)}") from None

    def _prepare_stream(self) -> None:
        """What the stream needs besides its slot, made as 'cdc setup' makes it (or a refusal
        before anything is created); an idle slot left by 'cdc setup' is dropped, to be made
        again where the snapshot is."""
        with psycopg.connect(**connect_kwargs(self.settings.dsn, self.settings.password), autocommit=True) as conn:
            blockers = admin.snapshot_blockers(conn, self.settings)
            if blockers:
                raise SourceError(
                    f"{self.where}: {blockers[0].what} (fix: {blockers[0].fix}), then 'cdc snapshot' again", fatal=True
                )
            kind = admin.slot_kind(conn, self.settings)
            if kind is not None and kind[1]:
                raise SourceError(
                    f"{self.where}: slot {self.settings.slot_name!r} is in use: stop the daemon before 'cdc snapshot'",
                    fatal=True,
                )
            statements = admin.stream_statements(conn, self.settings)
            admin.run_statements(conn, self.settings, statements, self._say, _SETUP_FIRST)
            if kind is not None:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (self.settings.slot_name,))

    def _say(self, text: str) -> None:
        log.info("%s", text, extra={"source": self.settings.name})

    def _create_slot(self) -> tuple[int, str]:
        slot = self.settings.slot_name
        info = conninfo(self.settings.dsn, self.settings.password, replication="database", client_encoding="UTF8")
        pgconn = pq.PGconn.connect(info.encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = one_line(pgconn.get_error_message())
            pgconn.finish()
            raise SourceError(f"{self.where}: cannot open a replication connection: {message}")
        result = pgconn.exec_(f'CREATE_REPLICATION_SLOT "{slot}" LOGICAL pgoutput EXPORT_SNAPSHOT'.encode())
        if result.status != pq.ExecStatus.TUPLES_OK:
            message = one_line(pgconn.get_error_message())
            pgconn.finish()
            raise SourceError(f"{self.where}: cannot create slot {slot!r}: {message}", fatal=True)
        self._replication = pgconn  # open until the read is over: it keeps the snapshot alive
        consistent_point, snapshot_name = result.get_value(0, 1), result.get_value(0, 2)
        assert consistent_point is not None and snapshot_name is not None  # never NULL for a slot just made
        return parse_lsn(consistent_point.decode()), snapshot_name.decode()

    def count(self, schema: str, table: str, where: str | None = None) -> int:
        row = self._query(sql.SQL("SELECT count(*) {}").format(_rows(schema, table, where)), [], where)
        return row[0][0]

    def _query(self, query: sql.Composed, params: list[Any], where: str | None) -> list[tuple[Any, ...]]:
        """The rows of a query that may hold the DBA's ``where``: prepared, so one statement
        only; a query the server refuses is the condition's fault when there is one."""
        assert self._conn is not None
        try:
            return self._conn.execute(query, params, prepare=True).fetchall()
        except psycopg.OperationalError as exc:
            raise SourceError(f"{self.where}: {one_line(exc)}") from None
        except psycopg.Error as exc:
            if not where:
                raise SourceError(f"{self.where}: {one_line(exc)}", fatal=True) from None
            raise CommandError(f"{self.where}: {one_line(exc)} (check --where {where!r})", ExitCode.USAGE) from None

    def chunks(
        self, schema: str, table: str, after: list[str] | None, size: int, where: str | None = None
    ) -> Iterator[tuple[list[RowChange], list[str]]]:
        """The table's rows after the key ``after`` (text forms), ``size`` at a time, with each
        chunk's last key; ``where`` is a filter the DBA wrote (``cdc backfill --where``)."""
        assert self._conn is not None
        columns = self._conn.execute(_COLUMNS_SQL, (schema, table)).fetchall()
        if not columns:
            raise SourceError(f"{self.where}: table {schema}.{table} does not exist", fatal=True)
        key = [name for name, _, position in sorted(columns, key=lambda c: c[2]) if position]
        if not key:
            raise SourceError(f"{self.where}: table {schema}.{table} has no primary key", fatal=True)
        names = [name for name, _, _ in columns]
        loaders = [self._decoder.loader(oid) for _, oid, _ in columns]
        key_at = [names.index(name) for name in key]
        # the row's own columns (schema.table.k): a select-list name would sort the text forms instead
        keys = sql.SQL(", ").join(identifier(schema, table, k) for k in key)
        select = sql.SQL("SELECT {} {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(identifier(schema, table, n)) for n in names),
            _rows(schema, table, where),
        )
        first = sql.SQL("{} ORDER BY {} LIMIT {}").format(select, keys, sql.Literal(size))
        query = sql.SQL("{} AND ({}) > ({}) ORDER BY {} LIMIT {}").format(
            select, keys, sql.SQL(", ").join(sql.Placeholder() * len(key)), keys, sql.Literal(size)
        )
        while True:
            rows = self._query(query if after is not None else first, after or [], where)
            if not rows:
                return
            changes = []
            for row in rows:
                native = dict(zip(names, row))
                python = {
                    name: None if text is None else load(text.encode()) for name, load, text in zip(names, loaders, row)
                }
                changes.append(
                    RowChange(schema, table, "snapshot", {k: python[k] for k in key}, None, python, None, native)
                )
            after = [rows[-1][i] for i in key_at]
            yield changes, after
            if len(rows) < size:
                return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._replication is not None:
            self._replication.finish()
            self._replication = None


def _rows(schema: str, table: str, where: str | None) -> sql.Composed:
    """``FROM ... WHERE ...``: the rows of the table that the count and the read both see."""
    return sql.SQL("FROM {} WHERE {}").format(identifier(schema, table), where_clause(where))
