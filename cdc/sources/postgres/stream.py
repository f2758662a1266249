"""PostgreSQL source: logical replication with pgoutput over psycopg's low-level ``PGconn``.

Two connections: a replication connection in copy-both mode that streams the slot, and a
catalog connection that looks up primary keys and emits heartbeat messages
(``pg_logical_emit_message``) so that the slot advances while captured tables are idle.
At start the captured tables are looked up in the catalog: the primary keys of those that
exist are handed to the translator (they still apply to changes written before a table is
dropped), the absent ones are a fatal error unless the stream holds changes of theirs.
The flush position sent in standby status updates is only ever the one the pipeline
acknowledged, or the stream's position while nothing is pending.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn

from cdc.config import SourceSettings
from cdc.dsn import DsnError, connect_kwargs, conninfo, redact_dsn
from cdc.logs import one_line
from cdc.sources.base import SourceError, SourceItem
from cdc.sources.postgres.protocol import format_lsn, parse_lsn, standby_status_update
from cdc.sources.postgres.translate import Translator
from cdc.sources.postgres.values import ValueDecoder

log = logging.getLogger("cdc.source.postgres")

HEARTBEAT_PREFIX = "cdc.heartbeat"
STATUS_INTERVAL = 5.0
SESSION_OPTIONS = "-c datestyle=ISO -c timezone=UTC -c intervalstyle=iso_8601 -c extra_float_digits=3"
_KEY_COLUMNS = """
array(SELECT a.attname::text FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
      WHERE i.indrelid = c.oid AND i.indisprimary
      ORDER BY array_position(i.indkey, a.attnum))
"""
_PRIMARY_KEY_SQL = f"SELECT {_KEY_COLUMNS} FROM pg_class c WHERE c.oid = %s"
_TABLES_SQL = f"""
SELECT n.nspname::text, c.relname::text, c.oid::bigint, {_KEY_COLUMNS}
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""


class PostgresSource:
    def __init__(self, settings: SourceSettings) -> None:
        self.name = settings.name
        self.settings = settings
        self.where = f"source {settings.name} ({redact_dsn(settings.dsn)})"
        self._translator = Translator(self.where, self._primary_key, ValueDecoder(), settings.qualified_tables)
        self._pgconn: PGconn | None = None
        self._catalog: psycopg.Connection | None = None
        self._ack = 0
        self._acked_sent = -1
        self._last_status = 0.0
        self._last_heartbeat = 0.0

    # -- connecting ----------------------------------------------------------------

    def catalog_connection(self) -> psycopg.Connection:
        try:
            return psycopg.connect(**connect_kwargs(self.settings.dsn, self.settings.password), autocommit=True)
        except DsnError as exc:
            raise SourceError(f"{self.where}: {exc}", fatal=True) from None
        except psycopg.OperationalError as exc:
            raise SourceError(f"{self.where}: cannot connect: {one_line(exc)}") from None

    def start(self, resume_position: str | None, drain: bool = False) -> None:
        self.close()
        self._catalog = self.catalog_connection()
        self._check_slot()
        start_lsn = parse_lsn(resume_position) if resume_position else 0
        self._ack = start_lsn
        self._acked_sent = -1
        self._translator.restart()
        missing = self._look_up_tables()
        self._connect_replication(start_lsn)
        if drain or missing:
            end = self._emit_heartbeat()
            self._translator.drain_target = end if drain else None
            self._translator.missing, self._translator.backlog_end = missing, end

    def _look_up_tables(self) -> set[tuple[str, str]]:
        """Hand the captured tables' primary keys to the translator; the tables not found."""
        assert self._catalog is not None
        captured = self.settings.qualified_tables
        rows = self._catalog.execute(
            _TABLES_SQL, ([schema for schema, _ in captured], [table for _, table in captured])
        ).fetchall()
        for _, _, relid, key in rows:
            if key:
                self._translator.remember_key(relid, key)
        return set(captured) - {(schema, table) for schema, table, _, _ in rows}

    def _check_slot(self) -> None:
        assert self._catalog is not None
        slot, publication = self.settings.slot_name, self.settings.publication_name
        row = self._catalog.execute(
            "SELECT plugin, database, active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        if row is None:
            raise SourceError(
                f"{self.where}: replication slot {slot!r} does not exist: run 'cdc setup' "
                f"(or: SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');)",
                fatal=True,
            )
        plugin, database, active_pid = row
        if plugin != "pgoutput":
            raise SourceError(
                f"{self.where}: replication slot {slot!r} uses plugin {plugin!r}, not pgoutput: "
                f"drop it or set another 'slot' for this source",
                fatal=True,
            )
        current = _first(self._catalog.execute("SELECT current_database()").fetchone())
        if database != current:
            raise SourceError(
                f"{self.where}: replication slot {slot!r} belongs to database {database!r}, not {current!r}", fatal=True
            )
        if active_pid is not None:
            raise SourceError(
                f"{self.where}: replication slot {slot!r} is in use by server process "
                f"{active_pid}; is another cdc running?"
            )
        if self._catalog.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone() is None:
            raise SourceError(f"{self.where}: publication {publication!r} does not exist: run 'cdc setup'", fatal=True)

    def _connect_replication(self, start_lsn: int) -> None:
        info = conninfo(
            self.settings.dsn,
            self.settings.password,
            replication="database",
            options=SESSION_OPTIONS,
            client_encoding="UTF8",
        )
        pgconn = pq.PGconn.connect(info.encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = one_line(pgconn.get_error_message())
            pgconn.finish()
            raise SourceError(f"{self.where}: cannot open a replication connection: {message}")
        command = (
            f'START_REPLICATION SLOT "{self.settings.slot_name}" LOGICAL {format_lsn(start_lsn)} '
            f"(proto_version '1', publication_names '\"{self.settings.publication_name}\"', messages 'true')"
        )
        result = pgconn.exec_(command.encode())
        if result.status != pq.ExecStatus.COPY_BOTH:
            message = one_line(pgconn.get_error_message())
            pgconn.finish()
            raise SourceError(f"{self.where}: START_REPLICATION failed: {message}")
        pgconn.nonblocking = 1
        self._pgconn = pgconn
        log.info(
            "streaming slot %s from %s",
            self.settings.slot_name,
            format_lsn(start_lsn),
            extra={"source": self.name, "position": format_lsn(start_lsn)},
        )

    def close(self) -> None:
        if self._pgconn is not None:
            self._pgconn.finish()
            self._pgconn = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    # -- streaming -----------------------------------------------------------------

    def read(self, timeout: float) -> list[SourceItem]:
        pgconn = self._pgconn
        if pgconn is None:
            raise SourceError(f"{self.where}: not started")
        items: list[SourceItem] = []
        copy_data = self._translator.copy_data
        try:
            self._housekeeping()
            deadline = time.monotonic() + timeout
            while len(items) < 1000:
                size, data = pgconn.get_copy_data(1)
                if size > 0:
                    if copy_data(data, items):  # the server asked for a status reply
                        self._send_status()
                    continue
                if size == 0:
                    remaining = deadline - time.monotonic()
                    if items or remaining <= 0:
                        break
                    ready, _, _ = select.select([pgconn.socket], [], [], min(remaining, 1.0))
                    if ready:
                        pgconn.consume_input()
                    else:
                        self._housekeeping()
                    continue
                raise SourceError(
                    f"{self.where}: replication stream ended: "
                    f"{one_line(pgconn.get_error_message()) or 'server closed the stream'}"
                )
        except (psycopg.OperationalError, OSError) as exc:
            raise SourceError(f"{self.where}: connection lost: {one_line(exc)}") from None
        return items

    def acknowledge(self, resume_position: str) -> None:
        lsn = parse_lsn(resume_position)
        if lsn > self._ack:
            self._ack = lsn

    def keepalive(self) -> None:
        try:
            self._housekeeping()
        except (psycopg.OperationalError, OSError) as exc:
            raise SourceError(f"{self.where}: connection lost: {one_line(exc)}") from None

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._ack != self._acked_sent or now - self._last_status >= STATUS_INTERVAL:
            self._send_status()
        if now - self._last_heartbeat >= self.settings.heartbeat_seconds:
            self._emit_heartbeat()

    def _send_status(self, reply_requested: bool = False) -> None:
        assert self._pgconn is not None
        written = max(self._translator.received, self._ack)
        self._pgconn.put_copy_data(
            standby_status_update(written, self._ack, self._ack, reply_requested=reply_requested)
        )
        self._pgconn.flush()
        self._acked_sent = self._ack
        self._last_status = time.monotonic()

    def _emit_heartbeat(self) -> int:
        assert self._catalog is not None
        self._last_heartbeat = time.monotonic()
        try:
            # The transaction id makes the commit flush WAL, so that the walsender sends the
            # message now; the transaction itself changes nothing and is not streamed.
            with self._catalog.transaction():
                row = self._catalog.execute(
                    "SELECT pg_logical_emit_message(false, %s, '')::text", (HEARTBEAT_PREFIX,)
                ).fetchone()
                self._catalog.execute("SELECT txid_current()")
        except psycopg.OperationalError as exc:
            raise SourceError(f"{self.where}: connection lost: {one_line(exc)}") from None
        except psycopg.Error as exc:
            log.warning("%s: heartbeat failed: %s", self.where, one_line(exc), extra={"source": self.name})
            return 0
        return parse_lsn(_first(row))

    def _primary_key(self, relid: int) -> list[str] | None:
        """The relation's primary key columns in today's catalog; None when it no longer exists."""
        assert self._catalog is not None
        row = self._catalog.execute(_PRIMARY_KEY_SQL, (relid,)).fetchone()
        return None if row is None else list(row[0])


def _first(row: tuple[Any, ...] | None) -> Any:
    """The first value of a row that a query always returns."""
    assert row is not None
    return row[0]
