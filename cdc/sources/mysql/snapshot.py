"""Reading MariaDB tables for ``cdc snapshot``: a consistent read and the binlog position it matches.

``START TRANSACTION WITH CONSISTENT SNAPSHOT`` makes MariaDB report, in the
``binlog_snapshot_file`` and ``binlog_snapshot_position`` status variables, the binlog
position matching the snapshot; ``BINLOG_GTID_POS()`` turns it into the GTID position the
stream resumes from. Rows come in primary-key chunks (keyset pagination), converted like the
binlog's rows. A resumed snapshot reads the rest in a fresh consistent read; the stream,
from the first read's position, brings what changed in between.

The next chunk starts after the last key read, sent back as the server gave it: a binary
key as bytes (``_binary'...'``, compared byte by byte), so that no key is skipped or read
twice. Every statement is run with parameters, so ``%`` in a name is doubled.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pymysql

from cdc.config import SourceSettings
from cdc.dsn import mysql_params, redact_dsn
from cdc.logs import one_line
from cdc.model import RowChange
from cdc.sources.base import SourceError
from cdc.sources.mysql import positions
from cdc.sources.mysql.admin import quote_identifier
from cdc.sources.mysql.server import check_binlog, check_server_id, is_mariadb, server_info
from cdc.sources.mysql.stream import describe_table
from cdc.sources.mysql.values import convert_row, select_converters


class MysqlSnapshot:
    """The tables of one MariaDB source, read consistently with where its stream starts."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.where = f"source {settings.name} ({redact_dsn(settings.dsn)})"
        self._conn: pymysql.connections.Connection | None = None

    def begin(self, resume: dict[str, Any] | None) -> dict[str, Any]:
        file, offset = self._consistent_read()
        if resume is not None:
            return resume
        assert self._conn is not None
        self._refuse_what_the_stream_cannot_follow()
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, offset))
                gtid = cur.fetchone()[0] or ""
        except pymysql.MySQLError as exc:
            raise SourceError(f"{self.where}: cannot find the GTID of {file}:{offset}: {one_line(exc)}") from None
        # just before the first transaction the stream reads (it starts at that offset)
        return {
            "txn_key": positions.txn_key(file, max(offset - 1, 0)),
            "position": f"snapshot@{gtid or f'{file}:{offset}'}",
            "resume": gtid,
        }

    def _refuse_what_the_stream_cannot_follow(self) -> None:
        """A snapshot is only worth loading if the stream can go on from it: refuse, before
        anything is read, on binlog settings or a ``server_id`` that keep it from streaming."""
        assert self._conn is not None
        try:
            server = server_info(self._conn)
            problems = [p for p in check_binlog(server) if p.severity == "error"]
            problems += check_server_id(self._conn, server, self.settings)
        except pymysql.MySQLError as exc:
            raise SourceError(f"{self.where}: cannot read the server's settings: {one_line(exc)}") from None
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more: run 'cdc check')" if len(problems) > 1 else ""
            raise SourceError(f"{self.where}: cannot snapshot: {first.what}{more}; fix: {first.fix}", fatal=True)

    def begin_read(self) -> str:
        """Open a consistent read (``cdc backfill``, counting rows); its binlog position as a
        transaction key."""
        return positions.txn_key(*self._consistent_read())

    def _consistent_read(self) -> tuple[str, int]:
        """Start the consistent read; the binlog file and offset that match it."""
        try:
            self._conn = pymysql.connect(
                **mysql_params(self.settings.dsn, self.settings.password), autocommit=True, binary_prefix=True
            )
            if not is_mariadb(self._conn):
                raise SourceError(
                    f"{self.where}: 'cdc snapshot' reads MariaDB (its binlog_snapshot_* status"
                    " tells the matching position); load MySQL tables another way",
                    fatal=True,
                )
            with self._conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                cur.execute("SHOW STATUS WHERE Variable_name IN ('binlog_snapshot_file', 'binlog_snapshot_position')")
                status = {name.lower(): value for name, value in cur.fetchall()}
        except pymysql.MySQLError as exc:
            raise SourceError(f"{self.where}: cannot start a consistent read: {one_line(exc)}") from None
        return status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])

    def count(self, schema: str, table: str, where: str | None = None) -> int:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {_rows(schema, table, where)}", ())
            return int(cur.fetchone()[0])

    def chunks(
        self, schema: str, table: str, after: list[Any] | None, size: int, where: str | None = None
    ) -> Iterator[tuple[list[RowChange], list[Any]]]:
        assert self._conn is not None
        key, columns = describe_table(self._conn, schema, table)
        if not columns:
            raise SourceError(f"{self.where}: table {schema}.{table} does not exist", fatal=True)
        if not key:
            raise SourceError(f"{self.where}: table {schema}.{table} has no primary key", fatal=True)
        converters = select_converters(columns)
        names = [name for name, _ in columns]
        quoted_key = ", ".join(map(_name, key))
        select = f"SELECT {', '.join(map(_name, names))} FROM {_rows(schema, table, where)}"
        first = f"{select} ORDER BY {quoted_key} LIMIT {int(size)}"
        query = (
            f"{select} WHERE ({quoted_key}) > ({', '.join(['%s'] * len(key))}) ORDER BY {quoted_key} LIMIT {int(size)}"
        )
        while True:
            with self._conn.cursor() as cur:
                if after is None:
                    cur.execute(first, ())
                else:
                    cur.execute(query, [_key_value(part) for part in after])
                rows = cur.fetchall()
            if not rows:
                return
            changes = []
            for row in rows:
                image = convert_row(dict(zip(names, row)), None, converters)
                changes.append(RowChange(schema, table, "snapshot", {k: image[k] for k in key}, None, image))
            last = dict(zip(names, rows[-1]))
            after = [_plain(last[k]) for k in key]
            yield changes, after
            if len(rows) < size:
                return

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.MySQLError:
                pass
            self._conn = None


def _name(*parts: str) -> str:
    """A (qualified) identifier for a statement run with parameters: backticks quoted, ``%`` doubled."""
    return ".".join(quote_identifier(part) for part in parts).replace("%", "%%")


def _rows(schema: str, table: str, where: str | None) -> str:
    """The rows of the table that the DBA's condition (``cdc backfill --where``) keeps, for a
    statement run with parameters: the table itself, or a derived table of it filtered by the
    condition, so that the count and every chunk see the same rows and the key range of a chunk
    stays outside what the condition says (its own parentheses cannot undo it)."""
    if not where or not where.strip():
        return _name(schema, table)
    return f"(SELECT * FROM {_name(schema, table)} WHERE (\n{where.replace('%', '%%')}\n)) AS cdc_rows"


def _plain(value: Any) -> Any:
    """A key value as JSON can keep it (the progress is stored as JSON) and ``_key_value`` reads
    back for pymysql to send: bytes as ``{"hex": ...}``, a TIME as MariaDB writes it."""
    if isinstance(value, (int, str)) or value is None:
        return value
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, timedelta):
        sign, value = ("-", -value) if value < timedelta(0) else ("", value)
        hours, rest = divmod(int(value.total_seconds()), 3600)
        return f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{value.microseconds:06d}"
    return str(value)


def _key_value(part: Any) -> Any:
    """A key value kept by ``_plain``, as the parameter that compares equal to the column's value."""
    return bytes.fromhex(part["hex"]) if isinstance(part, dict) else part
