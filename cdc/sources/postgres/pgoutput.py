"""Decoder for the pgoutput logical replication protocol, version 1 (pure, no I/O).

Each XLogData payload produced by the ``pgoutput`` plugin is exactly one
message; :func:`decode` turns it into one of the frozen dataclasses below.
The wire format is documented in the PostgreSQL 15 manual, "Logical Streaming
Replication Protocol / Message Formats". All integers are big-endian, LSNs are
unsigned 64-bit, OIDs and xids unsigned 32-bit, timestamps are microseconds
since 2000-01-01 UTC, strings are NUL-terminated UTF-8 (the replication
connection uses ``client_encoding=UTF8``).

Only what ``proto_version '1'`` (plus ``messages 'true'``) can send is
decoded: streaming ('S', 'E', 'c', 'A') and two-phase ('b', 'P', 'K', 'r',
'p') messages raise :class:`DecodeError`.

Row values ("TupleData") are decoded to a Python tuple with one entry per
column: ``None`` for NULL, :data:`UNCHANGED_TOAST` for an unchanged TOASTed
value that the server did not send, otherwise the raw ``bytes`` of the value
(text output format unless the ``binary`` option was requested). Turning
those bytes into Python values is left to the caller, which knows the column
types from the preceding :class:`Relation` message.

Why this module is long: it holds one decoder per pgoutput message type and the cursor
helpers they share, the whole of protocol version 1 on one page; split up, each decoder would
lose sight of the helpers it inlines for speed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cdc.errors import DecodeError
from cdc.sources.postgres.protocol import pg_timestamp_to_datetime

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "Column",
    "Commit",
    "DecodeError",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "PgOutputMessage",
    "Relation",
    "Truncate",
    "TupleData",
    "Type",
    "Update",
    "decode",
]


class _UnchangedToastType:
    """Type of :data:`UNCHANGED_TOAST`; there is only ever one instance."""

    __slots__ = ()
    _instance: _UnchangedToastType | None = None

    def __new__(cls) -> _UnchangedToastType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        # Pickle by reference so unpickling yields the same singleton.
        return "UNCHANGED_TOAST"

    def __copy__(self) -> _UnchangedToastType:
        return self

    def __deepcopy__(self, memo: object) -> _UnchangedToastType:
        return self


#: Placeholder for a TOASTed column value that did not change and therefore
#: was not sent (TupleData kind ``'u'``). The real value is whatever the
#: target already has; compare with ``is``.
UNCHANGED_TOAST: Final = _UnchangedToastType()

#: One row as sent by pgoutput: one entry per column of the relation.
TupleData = tuple[bytes | _UnchangedToastType | None, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    """'B': start of a transaction. ``final_lsn`` is the commit record's LSN."""

    final_lsn: int
    commit_ts: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """'C': end of a transaction. ``end_lsn`` is where the next one may start."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    """'O': the transaction was replicated from elsewhere (replication origin)."""

    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a :class:`Relation`."""

    flags: int
    name: str
    type_oid: int
    type_modifier: int

    @property
    def is_key(self) -> bool:
        """Whether the column is part of the replica identity key."""
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    """'R': schema of a table, sent before its first change in a session.

    ``namespace`` is ``""`` for ``pg_catalog``. ``replica_identity`` is the
    ``relreplident`` code: ``'d'`` default (primary key), ``'n'`` nothing,
    ``'f'`` full, ``'i'`` index.
    """

    relid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    """'Y': a non-built-in data type used by a following Relation.

    ``namespace`` is ``""`` for ``pg_catalog``.
    """

    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    """'I': a new row."""

    relid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    """'U': a changed row.

    At most one of ``old`` (the full old row, REPLICA IDENTITY FULL) and
    ``key`` (old values of the key columns only, other entries ``None``) is
    set; both are ``None`` when the key did not change.
    """

    relid: int
    new: TupleData
    old: TupleData | None
    key: TupleData | None


@dataclass(frozen=True, slots=True)
class Delete:
    """'D': a removed row; exactly one of ``old`` and ``key`` is set."""

    relid: int
    old: TupleData | None
    key: TupleData | None


@dataclass(frozen=True, slots=True)
class Truncate:
    """'T': TRUNCATE of one or more relations."""

    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class Message:
    """'M': a logical decoding message from ``pg_logical_emit_message``."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


PgOutputMessage = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message

# --------------------------------------------------------------------------
# Wire layouts (after the leading type byte unless noted).

_unpack_begin = struct.Struct(">QqI").unpack_from  # final_lsn, commit_ts, xid
_unpack_commit = struct.Struct(">BQQq").unpack_from  # flags, lsn, end_lsn, ts
_unpack_u64 = struct.Struct(">Q").unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_i32 = struct.Struct(">i").unpack_from
_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_relid_kind = struct.Struct(">IB").unpack_from  # relid, submessage byte
_unpack_rel_tail = struct.Struct(">BH").unpack_from  # replica identity, ncols
_unpack_col_type = struct.Struct(">Ii").unpack_from  # type oid, type modifier
_unpack_truncate = struct.Struct(">IB").unpack_from  # nrelations, options
_unpack_msg_head = struct.Struct(">BQ").unpack_from  # flags, lsn

_BEGIN_LEN: Final = 1 + 8 + 8 + 4
_COMMIT_LEN: Final = 1 + 1 + 8 + 8 + 8

# Message / TupleData bytes as ints (indexing bytes yields ints).
_N: Final = ord("N")
_K: Final = ord("K")
_O: Final = ord("O")
_NULL: Final = ord("n")
_TOAST: Final = ord("u")
_TEXT: Final = ord("t")
_BINARY: Final = ord("b")

_TRUNCATE_CASCADE: Final = 1
_TRUNCATE_RESTART_IDENTITY: Final = 2
_MESSAGE_TRANSACTIONAL: Final = 1

_NAMES: Final = {
    "B": "Begin",
    "C": "Commit",
    "O": "Origin",
    "R": "Relation",
    "Y": "Type",
    "I": "Insert",
    "U": "Update",
    "D": "Delete",
    "T": "Truncate",
    "M": "Message",
}

# Message types of later protocol versions, never sent with proto_version 1.
_UNSUPPORTED: Final = {
    "S": "Stream Start (proto_version 2+)",
    "E": "Stream Stop (proto_version 2+)",
    "c": "Stream Commit (proto_version 2+)",
    "A": "Stream Abort (proto_version 2+)",
    "b": "Begin Prepare (proto_version 3+)",
    "P": "Prepare (proto_version 3+)",
    "K": "Commit Prepared (proto_version 3+)",
    "r": "Rollback Prepared (proto_version 3+)",
    "p": "Stream Prepare (proto_version 3+)",
}


# --------------------------------------------------------------------------
# Errors. The message type is always buf[0]: every payload is one message.


def _describe(buf: bytes) -> str:
    kind = chr(buf[0])
    return f"pgoutput {kind!r} ({_NAMES.get(kind, 'unknown')}) message"


def _error(buf: bytes, pos: int, problem: str) -> DecodeError:
    return DecodeError(f"{problem} in {_describe(buf)} at offset {pos} (message is {len(buf)} bytes)")


def _truncated(buf: bytes, pos: int) -> DecodeError:
    return _error(buf, pos, "truncated data")


def _check_fixed_length(buf: bytes, size: int) -> None:
    if len(buf) < size:
        raise _error(buf, len(buf), f"truncated data (expected {size} bytes)")
    _check_end(buf, size)


def _check_end(buf: bytes, pos: int) -> None:
    if pos != len(buf):
        raise _error(buf, pos, f"{len(buf) - pos} unexpected trailing bytes")


# --------------------------------------------------------------------------
# Field readers: take (buf, pos), return (value, new_pos).


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\0", pos)
    if end < 0:
        raise _error(buf, pos, "unterminated string")
    try:
        return buf[pos:end].decode("utf-8"), end + 1
    except UnicodeDecodeError as exc:
        raise _error(buf, pos, f"invalid UTF-8 in string ({exc.reason})") from None


def _read_tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    """Read TupleData: Int16 ncols, then per column a kind byte and maybe a value."""
    try:
        (ncols,) = _unpack_u16(buf, pos)
        pos += 2
        values: list[bytes | _UnchangedToastType | None] = []
        append = values.append
        for _ in range(ncols):
            kind = buf[pos]
            if kind == _TEXT or kind == _BINARY:
                (length,) = _unpack_i32(buf, pos + 1)
                start = pos + 5
                end = start + length
                if length < 0 or end > len(buf):
                    raise _error(buf, pos, f"column value of invalid length {length}")
                append(buf[start:end])
                pos = end
            elif kind == _NULL:
                append(None)
                pos += 1
            elif kind == _TOAST:
                append(UNCHANGED_TOAST)
                pos += 1
            else:
                raise _error(buf, pos, f"unknown column value kind {bytes([kind])!r}")
    except (struct.error, IndexError):
        raise _truncated(buf, pos) from None
    return tuple(values), pos


def _timestamp(buf: bytes, pos: int, us: int) -> datetime:
    try:
        return pg_timestamp_to_datetime(us)
    except ValueError as exc:
        raise _error(buf, pos, str(exc)) from None


# --------------------------------------------------------------------------
# Message decoders: take the whole message, start after the type byte.


def _decode_begin(buf: bytes) -> Begin:
    _check_fixed_length(buf, _BEGIN_LEN)
    final_lsn, ts, xid = _unpack_begin(buf, 1)
    return Begin(final_lsn, _timestamp(buf, 9, ts), xid)


def _decode_commit(buf: bytes) -> Commit:
    _check_fixed_length(buf, _COMMIT_LEN)
    flags, commit_lsn, end_lsn, ts = _unpack_commit(buf, 1)
    return Commit(flags, commit_lsn, end_lsn, _timestamp(buf, 18, ts))


def _decode_origin(buf: bytes) -> Origin:
    try:
        (commit_lsn,) = _unpack_u64(buf, 1)
    except struct.error:
        raise _truncated(buf, 1) from None
    name, pos = _read_string(buf, 9)
    _check_end(buf, pos)
    return Origin(commit_lsn, name)


def _decode_relation(buf: bytes) -> Relation:
    pos = 1
    try:
        (relid,) = _unpack_u32(buf, pos)
        namespace, pos = _read_string(buf, pos + 4)
        name, pos = _read_string(buf, pos)
        identity, ncols = _unpack_rel_tail(buf, pos)
        pos += 3
        columns = []
        for _ in range(ncols):
            flags = buf[pos]
            col_name, pos = _read_string(buf, pos + 1)
            type_oid, type_modifier = _unpack_col_type(buf, pos)
            pos += 8
            columns.append(Column(flags, col_name, type_oid, type_modifier))
    except (struct.error, IndexError):
        raise _truncated(buf, pos) from None
    _check_end(buf, pos)
    return Relation(relid, namespace, name, chr(identity), tuple(columns))


def _decode_type(buf: bytes) -> Type:
    try:
        (oid,) = _unpack_u32(buf, 1)
    except struct.error:
        raise _truncated(buf, 1) from None
    namespace, pos = _read_string(buf, 5)
    name, pos = _read_string(buf, pos)
    _check_end(buf, pos)
    return Type(oid, namespace, name)


def _read_relid_kind(buf: bytes) -> tuple[int, int]:
    try:
        return _unpack_relid_kind(buf, 1)
    except struct.error:
        raise _truncated(buf, 1) from None


def _decode_insert(buf: bytes) -> Insert:
    relid, kind = _read_relid_kind(buf)
    if kind != _N:
        raise _error(buf, 5, f"expected b'N' tuple, got {bytes([kind])!r}")
    new, pos = _read_tuple(buf, 6)
    _check_end(buf, pos)
    return Insert(relid, new)


def _decode_update(buf: bytes) -> Update:
    relid, kind = _read_relid_kind(buf)
    pos = 5
    old = key = None
    if kind == _K or kind == _O:
        before, pos = _read_tuple(buf, pos + 1)
        if kind == _K:
            key = before
        else:
            old = before
        if pos >= len(buf):
            raise _truncated(buf, pos)
        kind = buf[pos]
    if kind != _N:
        raise _error(buf, pos, f"expected b'K', b'O' or b'N' tuple, got {bytes([kind])!r}")
    new, pos = _read_tuple(buf, pos + 1)
    _check_end(buf, pos)
    return Update(relid, new, old, key)


def _decode_delete(buf: bytes) -> Delete:
    relid, kind = _read_relid_kind(buf)
    if kind == _K:
        key, pos = _read_tuple(buf, 6)
        old = None
    elif kind == _O:
        old, pos = _read_tuple(buf, 6)
        key = None
    else:
        raise _error(buf, 5, f"expected b'K' or b'O' tuple, got {bytes([kind])!r}")
    _check_end(buf, pos)
    return Delete(relid, old, key)


def _decode_truncate(buf: bytes) -> Truncate:
    try:
        count, options = _unpack_truncate(buf, 1)
    except struct.error:
        raise _truncated(buf, 1) from None
    expected = 6 + 4 * count
    if len(buf) < expected:
        raise _error(buf, len(buf), f"truncated data ({count} relation ids need {expected} bytes)")
    _check_end(buf, expected)
    relids = struct.unpack_from(f">{count}I", buf, 6)
    return Truncate(
        relids,
        bool(options & _TRUNCATE_CASCADE),
        bool(options & _TRUNCATE_RESTART_IDENTITY),
    )


def _decode_message(buf: bytes) -> Message:
    try:
        flags, lsn = _unpack_msg_head(buf, 1)
    except struct.error:
        raise _truncated(buf, 1) from None
    prefix, pos = _read_string(buf, 10)
    try:
        (length,) = _unpack_i32(buf, pos)
    except struct.error:
        raise _truncated(buf, pos) from None
    start = pos + 4
    end = start + length
    if length < 0 or end > len(buf):
        raise _error(buf, pos, f"content of invalid length {length}")
    _check_end(buf, end)
    return Message(bool(flags & _MESSAGE_TRANSACTIONAL), lsn, prefix, buf[start:end])


_DECODERS: Final[dict[int, Callable[[bytes], PgOutputMessage]]] = {
    ord("B"): _decode_begin,
    ord("C"): _decode_commit,
    ord("O"): _decode_origin,
    ord("R"): _decode_relation,
    ord("Y"): _decode_type,
    ord("I"): _decode_insert,
    ord("U"): _decode_update,
    ord("D"): _decode_delete,
    ord("T"): _decode_truncate,
    ord("M"): _decode_message,
}


def decode(payload: bytes | bytearray | memoryview) -> PgOutputMessage:
    """Decode one pgoutput (proto_version 1) message, e.g. an XLogData payload.

    Raises :class:`DecodeError` (a ``ValueError``) if the message is empty,
    truncated, has trailing bytes, is of an unknown type or of a type that
    protocol version 1 never sends.
    """
    # One copy of a memoryview is cheaper than slicing and searching a view
    # field by field, and makes every value an independent ``bytes``.
    buf = payload if type(payload) is bytes else bytes(payload)
    if not buf:
        raise DecodeError("empty pgoutput message")
    decoder = _DECODERS.get(buf[0])
    if decoder is None:
        kind = chr(buf[0])
        if kind in _UNSUPPORTED:
            raise DecodeError(
                f"pgoutput message type {kind!r} ({_UNSUPPORTED[kind]}) at offset 0 "
                f"is not supported with proto_version 1"
            )
        raise DecodeError(f"unknown pgoutput message type {bytes([buf[0]])!r} at offset 0")
    return decoder(buf)
