"""PostgreSQL source: logical replication with pgoutput over psycopg's low-level ``PGconn``.

Two connections: a replication connection in copy-both mode that streams the slot, and a
catalog connection that looks up primary keys and emits heartbeat messages
(``pg_logical_emit_message``) so that the slot advances while captured tables are idle.
The flush position sent in standby status updates is only ever the one the pipeline
acknowledged, or the stream's position while nothing is pending.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

import psycopg
from psycopg import pq, sql

from cdc.logs import one_line
from cdc.config import SourceSettings
from cdc.dsn import DsnError, connect_kwargs, conninfo, redact_dsn
from cdc.model import SYNC_MESSAGE_PREFIX, Idle, RowChange, TxnBegin, TxnCommit, WriteBack
from cdc.sources import pgoutput
from cdc.sources.base import SourceError, SourceItem
from cdc.sources.pg_protocol import Keepalive, format_lsn, parse_copy_data, parse_lsn, standby_status_update
from cdc.sources.pg_values import Loader, ValueDecoder

log = logging.getLogger("cdc.source.postgres")

HEARTBEAT_PREFIX = "cdc.heartbeat"
STATUS_INTERVAL = 5.0
SESSION_OPTIONS = "-c datestyle=ISO -c timezone=UTC -c intervalstyle=iso_8601 -c extra_float_digits=3"
_PRIMARY_KEY_SQL = """
SELECT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = %s AND i.indisprimary
ORDER BY array_position(i.indkey, a.attnum)
"""


class _Relation:
    """A relation as announced by the stream, with what decoding its tuples needs."""

    __slots__ = ("schema", "table", "names", "loaders", "key")

    def __init__(self, message: pgoutput.Relation, loaders: list[Loader], key: list[str]) -> None:
        self.schema = message.namespace
        self.table = message.name
        self.names = [column.name for column in message.columns]
        self.loaders = loaders
        self.key = key


class PostgresSource:
    def __init__(self, settings: SourceSettings) -> None:
        self.name = settings.name
        self.settings = settings
        self.where = f"source {settings.name} ({redact_dsn(settings.dsn)})"
        self._decoder = ValueDecoder()
        self._relations: dict[int, _Relation] = {}
        self._pgconn: pq.PGconn | None = None
        self._catalog: psycopg.Connection | None = None
        self._txn: TxnBegin | None = None
        self._received = 0
        self._ack = 0
        self._acked_sent = -1
        self._last_status = 0.0
        self._last_heartbeat = 0.0
        self._drain_target: int | None = None

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
        self._txn = None
        self._relations.clear()
        self._connect_replication(start_lsn)
        self._drain_target = self._emit_heartbeat() if drain else None

    def _check_slot(self) -> None:
        assert self._catalog is not None
        slot, publication = self.settings.slot_name, self.settings.publication_name
        row = self._catalog.execute(
            "SELECT plugin, database, active_pid FROM pg_replication_slots WHERE slot_name = %s",
            (slot,)).fetchone()
        if row is None:
            raise SourceError(
                f"{self.where}: replication slot {slot!r} does not exist: run 'cdc setup' "
                f"(or: SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');)", fatal=True)
        plugin, database, active_pid = row
        if plugin != "pgoutput":
            raise SourceError(f"{self.where}: replication slot {slot!r} uses plugin {plugin!r}, not pgoutput: "
                              f"drop it or set another 'slot' for this source", fatal=True)
        current = self._catalog.execute("SELECT current_database()").fetchone()[0]
        if database != current:
            raise SourceError(f"{self.where}: replication slot {slot!r} belongs to database {database!r}, "
                              f"not {current!r}", fatal=True)
        if active_pid is not None:
            raise SourceError(f"{self.where}: replication slot {slot!r} is in use by server process "
                              f"{active_pid}; is another cdc running?")
        if self._catalog.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone() is None:
            raise SourceError(f"{self.where}: publication {publication!r} does not exist: run 'cdc setup'",
                              fatal=True)

    def _connect_replication(self, start_lsn: int) -> None:
        info = conninfo(self.settings.dsn, self.settings.password, replication="database",
                        options=SESSION_OPTIONS, client_encoding="UTF8")
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
        log.info("streaming slot %s from %s", self.settings.slot_name, format_lsn(start_lsn),
                 extra={"source": self.name, "position": format_lsn(start_lsn)})

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
        try:
            self._housekeeping()
            deadline = time.monotonic() + timeout
            while len(items) < 1000:
                size, data = pgconn.get_copy_data(1)
                if size > 0:
                    self._handle(parse_copy_data(data), items)
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
                raise SourceError(f"{self.where}: replication stream ended: "
                                  f"{one_line(pgconn.get_error_message()) or 'server closed the stream'}")
        except (psycopg.OperationalError, OSError) as exc:
            raise SourceError(f"{self.where}: connection lost: {one_line(exc)}") from None
        except pgoutput.DecodeError as exc:
            raise SourceError(f"{self.where}: cannot decode the stream: {exc}", fatal=True) from None
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
        written = max(self._received, self._ack)
        self._pgconn.put_copy_data(standby_status_update(written, self._ack, self._ack,
                                                         reply_requested=reply_requested))
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
                row = self._catalog.execute("SELECT pg_logical_emit_message(false, %s, '')::text",
                                            (HEARTBEAT_PREFIX,)).fetchone()
                self._catalog.execute("SELECT txid_current()")
        except psycopg.OperationalError as exc:
            raise SourceError(f"{self.where}: connection lost: {one_line(exc)}") from None
        except psycopg.Error as exc:
            log.warning("%s: heartbeat failed: %s", self.where, one_line(exc), extra={"source": self.name})
            return 0
        return parse_lsn(row[0])

    def _handle(self, frame: Any, items: list[SourceItem]) -> None:
        if isinstance(frame, Keepalive):
            self._received = max(self._received, frame.wal_end)
            if self._txn is None:
                self._idle(frame.wal_end, items)
            if frame.reply_requested:
                self._send_status()
            return
        self._received = max(self._received, frame.wal_end)
        message = pgoutput.decode(frame.payload)
        kind = type(message)
        if kind is pgoutput.Insert:
            self._change(message.relid, "insert", None, message.new, items)
        elif kind is pgoutput.Update:
            self._change(message.relid, "update", message.old or message.key, message.new, items)
        elif kind is pgoutput.Delete:
            self._change(message.relid, "delete", message.old or message.key, None, items)
        elif kind is pgoutput.Begin:
            self._txn = TxnBegin(f"{message.final_lsn:016X}", format_lsn(message.final_lsn), str(message.xid),
                                 message.commit_ts)
            items.append(self._txn)
        elif kind is pgoutput.Commit:
            assert self._txn is not None
            items.append(TxnCommit(self._txn.txn_key, format_lsn(message.end_lsn)))
            self._txn = None
            if self._drain_target is not None and message.end_lsn >= self._drain_target:
                self._idle(message.end_lsn, items)
        elif kind is pgoutput.Relation:
            self._relation(message)
        elif kind is pgoutput.Truncate:
            for relid in message.relids:
                relation = self._relations[relid]
                items.append(RowChange(relation.schema, relation.table, "truncate", {}, None, None))
        elif kind is pgoutput.Message:
            if not message.transactional and self._txn is None:
                self._idle(message.lsn, items)
            elif message.transactional and message.prefix == SYNC_MESSAGE_PREFIX:
                marker = WriteBack.from_json(message.content)
                if marker is not None:
                    items.append(marker)

    def _idle(self, lsn: int, items: list[SourceItem]) -> None:
        drained = self._drain_target is not None and lsn >= self._drain_target
        items.append(Idle(format_lsn(lsn), "drained" if drained else ""))

    def _relation(self, message: pgoutput.Relation) -> None:
        assert self._catalog is not None
        keys = [row[0] for row in self._catalog.execute(_PRIMARY_KEY_SQL, (message.relid,))]
        qualified = f"{message.namespace}.{message.name}"
        if not keys:
            raise SourceError(f"{self.where}: table {qualified} has no primary key: add one "
                              f"(ALTER TABLE ... ADD PRIMARY KEY (...)) or remove it from 'tables'", fatal=True)
        if message.replica_identity != "f":
            raise SourceError(f"{self.where}: table {qualified} is not REPLICA IDENTITY FULL: run "
                              f"ALTER TABLE {_quote(message.namespace)}.{_quote(message.name)} REPLICA IDENTITY FULL;",
                              fatal=True)
        loaders = [self._decoder.loader(column.type_oid) for column in message.columns]
        self._relations[message.relid] = _Relation(message, loaders, keys)

    def _change(self, relid: int, op: str, old: tuple | None, new: tuple | None, items: list[SourceItem]) -> None:
        relation = self._relations[relid]
        before, native_before = self._image(relation, old, None) if old is not None else (None, None)
        after, native_after = self._image(relation, new, old) if new is not None else (None, None)
        image = after if after is not None else before
        assert image is not None
        key = {column: image[column] for column in relation.key}
        items.append(RowChange(relation.schema, relation.table, op, key, before, after, native_before, native_after))

    def _image(self, relation: _Relation, values: tuple, old: tuple | None) -> tuple[dict, dict]:
        python: dict[str, Any] = {}
        native: dict[str, str | None] = {}
        for name, load, raw, index in zip(relation.names, relation.loaders, values, range(len(values))):
            if raw is pgoutput.UNCHANGED_TOAST:
                if old is None or old[index] is pgoutput.UNCHANGED_TOAST:
                    raise SourceError(f"{self.where}: table {relation.schema}.{relation.table}: an unchanged "
                                      f"TOAST value of {name!r} came without the old row; set REPLICA IDENTITY FULL",
                                      fatal=True)
                raw = old[index]
            if raw is None:
                python[name] = native[name] = None
            else:
                native[name] = bytes(raw).decode("utf-8")
                python[name] = load(raw)
        return python, native


def _quote(identifier: str) -> str:
    return sql.Identifier(identifier).as_string(None)
