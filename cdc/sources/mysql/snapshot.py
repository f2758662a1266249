"""Reading MariaDB tables for ``cdc snapshot``: a consistent read and the binlog position it matches.

``START TRANSACTION WITH CONSISTENT SNAPSHOT`` makes MariaDB report, in the
``binlog_snapshot_file`` and ``binlog_snapshot_position`` status variables, the binlog
position matching the snapshot; ``BINLOG_GTID_POS()`` turns it into the GTID position the
stream resumes from. Rows come in primary-key chunks (keyset pagination), converted like the
binlog's rows. A resumed snapshot reads the rest in a fresh consistent read; the stream,
from the first read's position, brings what changed in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql

from cdc.config import SourceSettings
from cdc.dsn import mysql_params, redact_dsn
from cdc.logs import one_line
from cdc.model import RowChange
from cdc.sources.base import SourceError
from cdc.sources.mysql import positions
from cdc.sources.mysql.admin import quote_identifier
from cdc.sources.mysql.server import is_mariadb
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

    def begin_read(self) -> str:
        """Open a consistent read (``cdc backfill``, counting rows); its binlog position as a
        transaction key."""
        return positions.txn_key(*self._consistent_read())

    def _consistent_read(self) -> tuple[str, int]:
        """Start the consistent read; the binlog file and offset that match it."""
        try:
            self._conn = pymysql.connect(**mysql_params(self.settings.dsn, self.settings.password), autocommit=True)
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
        condition = f"({where.replace('%', '%%')})" if where else "TRUE"
        with self._conn.cursor() as cur:
            cur.execute(
                f"SELECT COUNT(*) FROM {quote_identifier(schema)}.{quote_identifier(table)} WHERE {condition}", ()
            )
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
        quoted_key = ", ".join(map(quote_identifier, key))
        select = (
            f"SELECT {', '.join(map(quote_identifier, names))} FROM {quote_identifier(schema)}."
            f"{quote_identifier(table)}"
        )
        condition = f"({where.replace('%', '%%')})" if where else "TRUE"  # the DBA's (cdc backfill --where)
        first = f"{select} WHERE {condition} ORDER BY {quoted_key} LIMIT {int(size)}"
        query = (
            f"{select} WHERE ({quoted_key}) > ({', '.join(['%s'] * len(key))}) AND {condition}"
            f" ORDER BY {quoted_key} LIMIT {int(size)}"
        )
        while True:
            with self._conn.cursor() as cur:
                if after is None:
                    cur.execute(first, ())
                else:
                    cur.execute(query, after)
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


def _plain(value: Any) -> Any:
    """A key value as JSON can keep it (the progress is stored as JSON), and pymysql can send back."""
    if isinstance(value, (int, str)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)
