"""What mysql-replication decodes differently from MariaDB, decoded as MariaDB does: latin1 text
and dates with zero parts.

The library reads a latin1 column with Python's ``cp1252``, which leaves five bytes
undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D); MariaDB's latin1 maps them to the control
characters of the same number (U+0081...), so a row holding one would stop the stream with
a UnicodeDecodeError on every restart. The ``mariadb_latin1`` codec is cp1252 with those five
bytes, the text MariaDB itself gives (``CONVERT(col USING utf8mb4)``, or a SELECT over a
utf8mb4 connection as ``cdc snapshot`` reads); the library's latin1 charsets are registered
with it.

The library turns a DATE or DATETIME with a zero part (``0000-00-00``, ``2020-00-15``,
allowed by a ``sql_mode`` without NO_ZERO_DATE/NO_ZERO_IN_DATE) into None, losing it: its
readers of those types are replaced with readers that give such a value as MariaDB prints
it (``Verbatim`` text), and every other value as before. A zero TIMESTAMP comes as the epoch
and is made text by ``cdc.sources.mysql.values``. ``install`` does both, once.
"""

from __future__ import annotations

import codecs
from datetime import date, datetime
from typing import Any

from pymysqlreplication.constants import CHARSET
from pymysqlreplication.row_event import RowsEvent

from cdc.sources.mysql.values import datetime_text
from cdc.values import Verbatim

LATIN1_CODEC = "mariadb_latin1"
_UNDEFINED_IN_CP1252 = (0x81, 0x8D, 0x8F, 0x90, 0x9D)
_DECODING_TABLE = "".join(
    chr(byte) if byte in _UNDEFINED_IN_CP1252 else bytes([byte]).decode("cp1252") for byte in range(256)
)
_ENCODING_TABLE = codecs.charmap_build(_DECODING_TABLE)
_CODEC = codecs.CodecInfo(
    name=LATIN1_CODEC,
    encode=lambda text, errors="strict": codecs.charmap_encode(text, errors, _ENCODING_TABLE),
    decode=lambda data, errors="strict": codecs.charmap_decode(data, errors, _DECODING_TABLE),
)
_installed = False


class _MariadbLatin1(CHARSET.Charset):
    @property
    def encoding(self) -> str:
        return LATIN1_CODEC


def install() -> None:
    """Register the codec and the date readers with the library (idempotent)."""
    global _installed
    if _installed:
        return
    missing = [name for name in _READERS if not hasattr(RowsEvent, name)]
    if missing:  # pragma: no cover - a mysql-replication release that reads dates otherwise
        raise RuntimeError(f"mysql-replication has no {', '.join(missing)}: pin mysql-replication 1.0.x")
    codecs.register(lambda name: _CODEC if name == LATIN1_CODEC else None)
    for dbms in ("mariadb", "mysql"):
        for charset_id in range(2048):
            charset = CHARSET.charset_by_id(charset_id, dbms)
            if charset is not None and charset.name == "latin1":
                CHARSET.charsets.add(
                    _MariadbLatin1(charset.id, charset.name, charset.collation, charset.is_default, charset.dbms)
                )
    for name, reader in _READERS.items():
        setattr(RowsEvent, name, reader)
    _installed = True


def _read_date(event: RowsEvent) -> Any:
    """DATE: 3 bytes, little-endian, day | month << 5 | year << 9."""
    value = event.packet.read_uint24()
    year, month, day = value >> 9, (value >> 5) & 0xF, value & 0x1F
    try:
        return date(year, month, day)
    except ValueError:
        return Verbatim(f"{year:04d}-{month:02d}-{day:02d}")


def _read_datetime(event: RowsEvent) -> Any:
    """DATETIME before MariaDB 10.1's format: 8 bytes, the decimal digits YYYYMMDDhhmmss."""
    value = event.packet.read_uint64()
    day_part, clock = divmod(value, 1_000_000)
    return _datetime(
        day_part // 10000, day_part // 100 % 100, day_part % 100, clock // 10000, clock // 100 % 100, clock % 100, 0, 0
    )


def _read_datetime2(event: RowsEvent, column: Any) -> Any:
    """DATETIME: 5 bytes big-endian (sign, 17 bits year*13+month, 5 day, 5 hour, 6 minute,
    6 second), then the fraction in (fsp + 1) // 2 bytes."""
    value = int.from_bytes(event.packet.read(5), "big")
    year, month = divmod((value >> 22) & 0x1FFFF, 13)
    fsp = column.fsp or 0
    fraction = int.from_bytes(event.packet.read((fsp + 1) // 2), "big") if fsp else 0
    if fsp % 2:
        fraction //= 10
    microsecond = fraction * 10 ** (6 - fsp)
    return _datetime(
        year, month, (value >> 17) & 0x1F, (value >> 12) & 0x1F, (value >> 6) & 0x3F, value & 0x3F, microsecond, fsp
    )


def _datetime(year: int, month: int, day: int, hour: int, minute: int, second: int, microsecond: int, fsp: int) -> Any:
    try:
        return datetime(year, month, day, hour, minute, second, microsecond)
    except ValueError:
        return Verbatim(datetime_text(f"{year:04d}-{month:02d}-{day:02d}", hour, minute, second, microsecond, fsp))


# the library's private readers (name-mangled ``RowsEvent.__read_date``...) these replace
_READERS = {
    "_RowsEvent__read_date": _read_date,
    "_RowsEvent__read_datetime": _read_datetime,
    "_RowsEvent__read_datetime2": _read_datetime2,
}
