"""JSON form of column values: exact numbers, ISO-8601 times, base64 bytes, JSON as JSON.

``encode_value`` returns the JSON text of one value and ``dumps_row`` the JSON object of a
row image; ``RawJson`` marks a value that already is JSON text (a json/jsonb column) and is
spliced in verbatim, so that its numbers keep every digit.
"""

from __future__ import annotations

import base64
import json
import math
import sys
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

_SAFE_INT = 2**53
# PostgreSQL takes json nested thousands of levels deep; Python's JSON codec recurses once a
# level, within the interpreter's recursion limit (1,000 by default).
JSON_DEPTH_LIMIT = 20_000
_dump_str = json.JSONEncoder(ensure_ascii=False).encode
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def key_text(key: dict[str, Any]) -> str:
    """A key read back from an event (``{"id": 42}``) in the event log's text form (``{"id":42}``)."""
    return compact_json(key)


class RawJson(str):
    """A value that is already a JSON document (PostgreSQL json/jsonb, MySQL JSON)."""

    __slots__ = ()


class Verbatim(str):
    """A value kept in the source's text form because no Python type holds it exactly
    (an interval with months, an infinite timestamp, a value of an unknown type)."""

    __slots__ = ()


def encode_value(value: Any) -> str:
    """The JSON text of one column value."""
    encode = _BY_TYPE.get(type(value))
    return encode(value) if encode is not None else _encode_other(value)


def json_value(value: Any) -> Any:
    """A column value as an event document holds it: ``encode_value``'s JSON, read back."""
    kind = type(value)
    if kind in _JSON_ITSELF or (kind is int and -_SAFE_INT < value < _SAFE_INT):
        return value
    return json.loads(encode_value(value))


def allow_deep_json() -> None:
    """Let Python's JSON codec read and write documents nested up to ``JSON_DEPTH_LIMIT`` levels
    (once, at the start of a command; it raises the interpreter's recursion limit)."""
    if sys.getrecursionlimit() < JSON_DEPTH_LIMIT + 1_000:
        sys.setrecursionlimit(JSON_DEPTH_LIMIT + 1_000)


def load_doc(text: str) -> dict[str, Any]:
    """An event's JSON document, numbers with a fraction or exponent as exact ``Decimal``."""
    return json.loads(text, parse_float=Decimal)


def json_names(names: list[str]) -> str:
    """The JSON array of column names (``compact_json(names)``), each name's text made once
    (the texts ``dumps_row`` keeps)."""
    parts = []
    for name in names:
        prefix = _KEY_PREFIXES.get(name)
        if prefix is None:
            prefix = _KEY_PREFIXES[name] = _dump_str(str(name)) + ":"
        parts.append(prefix[:-1])
    return "[" + ",".join(parts) + "]"


def event_value(value: Any) -> Any:
    """A column value as an event's document holds it once read with ``Decimal`` for fractions:
    exactly ``json.loads(encode_value(value), parse_float=Decimal)``, without the JSON text for
    the common types."""
    kind = type(value)
    if kind in _JSON_ITSELF or (kind is int and -_SAFE_INT < value < _SAFE_INT):
        return value
    if kind is float and math.isfinite(value):
        return Decimal(repr(value))
    if kind is Decimal:
        return str(value)
    if kind is datetime or kind is date:
        return value.isoformat()
    return load_doc(encode_value(value))


def event_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row image with each value as ``event_value`` gives it."""
    if row is None:
        return None
    return {str(name): event_value(value) for name, value in row.items()}


def dumps_row(row: dict[str, Any] | None) -> str:
    """The JSON object of a row image (or ``null``)."""
    if row is None:
        return "null"
    parts = []
    for name, value in row.items():
        prefix = _KEY_PREFIXES.get(name)
        if prefix is None:
            prefix = _KEY_PREFIXES[name] = _dump_str(str(name)) + ":"
        encode = _BY_TYPE.get(type(value))
        parts.append(prefix + (encode(value) if encode is not None else _encode_other(value)))
    return "{" + ",".join(parts) + "}"


def _encode_int(value: int) -> str:
    return str(value) if -_SAFE_INT < value < _SAFE_INT else f'"{value}"'


def _encode_float(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return '"NaN"' if math.isnan(value) else ('"Infinity"' if value > 0 else '"-Infinity"')


def _encode_other(value: Any) -> str:
    """Subclasses and the less common types."""
    if isinstance(value, RawJson):
        return str.__str__(value)
    if isinstance(value, str):
        return _dump_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _encode_int(value)
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, Decimal):
        return f'"{value}"'
    if isinstance(value, (datetime, date, time)):
        return f'"{value.isoformat()}"'
    if isinstance(value, (bytes, bytearray, memoryview)):
        return '"' + base64.b64encode(bytes(value)).decode("ascii") + '"'
    if isinstance(value, uuid.UUID):
        return f'"{value}"'
    if isinstance(value, timedelta):
        return _dump_str(_iso_duration(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return dumps_row(value)
    if isinstance(value, (set, frozenset)):
        return "[" + ",".join(encode_value(item) for item in sorted(value, key=str)) + "]"
    return _dump_str(str(value))


_JSON_ITSELF = frozenset({str, bool, type(None)})  # types whose JSON text reads back as the same value
_BY_TYPE: dict[type, Any] = {
    type(None): lambda value: "null",
    bool: lambda value: "true" if value else "false",
    int: _encode_int,
    float: _encode_float,
    str: _dump_str,
    Verbatim: _dump_str,
    RawJson: str.__str__,
    Decimal: lambda value: f'"{value}"',
    datetime: lambda value: f'"{value.isoformat()}"',
    date: lambda value: f'"{value.isoformat()}"',
}
_KEY_PREFIXES: dict[str, str] = {}  # column name -> its JSON text and the colon


def _iso_duration(value: timedelta) -> str:
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    seconds = value.seconds + value.microseconds / 1_000_000
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"{sign}P{value.days}DT{text}S"
