"""MySQL/MariaDB source: the binlog read with mysql-replication's ``BinLogStreamReader``.

Transactions are read whole from the binlog (it holds committed transactions only); their
row changes go to the pipeline as they arrive, which stores them on disk, so a large
transaction never sits in memory. Positions: MariaDB GTID lists (``auto_position`` with
``is_mariadb``, since the library ignores file/pos there), MySQL GTID sets, or file:pos.

The library would reconnect silently from its first position after errors 2006/2013 and
replay old events; that is turned off, so every connection error reaches the daemon, which
rebuilds the reader from the last acknowledged position, and the pipeline still drops
anything at or before a stored position. A transaction that touches no captured table becomes an ``Idle`` position, and
the server's heartbeats (``slave_heartbeat``) keep the position moving while the
captured tables are idle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import pymysql
import pymysqlreplication.binlogstream
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, RotateEvent,
                                      XidEvent)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.logs import one_line
from cdc.config import SourceSettings
from cdc.dsn import DsnError, mysql_params, redact_dsn
from cdc.model import SYNC_POSITION_TABLE, Idle, RowChange, TxnBegin, TxnCommit, WriteBack
from cdc.sources import mysql_positions as positions
from cdc.sources.base import SourceError, SourceItem
from cdc.sources.mysql_values import column_converters, convert_row

log = logging.getLogger("cdc.source.mysql")

# The library swallows errors 2006/2013 and reconnects from the position it was first given,
# replaying everything since. Let them reach us instead: the daemon then rebuilds the reader
# from the last acknowledged position, with backoff and a log line.
pymysqlreplication.binlogstream.MYSQL_EXPECTED_ERROR_CODES = []

HEARTBEAT_SECONDS = 1.0
_SYNC_TABLE = tuple(SYNC_POSITION_TABLE.split(".", 1))
_EVENTS = [MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, RotateEvent, HeartbeatLogEvent,
           WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent]
_KEY_SQL = ("SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s"
            " AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION")
_JSON_SQL = ("SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS"
             " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION")
_JSON_CHECK_SQL = ("SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
                   " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s")


@dataclass(slots=True)
class _Table:
    key: list[str]
    json_columns: set[str]
    converters: dict[int, dict[str, Callable[[Any], Any]]]  # per table_id (the column layout)


@dataclass(slots=True)
class _Pending:
    """The transaction being read: its GTID and where it starts."""

    gtid: str | None
    position: str  # the GTID, or file:pos where GTIDs are off
    txn_key: str
    commit_ts: datetime
    begun: bool = False


class MysqlSource:
    def __init__(self, settings: SourceSettings) -> None:
        self.name = settings.name
        self.settings = settings
        self.where = f"source {settings.name} ({redact_dsn(settings.dsn)})"
        self._captured = set(settings.qualified_tables)
        self._stream: BinLogStreamReader | None = None
        self._ctl: pymysql.connections.Connection | None = None
        self._tables: dict[tuple[str, str], _Table] = {}
        self._file = ""
        self._pending: _Pending | None = None
        self._position = ""
        self._gtids: dict[int, str] = {}
        self._drain_target: tuple[int, int] | None = None
        self.is_mariadb = False

    # -- connecting ----------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        try:
            return mysql_params(self.settings.dsn, self.settings.password)
        except DsnError as exc:
            raise SourceError(f"{self.where}: {exc}", fatal=True) from None

    def control_connection(self) -> pymysql.connections.Connection:
        try:
            return pymysql.connect(**self._params(), autocommit=True)
        except pymysql.err.OperationalError as exc:
            raise SourceError(f"{self.where}: cannot connect: {one_line(exc)}") from None

    def current_position(self, conn: pymysql.connections.Connection) -> str:
        """The position just after the last transaction written to the binlog."""
        with conn.cursor() as cur:
            if self.is_mariadb:
                cur.execute("SELECT @@gtid_binlog_pos")
                return cur.fetchone()[0] or ""
            cur.execute("SELECT @@gtid_mode")
            if str(cur.fetchone()[0]).upper() == "ON":
                cur.execute("SELECT @@gtid_executed")
                return cur.fetchone()[0].replace("\n", "")
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
            if row is None:
                raise SourceError(f"{self.where}: the binlog is off: set log_bin in my.cnf", fatal=True)
            return f"{row[0]}:{row[1]}"

    def start(self, resume_position: str | None, drain: bool = False) -> None:
        self.close()
        if self.settings.server_id is None:
            raise SourceError(f"{self.where}: set server_id (unique among the server's replicas) for this source",
                              fatal=True)
        self._ctl = self.control_connection()
        with self._ctl.cursor() as cur:
            cur.execute("SELECT VERSION()")
            self.is_mariadb = "mariadb" in cur.fetchone()[0].lower()
        if resume_position is None:
            resume_position = self.current_position(self._ctl)
            log.warning("%s: no stored position; streaming starts at the binlog's end (%s)", self.where,
                        resume_position or "empty binlog", extra={"source": self.name})
        self._check_not_purged(resume_position)
        self._position = resume_position
        kind = positions.kind_of(resume_position) if resume_position else "mariadb_gtid"
        self._gtids = positions.mariadb_gtids(resume_position) if kind == "mariadb_gtid" else {}
        self._stream = self._reader(resume_position, kind)
        self._drain_target = self._binlog_end() if drain else None
        log.info("streaming the binlog from %s", resume_position or "its start",
                 extra={"source": self.name, "position": resume_position})

    def _check_not_purged(self, position: str) -> None:
        try:
            from cdc.sources.mysql_admin import purged
        except ImportError:  # pragma: no cover - the preflight module ships with the source
            return
        if position and purged(self._ctl, position):
            raise SourceError(f"{self.where}: the stored position {position} has been purged from the binlog: "
                              "changes were lost; load the tables again with 'cdc snapshot'", fatal=True)

    def _reader(self, position: str, kind: str) -> BinLogStreamReader:
        params = {k: v for k, v in self._params().items() if k != "database"}
        options: dict[str, Any] = dict(
            connection_settings=params, server_id=self.settings.server_id, blocking=True, resume_stream=True,
            only_events=_EVENTS, only_schemas=sorted({schema for schema, _ in self._captured} | {_SYNC_TABLE[0]}),
            slave_heartbeat=HEARTBEAT_SECONDS, is_mariadb=self.is_mariadb, enable_logging=False)
        if kind == "file_pos":
            file_pos = positions.parse_file_pos(position)
            options.update(log_file=file_pos.file, log_pos=file_pos.pos)
        elif position:
            options["auto_position"] = position
        return BinLogStreamReader(**options)

    def _binlog_end(self) -> tuple[int, int]:
        assert self._ctl is not None
        with self._ctl.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
        return (positions.binlog_file_number(row[0]), int(row[1])) if row else (0, 0)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        self._pending = None
        self._tables.clear()

    def acknowledge(self, resume_position: str) -> None:
        """The binlog keeps no reader state: the state store holds the position."""

    def keepalive(self) -> None:
        """Nothing to send: the server does not time a binlog reader out."""

    # -- streaming -----------------------------------------------------------------

    def read(self, timeout: float) -> list[SourceItem]:
        if self._stream is None:
            raise SourceError(f"{self.where}: not started")
        items: list[SourceItem] = []
        deadline = time.monotonic() + timeout
        try:
            while len(items) < 1000:
                event = self._stream.fetchone()
                if event is None:
                    raise SourceError(f"{self.where}: the server closed the binlog stream")
                if self._handle(event, items) and (items or time.monotonic() >= deadline):
                    break
                if items and time.monotonic() >= deadline:
                    break
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError) as exc:
            raise SourceError(f"{self.where}: connection lost: {one_line(exc)}") from None
        except pymysql.err.InternalError as exc:
            raise SourceError(f"{self.where}: the binlog stream failed: {one_line(exc)}") from None
        return items

    def _handle(self, event: Any, items: list[SourceItem]) -> bool:
        """Turn one binlog event into items; True for a heartbeat (the stream is idle)."""
        kind = type(event)
        if kind in (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent):
            if (event.schema, event.table) in self._captured and self._pending is not None:
                self._rows(event, items)
            elif (event.schema, event.table) == _SYNC_TABLE and self._pending is not None:
                self._write_back(event, items)
        elif kind is XidEvent:
            self._commit(event, items)
        elif kind is QueryEvent:
            query = event.query.strip().upper()
            if query == "COMMIT":
                self._commit(event, items)
            elif query == "BEGIN":
                if self._pending is None:  # no GTIDs: the transaction starts here
                    self._pending = self._new_pending(None, event)
            else:
                self._tables.clear()  # DDL: table layouts and keys may have changed
                self._commit(event, items)
        elif kind is MariadbGtidEvent or kind is GtidEvent:
            self._pending = self._new_pending(event.gtid, event)
        elif kind is RotateEvent:
            self._file = event.next_binlog
        elif kind is HeartbeatLogEvent:
            if self._pending is None:
                self._idle((positions.binlog_file_number(event.ident), event.packet.log_pos), items)
            return True
        return False

    def _new_pending(self, gtid: str | None, event: Any) -> _Pending:
        offset = event.packet.log_pos
        return _Pending(gtid, gtid or f"{self._file}:{offset}", positions.txn_key(self._file, offset),
                        datetime.fromtimestamp(event.timestamp, timezone.utc))

    def _begin(self, items: list[SourceItem]) -> None:
        pending = self._pending
        assert pending is not None
        if not pending.begun:
            pending.begun = True
            items.append(TxnBegin(pending.txn_key, pending.position, pending.gtid, pending.commit_ts))

    def _write_back(self, event: Any, items: list[SourceItem]) -> None:
        """The row cdc's sync target writes first in each of its transactions into this source."""
        for row in event.rows:
            values = row.get("after_values") or row.get("values") or {}
            if _text(values.get("target", "")) == self.settings.sync_target_name:
                self._begin(items)
                items.append(WriteBack(_text(values["target"]), _text(values["source"]), _text(values["txn_key"]),
                                       int(values["seq"])))

    def _rows(self, event: Any, items: list[SourceItem]) -> None:
        self._begin(items)
        table = self._table(event.schema, event.table)
        converters = table.converters.get(event.table_id)
        if converters is None:
            converters = table.converters[event.table_id] = column_converters(event.columns, table.json_columns)
        kind = type(event)
        for row in event.rows:
            if kind is UpdateRowsEvent:
                before = convert_row(row["before_values"], row.get("before_none_sources"), converters)
                after = convert_row(row["after_values"], row.get("after_none_sources"), converters)
                op = "update"
            elif kind is WriteRowsEvent:
                before, after, op = None, convert_row(row["values"], row.get("none_sources"), converters), "insert"
            else:
                before, after, op = convert_row(row["values"], row.get("none_sources"), converters), None, "delete"
            image = after if after is not None else before
            key = {column: image.get(column) for column in table.key}
            items.append(RowChange(event.schema, event.table, op, key, before, after))

    def _commit(self, event: Any, items: list[SourceItem]) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if pending.gtid and self.is_mariadb:
            self._gtids[int(pending.gtid.split("-", 1)[0])] = pending.gtid
            self._position = positions.mariadb_position(self._gtids)
        elif pending.gtid:
            self._position = _add_mysql_gtid(self._position, pending.gtid)
        else:
            self._position = f"{self._file}:{event.packet.log_pos}"
        if pending.begun:
            items.append(TxnCommit(pending.txn_key, self._position))
        self._idle((positions.binlog_file_number(self._file), event.packet.log_pos), items, force=not pending.begun)

    def _idle(self, reached: tuple[int, int], items: list[SourceItem], force: bool = True) -> None:
        drained = self._drain_target is not None and reached >= self._drain_target
        if force or drained:
            items.append(Idle(self._position, "drained" if drained else ""))

    def _table(self, schema: str, table: str) -> _Table:
        found = self._tables.get((schema, table))
        if found is not None:
            return found
        assert self._ctl is not None
        key, columns = describe_table(self._ctl, schema, table)
        if not key:
            raise SourceError(f"{self.where}: table {schema}.{table} has no primary key: add one "
                              f"(ALTER TABLE ... ADD PRIMARY KEY (...)) or remove it from 'tables'", fatal=True)
        json_columns = {name for name, data_type in columns if data_type == "json"}
        found = self._tables[(schema, table)] = _Table(key, json_columns, {})
        return found


def describe_table(conn: pymysql.connections.Connection, schema: str,
                   table: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The primary key's columns, and every column with its data type (lower case; ``json`` also
    for MariaDB's LONGTEXT with a ``json_valid`` check), in the table's order."""
    with conn.cursor() as cur:
        cur.execute(_KEY_SQL, (schema, table))
        key = [row[0] for row in cur.fetchall()]
        cur.execute(_JSON_SQL, (schema, table))
        columns = cur.fetchall()
        cur.execute(_JSON_CHECK_SQL, (schema, table))
        checks = " ".join(row[0] for row in cur.fetchall()).lower()
    return key, [(name, "json" if data_type.lower() == "json" or f"json_valid(`{name.lower()}`)" in checks
                  else data_type.lower()) for name, data_type, _ in columns]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _add_mysql_gtid(gtid_set: str, gtid: str) -> str:
    from pymysqlreplication.gtid import Gtid, GtidSet

    return str(GtidSet(gtid_set) + Gtid(gtid)).replace("\n", "")
