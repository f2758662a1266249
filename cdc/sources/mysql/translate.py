"""Binlog events turned into the pipeline's items (pure: no socket, no database).

``Translator`` reads the events of mysql-replication's ``BinLogStreamReader`` one at a time
and appends ``TxnBegin``/``RowChange``/``TxnCommit`` for each transaction that touches a
captured table, ``WriteBack`` for the marker row cdc's sync target writes, and ``Idle``
where the position may move on without a transaction (heartbeats, transactions of other
tables, the drain target). It keeps what that takes between events: the current binlog
file, the transaction being read, the GTIDs seen, the resume position and each table's
primary key and value converters. A table's primary key is the one its table map event
carries (``binlog_row_metadata = FULL``), else the injected ``describe``'s (today's catalog,
which also names its JSON columns), called once per table until a DDL statement clears the
cache. The rows of a table dropped since they were written are applied with the binlog's key,
or skipped with a warning when it has none. Whatever an event holds, the only error is a
one-line ``SourceError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.gtid import Gtid, GtidSet
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from cdc.errors import SourceError
from cdc.logs import one_line
from cdc.model import (
    SYNC_POSITION_TABLE,
    Idle,
    RowChange,
    TxnBegin,
    TxnCommit,
    WriteBack,
)
from cdc.sources.base import SourceItem
from cdc.sources.mysql import positions
from cdc.sources.mysql.values import column_converters, convert_row

log = logging.getLogger("cdc.source.mysql")

SYNC_TABLE = tuple(SYNC_POSITION_TABLE.split(".", 1))
EVENTS = [
    MariadbGtidEvent,
    GtidEvent,
    QueryEvent,
    XidEvent,
    RotateEvent,
    HeartbeatLogEvent,
    WriteRowsEvent,
    UpdateRowsEvent,
    DeleteRowsEvent,
]  # what the reader must hand out
_ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
# what an event whose attributes are not what a well-formed binlog gives makes the translation raise
_EVENT_ERRORS = (ValueError, LookupError, TypeError, AttributeError, ArithmeticError, OSError)

# (schema, table) -> the primary key's columns, and every column with its data type (see stream.describe_table);
# no columns: the table does not exist
Describe = Callable[[str, str], tuple[list[str], list[tuple[str, str]]]]


@dataclass(slots=True)
class _Table:
    key: list[str]  # empty: the table was dropped and the binlog has no key for it; its rows are skipped
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


class Translator:
    """The state between binlog events, and the items each event makes."""

    def __init__(self, where: str, captured: set[tuple[str, str]], sync_target_name: str, describe: Describe) -> None:
        self._where = where
        self._captured = captured
        self._sync_target_name = sync_target_name
        self._describe = describe
        self._tables: dict[tuple[str, str], _Table] = {}
        self._file = ""
        self._pending: _Pending | None = None
        self._position = ""
        self._gtids: dict[int, str] = {}
        self._drain_target: tuple[int, int] | None = None
        self._is_mariadb = False
        self._missing: set[tuple[str, str]] = set()
        self._backlog_end: tuple[int, int] | None = None

    @property
    def position(self) -> str:
        """The resume position after the last transaction read."""
        return self._position

    def restart(
        self,
        position: str,
        is_mariadb: bool,
        drain_target: tuple[int, int] | None = None,
        missing: set[tuple[str, str]] | None = None,
        backlog_end: tuple[int, int] | None = None,
    ) -> None:
        """Streaming (re)starts at ``position``; ``drain_target``: the binlog's (file number, offset) end for --drain.

        ``missing``: captured tables absent from the catalog; one whose rows the binlog does not
        hold up to ``backlog_end`` (its end at start) is a fatal error there. The current binlog
        file is kept: the reader's first event is a rotate to it anyway.
        """
        self.reset()
        self._is_mariadb = is_mariadb
        self._position = position
        kind = positions.kind_of(position) if position else "mariadb_gtid"
        self._gtids = positions.mariadb_gtids(position) if kind == "mariadb_gtid" else {}
        self._drain_target = drain_target
        self._missing = set(missing or ())
        self._backlog_end = backlog_end

    def reset(self) -> None:
        """Forget the transaction being read and the table descriptions (the stream is closed)."""
        self._pending = None
        self._tables.clear()

    def handle(self, event: Any, items: list[SourceItem]) -> bool:
        """Turn one binlog event into items; True for a heartbeat (the stream is idle)."""
        try:
            return self._handle(event, items)
        except _EVENT_ERRORS as exc:
            raise SourceError(
                f"{self._where}: cannot read the binlog's {type(event).__name__} after {self._position or 'its start'}:"
                f" {one_line(exc)}",
                fatal=True,
            ) from None

    def _handle(self, event: Any, items: list[SourceItem]) -> bool:
        kind = type(event)
        if kind in _ROW_EVENTS:
            if (event.schema, event.table) in self._captured and self._pending is not None:
                self._rows(event, items)
            elif (event.schema, event.table) == SYNC_TABLE and self._pending is not None:
                self._write_back(event, items)
        elif kind is XidEvent:
            self._commit(event, items)
        elif kind is QueryEvent:
            self._query(event, items)
        elif kind is MariadbGtidEvent or kind is GtidEvent:
            self._pending = self._new_pending(event.gtid, event)
        elif kind is RotateEvent:
            self._file = event.next_binlog
        elif kind is HeartbeatLogEvent:
            if self._pending is None:
                self._idle((positions.binlog_file_number(event.ident), event.packet.log_pos), items)
            return True
        return False

    def _query(self, event: Any, items: list[SourceItem]) -> None:
        query = event.query.strip().upper()
        if query == "COMMIT":
            self._commit(event, items)
        elif query == "BEGIN":
            if self._pending is None:  # no GTIDs: the transaction starts here
                self._pending = self._new_pending(None, event)
        else:
            self._tables.clear()  # DDL: table layouts and keys may have changed
            self._commit(event, items)

    def _new_pending(self, gtid: str | None, event: Any) -> _Pending:
        offset = event.packet.log_pos
        return _Pending(
            gtid,
            gtid or f"{self._file}:{offset}",
            positions.txn_key(self._file, offset),
            datetime.fromtimestamp(event.timestamp, UTC),
        )

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
            if _text(values.get("target", "")) == self._sync_target_name:
                if not {"source", "txn_key", "seq"} <= values.keys():
                    raise ValueError(f"a row of {'.'.join(SYNC_TABLE)} lacks one of source, txn_key, seq")
                self._begin(items)
                installation = values.get("installation")  # the state store that wrote it
                items.append(
                    WriteBack(
                        _text(values["target"]),
                        _text(values["source"]),
                        _text(values["txn_key"]),
                        int(values["seq"]),
                        None if installation is None else _text(installation),
                    )
                )

    def _rows(self, event: Any, items: list[SourceItem]) -> None:
        if self._missing:
            self._missing.discard((event.schema, event.table))
        table = self._table(event)
        if not table.key:
            return
        self._begin(items)
        converters = table.converters.get(event.table_id)
        if converters is None:
            converters = table.converters[event.table_id] = column_converters(event.columns, table.json_columns)
        kind = type(event)
        before: dict[str, Any] | None
        after: dict[str, Any] | None
        for row in event.rows:
            if kind is UpdateRowsEvent:
                before = convert_row(row["before_values"], row.get("before_none_sources"), converters)
                image = after = convert_row(row["after_values"], row.get("after_none_sources"), converters)
                op = "update"
            elif kind is WriteRowsEvent:
                image = after = convert_row(row["values"], row.get("none_sources"), converters)
                before, op = None, "insert"
            else:
                image = before = convert_row(row["values"], row.get("none_sources"), converters)
                after, op = None, "delete"
            key = {column: image.get(column) for column in table.key}
            items.append(RowChange(event.schema, event.table, op, key, before, after))

    def _commit(self, event: Any, items: list[SourceItem]) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if pending.gtid and self._is_mariadb:
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
        if self._missing and self._backlog_end is not None and reached >= self._backlog_end:
            schema, table = sorted(self._missing)[0]
            raise SourceError(
                f"{self._where}: table {schema}.{table} does not exist: create it, or remove"
                f" '{schema}.{table}' from 'tables'",
                fatal=True,
            )
        drained = self._drain_target is not None and reached >= self._drain_target
        if force or drained:
            items.append(Idle(self._position, "drained" if drained else ""))

    def _table(self, event: Any) -> _Table:
        schema, table = event.schema, event.table
        found = self._tables.get((schema, table))
        if found is not None:
            return found
        catalog_key, columns = self._describe(schema, table)
        key = [column.name for column in event.columns if getattr(column, "is_primary", False)] or catalog_key
        if not columns:  # dropped since this event was written
            where = self._pending.position if self._pending is not None else self._position
            if key:
                what = f"its rows are applied with the binlog's primary key {key}"
            else:
                what = "the binlog holds no primary key for it: its rows are skipped"
            log.warning("%s: table %s.%s was dropped: %s (at %s)", self._where, schema, table, what, where)
            found = self._tables[(schema, table)] = _Table(key, set(), {})
            return found
        if not key:
            raise SourceError(
                f"{self._where}: table {schema}.{table} has no primary key: add one "
                f"(ALTER TABLE ... ADD PRIMARY KEY (...)) or remove it from 'tables'",
                fatal=True,
            )
        json_columns = {name for name, data_type in columns if data_type == "json"}
        found = self._tables[(schema, table)] = _Table(key, json_columns, {})
        return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _add_mysql_gtid(gtid_set: str, gtid: str) -> str:
    return str(GtidSet(gtid_set) + Gtid(gtid)).replace("\n", "")
