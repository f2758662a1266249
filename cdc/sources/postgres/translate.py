"""Replication CopyData messages turned into the pipeline's items (pure: no socket, no database).

``Translator`` reads the CopyData messages of a pgoutput replication stream one at a time
(``protocol.parse_copy_data`` framing, ``pgoutput.decode`` payloads) and appends
``TxnBegin``/``RowChange``/``TxnCommit`` for each transaction, ``WriteBack`` for the marker
message cdc's sync target writes, and ``Idle`` where the position may move on outside a
transaction (keepalives, heartbeat messages, the drain target). It keeps what that takes
between messages: the relations announced, the transaction being read, the highest WAL
position received and the drain target. A relation's columns come from its Relation message;
its primary key from the injected ``primary_key`` callable (today's catalog), remembered per
relation id so that the changes of a table dropped while cdc was behind keep the key they had;
its value loaders from the ``ValueDecoder`` given. The changes of a relation that is not
captured, or that is gone with its key unknown, are skipped with a warning. What needs the
connection stays with the stream: ``copy_data`` returns True when the server asked for a
status reply. Whatever the stream holds, the only error is a one-line ``SourceError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from psycopg import DataError, sql

from cdc.errors import SourceError, StreamDecodeError
from cdc.logs import one_line
from cdc.model import SYNC_MESSAGE_PREFIX, Idle, RowChange, TxnBegin, TxnCommit, WriteBack
from cdc.sources.base import SourceItem
from cdc.sources.postgres import pgoutput
from cdc.sources.postgres.protocol import Keepalive, format_lsn, parse_copy_data
from cdc.sources.postgres.values import Loader, ValueDecoder

log = logging.getLogger("cdc.source.postgres")

# relid -> the names of the relation's primary key columns, in key order (empty: no primary key;
# None: no such relation any more, it was dropped)
PrimaryKey = Callable[[int], list[str] | None]

_Insert, _Update, _Delete = pgoutput.Insert, pgoutput.Update, pgoutput.Delete
_UNCHANGED_TOAST = pgoutput.UNCHANGED_TOAST
# what a psycopg loader may raise on a value it cannot read
_VALUE_ERRORS = (ValueError, ArithmeticError, LookupError, TypeError, DataError)


class _Relation:
    """A relation as announced by the stream, with what decoding its tuples needs."""

    __slots__ = ("key", "loaders", "names", "schema", "table")

    def __init__(self, message: pgoutput.Relation, loaders: list[Loader], key: list[str]) -> None:
        self.schema = message.namespace
        self.table = message.name
        self.names = [column.name for column in message.columns]
        self.loaders = loaders
        self.key = key


class Translator:
    """The state between replication messages, and the items each message makes.

    ``captured``: the (schema, table) pairs to stream (None: every relation the publication
    sends). ``missing``: captured tables absent from the catalog when streaming started; one
    whose changes the stream never holds is a fatal error once ``backlog_end`` is read.
    """

    def __init__(
        self,
        where: str,
        primary_key: PrimaryKey,
        decoder: ValueDecoder,
        captured: Collection[tuple[str, str]] | None = None,
    ) -> None:
        self._where = where
        self._primary_key = primary_key
        self._decoder = decoder
        self._captured = None if captured is None else set(captured)
        self._relations: dict[int, _Relation] = {}
        self._skipped: set[int] = set()  # relids whose changes are not streamed
        self._known_keys: dict[int, list[str]] = {}  # relid -> primary key, kept across restarts
        self._txn: TxnBegin | None = None
        self.received = 0  # the highest WAL position the server has sent (kept across restarts)
        self.drain_target: int | None = None  # with --drain: the position whose reading makes Idle "drained"
        self.missing: set[tuple[str, str]] = set()
        self.backlog_end: int | None = None  # the stream's end position when it started

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    def restart(self, drain_target: int | None = None) -> None:
        """Streaming (re)starts: forget the transaction being read and the relations announced."""
        self._txn = None
        self._relations.clear()
        self._skipped.clear()
        self.drain_target = drain_target
        self.missing = set()
        self.backlog_end = None

    def remember_key(self, relid: int, key: list[str]) -> None:
        """The primary key of a relation, read from the catalog while the table exists."""
        self._known_keys[relid] = key

    def copy_data(self, data: bytes | bytearray | memoryview, items: list[SourceItem]) -> bool:
        """Turn one CopyData message into items; True when the server asked for a status reply.

        A frame or message that cannot be decoded is a fatal ``SourceError``.
        """
        try:
            frame = parse_copy_data(data)
            if frame.wal_end > self.received:
                self.received = frame.wal_end
            if isinstance(frame, Keepalive):
                if self._txn is None:
                    self._idle(frame.wal_end, items)
                return frame.reply_requested
            self.message(pgoutput.decode(frame.payload), items)
        except StreamDecodeError as exc:
            raise SourceError(f"{self._where}: cannot decode the stream: {exc}", fatal=True) from None
        return False

    def message(self, message: Any, items: list[SourceItem]) -> None:
        """Turn one decoded pgoutput message into items."""
        kind = type(message)
        if kind is _Insert:
            self._change(message.relid, "insert", None, message.new, items)
        elif kind is _Update:
            self._change(message.relid, "update", message.old or message.key, message.new, items)
        elif kind is _Delete:
            self._change(message.relid, "delete", message.old or message.key, None, items)
        elif kind is pgoutput.Begin:
            self._txn = TxnBegin(
                f"{message.final_lsn:016X}", format_lsn(message.final_lsn), str(message.xid), message.commit_ts
            )
            items.append(self._txn)
        elif kind is pgoutput.Commit:
            self._commit(message, items)
        elif kind is pgoutput.Relation:
            self._relation(message)
        elif kind is pgoutput.Truncate:
            for relid in message.relids:
                relation = self._announced(relid, "a truncate")
                if relation is not None:
                    items.append(RowChange(relation.schema, relation.table, "truncate", {}, None, None))
        elif kind is pgoutput.Message:
            self._logical_message(message, items)

    def _commit(self, message: pgoutput.Commit, items: list[SourceItem]) -> None:
        if self._txn is None:
            raise self._broken(f"a commit at {format_lsn(message.end_lsn)} came without its begin")
        items.append(TxnCommit(self._txn.txn_key, format_lsn(message.end_lsn)))
        self._txn = None
        if self.drain_target is not None and message.end_lsn >= self.drain_target:
            self._idle(message.end_lsn, items)
        else:
            self._check_missing(message.end_lsn)

    def _logical_message(self, message: pgoutput.Message, items: list[SourceItem]) -> None:
        if not message.transactional and self._txn is None:
            self._idle(message.lsn, items)
        elif message.transactional and message.prefix == SYNC_MESSAGE_PREFIX:
            marker = WriteBack.from_json(message.content)
            if marker is not None:
                items.append(marker)

    def _idle(self, lsn: int, items: list[SourceItem]) -> None:
        self._check_missing(lsn)
        drained = self.drain_target is not None and lsn >= self.drain_target
        items.append(Idle(format_lsn(lsn), "drained" if drained else ""))

    def _check_missing(self, lsn: int) -> None:
        """Once the stream is read up to where it ended at start, a captured table that is not
        in the catalog and whose changes the stream did not hold is a table that does not exist."""
        if self.missing and self.backlog_end is not None and lsn >= self.backlog_end:
            schema, table = sorted(self.missing)[0]
            raise SourceError(
                f"{self._where}: table {schema}.{table} does not exist: create it, or remove "
                f"'{schema}.{table}' from 'tables'",
                fatal=True,
            )

    def _relation(self, message: pgoutput.Relation) -> None:
        relid, qualified = message.relid, f"{message.namespace}.{message.name}"
        self._relations.pop(relid, None)
        self._skipped.discard(relid)
        if self._captured is not None and (message.namespace, message.name) not in self._captured:
            self._skip(relid, f"table {qualified} is not in 'tables': its changes are ignored")
            return
        self.missing.discard((message.namespace, message.name))
        keys = self._primary_key(relid)
        if keys is None:  # dropped since these changes were written
            keys = self._known_keys.get(relid)
            if keys is None:
                self._skip(
                    relid, f"table {qualified} was dropped and its primary key is unknown: its changes are skipped"
                )
                return
            self._warn(f"table {qualified} was dropped: its changes are applied with the primary key {keys}")
        elif not keys:
            raise SourceError(
                f"{self._where}: table {qualified} has no primary key: add one "
                f"(ALTER TABLE ... ADD PRIMARY KEY (...)) or remove it from 'tables'",
                fatal=True,
            )
        if message.replica_identity != "f":
            raise SourceError(
                f"{self._where}: table {qualified} is not REPLICA IDENTITY FULL: run "
                f"ALTER TABLE {_quote(message.namespace)}.{_quote(message.name)} REPLICA IDENTITY FULL;",
                fatal=True,
            )
        names = {column.name for column in message.columns}
        absent = [column for column in keys if column not in names]
        if absent:
            raise self._broken(
                f"table {qualified}: its primary key column {absent[0]!r} is not in its Relation message"
            )
        self._known_keys[relid] = keys
        loaders = [self._decoder.loader(column.type_oid) for column in message.columns]
        self._relations[relid] = _Relation(message, loaders, keys)

    def _skip(self, relid: int, what: str) -> None:
        self._skipped.add(relid)
        self._warn(what)

    def _warn(self, what: str) -> None:
        position = self._txn.position if self._txn is not None else format_lsn(self.received)
        log.warning("%s: %s (at %s)", self._where, what, position, extra={"position": position})

    def _announced(self, relid: int, what: str) -> _Relation | None:
        """The relation of a change; None when its changes are skipped."""
        relation = self._relations.get(relid)
        if relation is None and relid not in self._skipped:
            raise self._broken(f"{what} of relation {relid} came before its Relation message")
        return relation

    def _broken(self, what: str) -> SourceError:
        return SourceError(f"{self._where}: cannot decode the stream: {what}", fatal=True)

    def _change(self, relid: int, op: str, old: tuple | None, new: tuple | None, items: list[SourceItem]) -> None:
        relation = self._relations.get(relid) or self._announced(relid, f"an {op}")
        if relation is None:
            return
        if self._txn is None:
            raise self._broken(f"an {op} of table {relation.schema}.{relation.table} came outside a transaction")
        before, native_before = self._image(relation, old, None) if old is not None else (None, None)
        after, native_after = self._image(relation, new, old) if new is not None else (None, None)
        image = after if after is not None else before
        assert image is not None
        key = {column: image[column] for column in relation.key}
        items.append(RowChange(relation.schema, relation.table, op, key, before, after, native_before, native_after))

    def _image(self, relation: _Relation, values: tuple, old: tuple | None) -> tuple[dict, dict]:
        """The row's Python values and text forms; an unchanged TOAST value is taken from ``old``."""
        if len(values) != len(relation.names) or (old is not None and len(old) != len(values)):
            raise self._broken(
                f"a row of table {relation.schema}.{relation.table} has {len(values)} values,"
                f" its Relation message {len(relation.names)} columns"
            )
        python: dict[str, Any] = {}
        native: dict[str, str | None] = {}
        name = ""
        try:
            for name, load, raw, index in zip(relation.names, relation.loaders, values, range(len(values))):
                if raw is _UNCHANGED_TOAST:
                    if old is None or old[index] is _UNCHANGED_TOAST:
                        raise SourceError(
                            f"{self._where}: table {relation.schema}.{relation.table}: an unchanged "
                            f"TOAST value of {name!r} came without the old row; set REPLICA IDENTITY FULL",
                            fatal=True,
                        )
                    raw = old[index]
                if raw is None:
                    python[name] = native[name] = None
                else:
                    native[name] = bytes(raw).decode("utf-8")
                    python[name] = load(raw)
        except _VALUE_ERRORS as exc:
            raise SourceError(
                f"{self._where}: table {relation.schema}.{relation.table}: the value of column {name!r}"
                f" cannot be read: {one_line(exc)}",
                fatal=True,
            ) from None
        return python, native


def _quote(identifier: str) -> str:
    return sql.Identifier(identifier).as_string(None)
