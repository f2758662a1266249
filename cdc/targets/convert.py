"""Event values (the JSON form of cdc/values.py) turned into parameters for a target column.

An event's JSON document carries every value in a database-neutral form: integers as
numbers (strings beyond 2^53), numeric/decimal as exact strings, floats as numbers or
"NaN"/"Infinity", timestamps, dates and times ISO-8601, intervals as ISO-8601 durations,
bytes base64, JSON as JSON, arrays as lists, MySQL SETs as lists, BIT as an integer. A
target converts each value by the *family* of the column that receives it, found from the
type the target database reports (``mysql_family``, ``postgres_family``):

==========  =================================================================
family      value given to the driver
==========  =================================================================
binary      base64 text -> bytes
json        any value -> its JSON text (numbers keep every digit)
datetime    ISO timestamp -> naive datetime; an offset-aware one in UTC; MySQL's zero
            dates (``0000-00-00``, ``2020-00-15 10:00:00``) as they are
date        ISO date -> date; MySQL's zero dates as they are
calendar    (PostgreSQL date/timestamp) ISO text as is; a MySQL zero date, which it
            cannot hold, -> NULL with a warning naming table, key and column
time        ISO time, [-]HHH:MM:SS or ISO duration -> "[-]HH:MM:SS[.ffffff]"
bool        true/false, 0/1, "t"/"f"... -> bool
bit         integer, bool or "0101" bit string -> int
set         list of strings -> comma-joined text
decimal     number or numeric text -> exact plain text
float       number or numeric text -> float; NaN/Infinity refused (MySQL)
integer     integer, bool, integral number or digits -> int
text        text as is; lists/dicts -> JSON text; other scalars -> their JSON text
array       list -> list (psycopg adapts it; JSON elements become JSON text)
==========  =================================================================

Load documents with ``load_doc`` so that numbers with a fraction are ``Decimal`` (exact for
JSON columns and decimals, and ``float(Decimal(repr(x))) == x`` for floats). Every
converter passes ``None`` through and raises ``ConversionError`` for a value the column
cannot hold; nothing here does I/O but the warning of a zero date stored as NULL. A
PostgreSQL target also refuses text holding the NUL character (``postgres_converter``).

Why this module is long: it is the one table of conversions, a converter for each family
and the catalog types of both target databases mapped to them; the families are only
meaningful together.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from cdc.errors import ConversionError
from cdc.model import Event
from cdc.values import load_doc as load_doc

log = logging.getLogger("cdc.targets")

Converter = Callable[[Any], Any]

_dump_str = json.JSONEncoder(ensure_ascii=False).encode


def old_key_and_after(event: Event) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The key of the row as it was (an update may change it) and the row to write, in the
    document's values."""
    images = event.images()
    key, before = images.key, images.before
    if before is not None and all(name in before for name in key):
        key = {name: before[name] for name in key}
    return key, images.after


def dump_json(value: Any) -> str:
    """Compact JSON text (no ASCII escaping) of a loaded value; ``Decimal`` digits kept as they are."""
    if isinstance(value, dict):
        return "{" + ",".join(_dump_str(str(k)) + ":" + dump_json(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dump_json(item) for item in value) + "]"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ConversionError(f"{value} is not a JSON number")
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConversionError(f"{value!r} is not a JSON number")
    if isinstance(value, (bytes, bytearray)):
        return _dump_str(base64.b64encode(value).decode("ascii"))
    return json.dumps(value, ensure_ascii=False)


# -- the families ---------------------------------------------------------------------


def _binary(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ConversionError(f"{_short(value)} is not base64 (how bytes travel in events)") from None
    raise ConversionError(f"{_short(value)} cannot be stored in a binary column")


_MYSQL_DATE_TEXT = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?: \d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)?")


def is_zero_date(value: Any) -> bool:
    """Whether ``value`` is MySQL's text of a date no calendar holds (``0000-00-00``,
    ``2020-00-15 10:00:00``: a zero part, allowed without NO_ZERO_DATE/NO_ZERO_IN_DATE), as
    events carry it."""
    match = _MYSQL_DATE_TEXT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return False
    try:
        date(*map(int, match.groups()))
    except ValueError:
        return True
    return False


class ZeroDate(ConversionError):
    """A MySQL zero date for a column that cannot hold it (a PostgreSQL date or timestamp)."""


def _datetime(value: Any) -> Any:
    if isinstance(value, str):
        if is_zero_date(value):  # MySQL's zero date travels as it is
            return value
        if value.lstrip("+-").lower() == "infinity":
            raise ConversionError(f"the timestamp {value!r} cannot be stored in a MySQL DATETIME/TIMESTAMP")
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConversionError(f"{_short(value)} is not an ISO-8601 timestamp") from None
    elif not isinstance(value, datetime):
        raise ConversionError(f"{_short(value)} is not a timestamp")
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _date(value: Any) -> Any:
    if isinstance(value, str):
        if is_zero_date(value):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ConversionError(f"{_short(value)} is not an ISO-8601 date") from None
    if isinstance(value, datetime):
        raise ConversionError(f"{value.isoformat()} is a timestamp, not a date")
    if isinstance(value, date):
        return value
    raise ConversionError(f"{_short(value)} is not a date")


_CLOCK = re.compile(r"-?\d+:[0-5]\d:[0-5]\d(\.\d{1,6})?")
_DURATION = re.compile(
    r"(?P<sign>-)?P(?:(?P<Y>[-+]?\d+)Y)?(?:(?P<M>[-+]?\d+)M)?(?:(?P<W>[-+]?\d+)W)?(?:(?P<D>[-+]?\d+)D)?"
    r"(?:T(?:(?P<h>[-+]?\d+)H)?(?:(?P<m>[-+]?\d+)M)?(?:(?P<s>[-+]?\d+(?:\.\d+)?)S)?)?"
)


def _time(value: Any) -> str:
    if isinstance(value, timedelta):
        return _clock(Decimal(value.days * 86400 + value.seconds) + Decimal(value.microseconds) / 1_000_000)
    if isinstance(value, time):
        return _time_of_day(value)
    if not isinstance(value, str):
        raise ConversionError(f"{_short(value)} is not a time")
    if _CLOCK.fullmatch(value):
        return value
    duration = _DURATION.fullmatch(value)
    if duration is not None and value not in ("P", "-P"):
        return _clock(_duration_seconds(duration))
    try:
        return _time_of_day(time.fromisoformat(value))
    except ValueError:
        raise ConversionError(f"{_short(value)} is not an ISO-8601 time or duration") from None


def _time_of_day(value: time) -> str:
    """HH:MM:SS[.ffffff]; a time with an offset is moved to UTC, like timestamps are."""
    seconds = value.hour * 3600 + value.minute * 60 + value.second
    offset = value.utcoffset()
    if offset is not None:
        seconds = (seconds - int(offset.total_seconds())) % 86400
    return _clock(Decimal(seconds) + Decimal(value.microsecond) / 1_000_000)


def _duration_seconds(match: re.Match[str]) -> Decimal:
    parts = match.groupdict()
    if int(parts["Y"] or 0) or int(parts["M"] or 0):
        raise ConversionError(
            f"the interval {match.group(0)!r} has years or months, which have no fixed "
            "length: a TIME column cannot hold it"
        )
    total = (
        Decimal(parts["W"] or 0) * 604800
        + Decimal(parts["D"] or 0) * 86400
        + Decimal(parts["h"] or 0) * 3600
        + Decimal(parts["m"] or 0) * 60
        + Decimal(parts["s"] or 0)
    )
    return -total if parts["sign"] else total


def _clock(seconds: Decimal) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    whole = int(seconds)
    micros = int((seconds - whole) * 1_000_000)
    text = f"{sign}{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return f"{text}.{micros:06d}" if micros else text


_TRUE = {"t", "true", "y", "yes", "on", "1"}
_FALSE = {"f", "false", "n", "no", "off", "0"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, Decimal, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConversionError(f"{_short(value)} is not a boolean")


def _bit(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value and set(value) <= {"0", "1"}:
        return int(value, 2)
    raise ConversionError(f"{_short(value)} is not a bit value (an integer or a string of 0 and 1)")


def _set(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        if any("," in item for item in value):
            raise ConversionError(f"{_short(value)}: a SET member cannot contain a comma")
        return ",".join(value)
    raise ConversionError(f"{_short(value)} is not a list of SET members")


def _decimal(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    raise ConversionError(f"{_short(value)} is not a number")


def _float(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().lstrip("+-").lower() in ("nan", "infinity", "inf"):
            raise ConversionError(f"{value} cannot be stored: MySQL floating-point columns hold only finite numbers")
        try:
            value = Decimal(value)
        except InvalidOperation:
            raise ConversionError(f"{_short(value)} is not a number") from None
    if isinstance(value, (Decimal, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ConversionError(f"{value} cannot be stored: MySQL floating-point columns hold only finite numbers")
        return number
    raise ConversionError(f"{_short(value)} is not a number")


def _integer(value: Any) -> int:
    if isinstance(value, (bool, int)):
        return int(value)
    number: Any = value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise ConversionError(f"{_short(value)} is not an integer") from None
    if isinstance(number, (Decimal, float)) and math.isfinite(number) and number == int(number):
        return int(number)
    raise ConversionError(f"{_short(value)} is not an integer")


def _text(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    return dump_json(value)


def _array(value: Any) -> Any:
    if isinstance(value, str):  # already an array literal
        return value
    if isinstance(value, list):
        return [_array_item(item) for item in value]
    raise ConversionError(f"{_short(value)} is not an array")


def _array_item(item: Any) -> Any:
    if isinstance(item, list):
        return [_array_item(inner) for inner in item]
    if isinstance(item, dict):
        return dump_json(item)
    return item


def _calendar(value: Any) -> Any:
    """A PostgreSQL date or timestamp: the event's ISO text, which PostgreSQL reads itself."""
    if is_zero_date(value):
        raise ZeroDate(f"the MySQL zero date {value!r} has no PostgreSQL date or timestamp")
    return _text(value)


_FAMILIES: dict[str, Converter] = {
    "calendar": _calendar,
    "binary": _binary,
    "json": dump_json,
    "datetime": _datetime,
    "date": _date,
    "time": _time,
    "bool": _bool,
    "bit": _bit,
    "set": _set,
    "decimal": _decimal,
    "float": _float,
    "integer": _integer,
    "text": _text,
    "array": _array,
}
FAMILIES = frozenset(_FAMILIES)


def column_converter(family: str) -> Converter:
    """The converter for a family (see the module docstring); ``None`` always passes through."""
    try:
        convert = _FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown column family {family!r}") from None

    def converter(value: Any) -> Any:
        return None if value is None else convert(value)

    converter.__name__ = f"convert_{family}"
    return converter


def convert_row(row: Mapping[str, Any], converters: Mapping[str, Converter], where: str = "") -> dict[str, Any]:
    """Each value through its column's converter (columns without one unchanged).

    A ``ConversionError`` names the column: ``column 'price': NaN cannot be stored: ...``.
    With ``where`` (the table and key, for the log), a zero date that the column cannot hold
    becomes NULL, with a warning; without, it is an error too (in a key).
    """
    converted = {}
    for name, value in row.items():
        convert = converters.get(name)
        try:
            converted[name] = value if convert is None else convert(value)
        except ZeroDate as exc:
            if not where:
                raise ConversionError(f"column {name!r}: {exc}", column=name) from None
            log.warning("%s: column %r: %s: stored NULL", where, name, exc)
            converted[name] = None
        except ConversionError as exc:
            raise ConversionError(f"column {name!r}: {exc}", column=name) from None
    return converted


# -- catalog types to families ----------------------------------------------------------

_MYSQL: dict[str, str] = {
    **dict.fromkeys(["tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"], "integer"),
    **dict.fromkeys(["decimal", "numeric", "fixed"], "decimal"),
    **dict.fromkeys(["float", "double", "real", "double precision"], "float"),
    **dict.fromkeys(["binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"], "binary"),
    **dict.fromkeys(["datetime", "timestamp"], "datetime"),
    "date": "date",
    "time": "time",
    "bit": "bit",
    "set": "set",
    "json": "json",
    "bool": "integer",
    "boolean": "integer",
}


def mysql_family(data_type: str, column_type: str = "") -> str:
    """The family of a MySQL/MariaDB column from information_schema.COLUMNS.

    ``data_type`` is DATA_TYPE (``bigint``), ``column_type`` COLUMN_TYPE (``bigint(20)
    unsigned``), used when DATA_TYPE is empty. TINYINT(1) stays ``integer`` (which takes
    true/false as 1/0). MariaDB reports JSON columns as ``longtext``: a caller that knows
    the column has a ``json_valid`` check should use ``json`` itself. Anything unknown
    (char, text, enum, uuid, inet6, geometry...) is ``text``.
    """
    base = (data_type or column_type.split("(", 1)[0]).strip().lower()
    return _MYSQL.get(base, "text")


_POSTGRES: dict[str, str] = {
    **dict.fromkeys(["date", "timestamp", "timestamptz"], "calendar"),
    "bytea": "binary",
    "json": "json",
    "jsonb": "json",
    "bool": "bool",
    "int2": "integer",
    "int4": "integer",
    "int8": "integer",
    "numeric": "decimal",
    "float4": "decimal",
    "float8": "decimal",
}


def postgres_converter(udt_name: str) -> Converter:
    """The converter for a PostgreSQL column (``postgres_family``), which also refuses text
    holding the NUL character: PostgreSQL cannot store it in any text value."""
    convert = column_converter(postgres_family(udt_name))

    def converter(value: Any) -> Any:
        converted = convert(value)
        if _holds_nul(converted):
            raise ConversionError("PostgreSQL cannot store the NUL character (0x00) in text: remove it from the source")
        return converted

    converter.__name__ = f"convert_postgres_{udt_name}"
    return converter


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def postgres_family(udt_name: str) -> str:
    """The family of a PostgreSQL column from its type name (information_schema.columns.udt_name).

    Arrays (``_int4``) are ``array``; floats travel as exact text like numerics, since
    PostgreSQL stores NaN and Infinity; dates and timestamps are ``calendar`` (text, a MySQL
    zero date NULL); times, intervals, uuids, enums and everything else are ``text``:
    PostgreSQL parses the ISO forms of the events itself.
    """
    name = udt_name.strip().lower()
    if name.startswith("_"):
        return "array"
    return _POSTGRES.get(name, "text")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
