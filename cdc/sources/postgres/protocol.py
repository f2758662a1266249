"""PostgreSQL streaming replication protocol framing (pure, no I/O).

During ``START_REPLICATION`` the server and client exchange CopyData messages
whose first byte says what they carry (PostgreSQL docs, "Streaming
Replication Protocol"):

* ``'w'`` XLogData (server -> client): Int64 dataStart, Int64 walEnd,
  Int64 sendTime, then the payload -- for logical replication one pgoutput
  message (see :mod:`cdc.sources.postgres.pgoutput`);
* ``'k'`` Primary keepalive (server -> client): Int64 walEnd, Int64 sendTime,
  Byte1 replyRequested;
* ``'r'`` Standby status update (client -> server): Int64 written, Int64
  flushed, Int64 applied, Int64 clientTime, Byte1 replyRequested.

All integers are big-endian. Timestamps are microseconds since
2000-01-01 00:00:00 UTC (the PostgreSQL epoch). This module also formats and
parses LSNs in PostgreSQL's ``pg_lsn`` text form (``"16/B374D848"``).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cdc.errors import ProtocolError

__all__ = [
    "PG_EPOCH",
    "Keepalive",
    "ProtocolError",
    "XLogData",
    "datetime_to_pg_timestamp",
    "format_lsn",
    "parse_copy_data",
    "parse_lsn",
    "pg_timestamp_to_datetime",
    "standby_status_update",
]

#: 2000-01-01 00:00:00 UTC, the origin of PostgreSQL's internal timestamps.
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_MAX_LSN = (1 << 64) - 1

# Bodies after the leading message-type byte.
_XLOGDATA_HEADER = struct.Struct(">QQq")  # dataStart, walEnd, sendTime
_KEEPALIVE = struct.Struct(">QqB")  # walEnd, sendTime, replyRequested
_STATUS_UPDATE = struct.Struct(">cQQQqB")  # 'r', write, flush, apply, clientTime, reply

_XLOGDATA_HEADER_LEN = 1 + _XLOGDATA_HEADER.size  # 25
_KEEPALIVE_LEN = 1 + _KEEPALIVE.size  # 18

_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


@dataclass(frozen=True, slots=True)
class XLogData:
    """A ``'w'`` message: a chunk of WAL data (one pgoutput message when logical).

    ``payload`` is a zero-copy view into the buffer given to
    :func:`parse_copy_data`.
    """

    data_start: int
    wal_end: int
    send_time: datetime
    payload: memoryview


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A ``'k'`` primary keepalive message.

    If ``reply_requested`` is true the client should send a standby status
    update soon, or the server may drop the connection on
    ``wal_sender_timeout``.
    """

    wal_end: int
    send_time: datetime
    reply_requested: bool


def pg_timestamp_to_datetime(us: int) -> datetime:
    """Convert microseconds since 2000-01-01 UTC to an aware UTC datetime."""
    try:
        # Positional (days, seconds, microseconds): measurably faster than
        # the keyword form, and this runs once per XLogData message.
        return PG_EPOCH + timedelta(0, 0, us)
    except OverflowError:
        raise ValueError(f"PostgreSQL timestamp {us} is outside the range of datetime") from None


def datetime_to_pg_timestamp(dt: datetime) -> int:
    """Convert an aware datetime to microseconds since 2000-01-01 UTC (exact)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {dt!r}")
    delta = dt - PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_copy_data(buf: bytes | bytearray | memoryview) -> XLogData | Keepalive:
    """Parse one CopyData message received from a walsender.

    Raises :class:`ProtocolError` for an empty, truncated, over-long or
    unknown message.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    if size == 0:
        raise ProtocolError("empty CopyData message")
    kind = view[0]
    if kind == 0x77:  # 'w'
        if size < _XLOGDATA_HEADER_LEN:
            raise ProtocolError(f"truncated XLogData ('w') message: {size} bytes, header needs {_XLOGDATA_HEADER_LEN}")
        data_start, wal_end, send_time = _XLOGDATA_HEADER.unpack_from(view, 1)
        return XLogData(
            data_start,
            wal_end,
            _timestamp(send_time, "XLogData ('w')"),
            view[_XLOGDATA_HEADER_LEN:],
        )
    if kind == 0x6B:  # 'k'
        if size != _KEEPALIVE_LEN:
            problem = "truncated" if size < _KEEPALIVE_LEN else "over-long"
            raise ProtocolError(f"{problem} primary keepalive ('k') message: {size} bytes, expected {_KEEPALIVE_LEN}")
        wal_end, send_time, reply = _KEEPALIVE.unpack_from(view, 1)
        return Keepalive(wal_end, _timestamp(send_time, "primary keepalive ('k')"), reply != 0)
    raise ProtocolError(
        f"unknown replication CopyData message type {bytes([kind])!r} "
        f"(0x{kind:02x}); expected b'w' (XLogData) or b'k' (keepalive)"
    )


def standby_status_update(
    written_lsn: int,
    flushed_lsn: int,
    applied_lsn: int,
    now: datetime | None = None,
    reply_requested: bool = False,
) -> bytes:
    """Build a ``'r'`` standby status update to send as CopyData.

    For logical replication ``flushed_lsn`` is what the server uses to advance
    the slot's ``confirmed_flush_lsn``. ``now`` defaults to the current time.
    """
    for name, lsn in (
        ("written_lsn", written_lsn),
        ("flushed_lsn", flushed_lsn),
        ("applied_lsn", applied_lsn),
    ):
        _check_lsn(lsn, name)
    if now is None:
        now = datetime.now(UTC)
    return _STATUS_UPDATE.pack(
        b"r",
        written_lsn,
        flushed_lsn,
        applied_lsn,
        datetime_to_pg_timestamp(now),
        1 if reply_requested else 0,
    )


def format_lsn(lsn: int) -> str:
    """Format an LSN like PostgreSQL's ``pg_lsn`` output, e.g. ``"16/B374D848"``."""
    _check_lsn(lsn, "lsn")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Parse ``pg_lsn`` text (``"16/B374D848"``, hex is case-insensitive).

    Accepts exactly what PostgreSQL's ``pg_lsn`` input accepts: 1-8 hex digits,
    ``/``, 1-8 hex digits, nothing else (no whitespace, sign or ``0x``).
    """
    if not isinstance(text, str):
        raise TypeError(f"LSN must be a str, got {type(text).__name__}")
    match = _LSN_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid LSN {text!r}: expected two groups of 1-8 hex digits separated by '/', e.g. '16/B374D848'"
        )
    high, low = match.groups()
    return (int(high, 16) << 32) | int(low, 16)


def _check_lsn(lsn: int, name: str) -> None:
    if not isinstance(lsn, int) or isinstance(lsn, bool):
        raise TypeError(f"{name} must be an int, got {type(lsn).__name__}")
    if not 0 <= lsn <= _MAX_LSN:
        raise ValueError(f"{name} {lsn} is outside the LSN range 0..2**64-1")


def _timestamp(us: int, what: str) -> datetime:
    try:
        return pg_timestamp_to_datetime(us)
    except ValueError as exc:
        raise ProtocolError(f"{what} message: {exc}") from None
