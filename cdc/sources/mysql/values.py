"""Values read by mysql-replication (or by a SELECT) turned into cdc's Python values (pure, no I/O).

The library hands out TIMESTAMP as a naive UTC datetime, BIT as a string of bits, SET as a
Python set (``None`` when empty), TIME as a timedelta, and MariaDB's JSON (a LONGTEXT
with a ``json_valid`` check) as plain text; these are made exact and unambiguous here.
A date with a zero part (``0000-00-00``, ``2020-00-15 10:00:00``), which no Python type
holds, is ``Verbatim`` text exactly as MariaDB prints it, from the binlog (see
``cdc.sources.mysql.decoding``) and from a SELECT alike.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE

from cdc.values import RawJson, Verbatim

_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1)


def datetime_text(day: str, hour: int, minute: int, second: int, microsecond: int, fsp: int) -> str:
    """A DATETIME or TIMESTAMP as MariaDB prints it, with ``fsp`` digits of fraction."""
    text = f"{day} {hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{microsecond:06d}"[: len(text) + 1 + fsp] if fsp else text


def _timestamp(value: Any) -> Any:
    """A naive UTC datetime made aware; MariaDB's zero TIMESTAMP (from a SELECT) kept as its text."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)
    return _zero_date(value)


def _zero_date(value: Any) -> Any:
    """A DATE/DATETIME a SELECT gives as text (pymysql does for a zero part: ``0000-00-00``)."""
    return Verbatim(value) if isinstance(value, str) else value


def _binlog_timestamp(fsp: int) -> Callable[[Any], Any]:
    """TIMESTAMP from the binlog: MariaDB stores its zero as the epoch, which no other
    TIMESTAMP can be (they start at 1970-01-01 00:00:01 UTC)."""
    zero = Verbatim(datetime_text("0000-00-00", 0, 0, 0, 0, fsp))

    def convert(value: Any) -> Any:
        return zero if value == _EPOCH else _timestamp(value)

    return convert


def _bit(value: Any) -> Any:
    return int(value, 2) if isinstance(value, str) else value


def _set(value: Any) -> Any:
    return sorted(value) if isinstance(value, (set, frozenset)) else value


def _time(value: Any) -> Any:
    if not isinstance(value, timedelta):
        return value
    if timedelta(0) <= value < _DAY:
        seconds = value.seconds
        return time(seconds // 3600, seconds // 60 % 60, seconds % 60, value.microseconds)
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(int(value.total_seconds()), 3600)
    text = f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return Verbatim(f"{text}.{value.microseconds:06d}" if value.microseconds else text)


def _json_text(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return RawJson(value) if isinstance(value, str) else value


_BY_TYPE: dict[int, Callable[[Any], Any]] = {
    FIELD_TYPE.BIT: _bit,
    FIELD_TYPE.SET: _set,
    FIELD_TYPE.TIME: _time,
    FIELD_TYPE.TIME2: _time,
}


def column_converters(columns: list[Any], json_columns: set[str]) -> dict[str, Callable[[Any], Any]]:
    """For each column (mysql-replication ``Column`` objects) that needs it, its converter."""
    converters: dict[str, Callable[[Any], Any]] = {}
    for column in columns:
        if column.name in json_columns:
            converters[column.name] = _json_text
        elif column.type in (FIELD_TYPE.TIMESTAMP, FIELD_TYPE.TIMESTAMP2):
            converters[column.name] = _binlog_timestamp(getattr(column, "fsp", None) or 0)
        elif column.type in _BY_TYPE:
            converters[column.name] = _BY_TYPE[column.type]
    return converters


def _bit_bytes(value: Any) -> Any:
    return int.from_bytes(value, "big") if isinstance(value, bytes) else value


def _set_text(value: Any) -> Any:
    if isinstance(value, str):
        return sorted(item for item in value.split(",") if item)
    return _set(value)


_BY_DATA_TYPE: dict[str, Callable[[Any], Any]] = {
    "timestamp": _timestamp,
    "date": _zero_date,
    "datetime": _zero_date,
    "bit": _bit_bytes,
    "set": _set_text,
    "time": _time,
    "json": _json_text,
}


def select_converters(columns: list[tuple[str, str]]) -> dict[str, Callable[[Any], Any]]:
    """Converters for rows read by a SELECT (pymysql's values, for ``cdc snapshot``), by each column's
    data type, so that they come out as the binlog's rows do."""
    return {name: _BY_DATA_TYPE[data_type] for name, data_type in columns if data_type in _BY_DATA_TYPE}


def convert_row(
    values: dict[str, Any], none_sources: dict[str, str] | None, converters: dict[str, Callable[[Any], Any]]
) -> dict[str, Any]:
    """A row image with every value in cdc's form; an empty SET is ``[]``, not NULL."""
    row = dict(values)
    for name, convert in converters.items():
        value = row.get(name)
        if value is None:
            if none_sources and none_sources.get(name) == NONE_SOURCE.EMPTY_SET:
                row[name] = []
        else:
            row[name] = convert(value)
    return row
