"""MySQL/MariaDB source: the binlog read with mysql-replication's ``BinLogStreamReader``.

Transactions are read whole from the binlog (it holds committed transactions only); their
row changes go to the pipeline as they arrive, which stores them on disk, so a large
transaction never sits in memory. Positions: MariaDB GTID lists (``auto_position`` with
``is_mariadb``, since the library ignores file/pos there), MySQL GTID sets, or file:pos.

The library would reconnect silently from its first position after errors 2006/2013 and
replay old events; that is turned off, so every connection error reaches the daemon, which
rebuilds the reader from the last acknowledged position, and the pipeline still drops
anything at or before a stored position. The server's heartbeats (``slave_heartbeat``) keep
the position moving while the captured tables are idle. What each event becomes (row
changes, positions, ``Idle``) is ``cdc.sources.mysql.translate``'s part, without I/O; this
module runs the reader and describes tables from the server for it, and at start names the
captured tables the server does not have.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pymysql
import pymysqlreplication.binlogstream
from pymysqlreplication import BinLogStreamReader

from cdc.config import SourceSettings
from cdc.dsn import DsnError, mysql_params, redact_dsn
from cdc.logs import one_line
from cdc.model import TxnCommit
from cdc.sources.base import SourceError, SourceItem
from cdc.sources.mysql import decoding, positions
from cdc.sources.mysql.server import is_mariadb
from cdc.sources.mysql.translate import EVENTS, SYNC_TABLE, Translator

log = logging.getLogger("cdc.source.mysql")

# The library swallows errors 2006/2013 and reconnects from the position it was first given,
# replaying everything since. Let them reach us instead: the daemon then rebuilds the reader
# from the last acknowledged position, with backoff and a log line.
pymysqlreplication.binlogstream.MYSQL_EXPECTED_ERROR_CODES = []

HEARTBEAT_SECONDS = 1.0
_KEY_SQL = (
    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s"
    " AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION"
)
_JSON_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS"
    " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
)
_JSON_CHECK_SQL = (
    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s"
)


class MysqlSource:
    def __init__(self, settings: SourceSettings) -> None:
        self.name = settings.name
        self.settings = settings
        self.where = f"source {settings.name} ({redact_dsn(settings.dsn)})"
        self._captured = set(settings.qualified_tables)
        self._stream: BinLogStreamReader | None = None
        self._ctl: pymysql.connections.Connection | None = None
        self._translator = Translator(self.where, self._captured, settings.sync_target_name, self._describe)
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
            raise SourceError(
                f"{self.where}: set server_id (unique among the server's replicas) for this source", fatal=True
            )
        self._ctl = self.control_connection()
        self.is_mariadb = is_mariadb(self._ctl)
        if resume_position is None:
            resume_position = self.current_position(self._ctl)
            log.warning(
                "%s: no stored position; streaming starts at the binlog's end (%s)",
                self.where,
                resume_position or "empty binlog",
                extra={"source": self.name},
            )
        self._check_not_purged(resume_position)
        kind = positions.kind_of(resume_position) if resume_position else "mariadb_gtid"
        missing = self._missing_tables()
        self._stream = self._reader(resume_position, kind)
        end = self._binlog_end() if drain or missing else None
        self._translator.restart(resume_position, self.is_mariadb, end if drain else None, missing, end)
        log.info(
            "streaming the binlog from %s",
            resume_position or "its start",
            extra={"source": self.name, "position": resume_position},
        )

    def _missing_tables(self) -> set[tuple[str, str]]:
        """The captured tables the server does not have (the translator stops on those whose
        rows the binlog does not hold: a table dropped while cdc was behind still streams)."""
        assert self._ctl is not None
        if not self._captured:
            return set()
        with self._ctl.cursor() as cur:
            cur.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN %s",
                (sorted({schema for schema, _ in self._captured}),),
            )
            found = {(schema, table) for schema, table in cur.fetchall()}
        return self._captured - found

    def _check_not_purged(self, position: str) -> None:
        try:
            from cdc.sources.mysql.admin import purged
        except ImportError:  # pragma: no cover - the preflight module ships with the source
            return
        if position and purged(self._ctl, position):
            raise SourceError(
                f"{self.where}: the stored position {position} has been purged from the binlog: "
                "changes were lost; load the tables again with 'cdc snapshot'",
                fatal=True,
            )

    def _reader(self, position: str, kind: str) -> BinLogStreamReader:
        decoding.install()  # latin1 and zero dates as MariaDB gives them
        params = {k: v for k, v in self._params().items() if k != "database"}
        options: dict[str, Any] = dict(
            connection_settings=params,
            server_id=self.settings.server_id,
            blocking=True,
            resume_stream=True,
            only_events=EVENTS,
            only_schemas=sorted({schema for schema, _ in self._captured} | {SYNC_TABLE[0]}),
            slave_heartbeat=HEARTBEAT_SECONDS,
            is_mariadb=self.is_mariadb,
            enable_logging=False,
        )
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
        self._translator.reset()

    def acknowledge(self, resume_position: str) -> None:
        """The binlog keeps no reader state: the state store holds the position."""

    def keepalive(self) -> None:
        """Nothing to send: the server does not time a binlog reader out."""

    # -- streaming -----------------------------------------------------------------

    def read(self, timeout: float) -> list[SourceItem]:
        if self._stream is None:
            raise SourceError(f"{self.where}: not started")
        items: list[SourceItem] = []
        handle = self._translator.handle
        deadline = time.monotonic() + timeout
        try:
            while len(items) < 1000:
                event = self._stream.fetchone()
                if event is None:
                    raise SourceError(f"{self.where}: the server closed the binlog stream")
                if handle(event, items) and (items or time.monotonic() >= deadline):
                    break
                if items and (type(items[-1]) is TxnCommit or time.monotonic() >= deadline):
                    break  # a whole transaction goes on at once: its latency is not the read's timeout
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError) as exc:
            raise SourceError(f"{self.where}: connection lost: {one_line(exc)}") from None
        except pymysql.err.InternalError as exc:
            raise SourceError(f"{self.where}: the binlog stream failed: {one_line(exc)}") from None
        return items

    def _describe(self, schema: str, table: str) -> tuple[list[str], list[tuple[str, str]]]:
        assert self._ctl is not None
        return describe_table(self._ctl, schema, table)


def describe_table(
    conn: pymysql.connections.Connection, schema: str, table: str
) -> tuple[list[str], list[tuple[str, str]]]:
    """The primary key's columns, and every column with its data type (lower case; ``json`` also
    for MariaDB's LONGTEXT with a ``json_valid`` check), in the table's order."""
    with conn.cursor() as cur:
        cur.execute(_KEY_SQL, (schema, table))
        key = [row[0] for row in cur.fetchall()]
        cur.execute(_JSON_SQL, (schema, table))
        columns = cur.fetchall()
        cur.execute(_JSON_CHECK_SQL, (schema, table))
        checks = " ".join(row[0] for row in cur.fetchall()).lower()
    return key, [
        (
            name,
            "json" if data_type.lower() == "json" or f"json_valid(`{name.lower()}`)" in checks else data_type.lower(),
        )
        for name, data_type, _ in columns
    ]
