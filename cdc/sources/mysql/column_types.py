"""A binlog table map's columns named and typed as MariaDB's catalog prints them (pure).

The type of each column is built from the table map alone (its type codes, their metadata
and ``binlog_row_metadata = FULL``'s optional metadata: names, signedness, character sets,
ENUM and SET values, geometry types), so that it is right for a table dropped or altered
since the event was written. It is the text of ``information_schema.columns.column_type``
(``varchar(20)``, ``decimal(10,2)``, ``int(10) unsigned``, ``enum('a','b')``,
``datetime(3)``, ``longtext`` for JSON), except where the binlog does not hold what that
text shows; there the form is canonical:

- integers carry the default display width of their type and sign (``tinyint(4)``,
  ``int(11)``, ``int(10) unsigned``, ``bigint(20)``): ``BOOLEAN`` is ``tinyint(4)``, and
  ``ZEROFILL`` or a declared width are not shown;
- ``FLOAT(M,D)`` and ``DOUBLE(M,D)`` are ``float`` and ``double``;
- MariaDB's ``INET4``, ``INET6`` and ``UUID`` are the ``binary(n)`` they are stored as.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE

from cdc.model import SourceColumn

_INTEGERS = {  # type code -> (name, display width signed, display width unsigned)
    FIELD_TYPE.TINY: ("tinyint", 4, 3),
    FIELD_TYPE.SHORT: ("smallint", 6, 5),
    FIELD_TYPE.INT24: ("mediumint", 9, 8),
    FIELD_TYPE.LONG: ("int", 11, 10),
    FIELD_TYPE.LONGLONG: ("bigint", 20, 20),
}
_FRACTIONAL = {  # type code -> name, with (fsp) when the table map gives fractional digits
    FIELD_TYPE.DATETIME2: "datetime",
    FIELD_TYPE.TIMESTAMP2: "timestamp",
    FIELD_TYPE.TIME2: "time",
}
_PLAIN = {
    FIELD_TYPE.DATE: "date",
    FIELD_TYPE.NEWDATE: "date",
    FIELD_TYPE.DATETIME: "datetime",
    FIELD_TYPE.TIMESTAMP: "timestamp",
    FIELD_TYPE.TIME: "time",
    FIELD_TYPE.YEAR: "year(4)",
    FIELD_TYPE.DECIMAL: "decimal",
    FIELD_TYPE.JSON: "json",  # MySQL's; MariaDB's JSON is a LONGTEXT
}
_BLOBS = {1: "tiny", 2: "", 3: "medium", 4: "long"}  # length bytes -> prefix of blob/text
_GEOMETRIES = (
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
)
# the most bytes a character takes, by character set (the rest: one)
_BYTES_PER_CHAR = {
    "utf8mb4": 4,
    "utf8mb3": 3,
    "utf8": 3,
    "ucs2": 2,
    "utf16": 4,
    "utf16le": 4,
    "utf32": 4,
    "big5": 2,
    "cp932": 2,
    "eucjpms": 3,
    "euckr": 2,
    "gb2312": 2,
    "gbk": 2,
    "sjis": 2,
    "ujis": 3,
}


@dataclass(frozen=True, slots=True)
class MapShape:
    """A table map's columns, in order, and the names of those that may hold NULL."""

    columns: tuple[SourceColumn, ...]
    nullable: frozenset[str]


def map_shape(event: Any) -> MapShape | None:
    """The columns of a ``TableMapEvent``; None when it names none (no ``binlog_row_metadata = FULL``)."""
    columns = event.columns
    if any(column.name is None for column in columns):
        return None
    geometries = iter(getattr(event.optional_metadata, "geometry_type_list", None) or ())
    typed = tuple(
        SourceColumn(
            column.name,
            column_type(column, next(geometries, 0) if column.type == FIELD_TYPE.GEOMETRY else 0),
        )
        for column in columns
    )
    mask = bytes(event.null_bitmask or b"")
    nullable = frozenset(
        column.name
        for index, column in enumerate(columns)
        if index // 8 < len(mask) and mask[index // 8] >> (index % 8) & 1
    )
    return MapShape(typed, nullable)


def column_type(column: Any, geometry: int = 0) -> str:
    """The type of one table map column (mysql-replication's ``Column``); ``geometry``: the
    column's geometry type code from the optional metadata."""
    code = column.type
    unsigned = " unsigned" if getattr(column, "unsigned", False) else ""
    if code in _INTEGERS:
        name, signed_width, unsigned_width = _INTEGERS[code]
        return f"{name}({unsigned_width if unsigned else signed_width}){unsigned}"
    if code == FIELD_TYPE.NEWDECIMAL:
        return f"decimal({column.precision},{column.decimals}){unsigned}"
    if code == FIELD_TYPE.FLOAT or code == FIELD_TYPE.DOUBLE:
        return ("float" if code == FIELD_TYPE.FLOAT else "double") + unsigned
    if code in _FRACTIONAL:
        fsp = getattr(column, "fsp", 0) or 0
        return f"{_FRACTIONAL[code]}({fsp})" if fsp else _FRACTIONAL[code]
    if code in _PLAIN:
        return _PLAIN[code]
    if code == FIELD_TYPE.BIT:
        return f"bit({column.bits})"
    if code in (FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING):
        binary = _is_binary(column)
        name = ("var" if code != FIELD_TYPE.STRING else "") + ("binary" if binary else "char")
        return f"{name}({column.max_length // (1 if binary else _bytes_per_char(column))})"
    if code == FIELD_TYPE.BLOB:
        return _BLOBS.get(column.length_size, "long") + ("blob" if _is_binary(column) else "text")
    if code == FIELD_TYPE.ENUM or code == FIELD_TYPE.SET:
        values = (column.enum_values or [""])[1:] if code == FIELD_TYPE.ENUM else column.set_values or []
        listed = ",".join("'" + value.replace("'", "''") + "'" for value in values)
        return f"{'enum' if code == FIELD_TYPE.ENUM else 'set'}({listed})"
    if code == FIELD_TYPE.GEOMETRY:
        return _GEOMETRIES[geometry] if 0 <= geometry < len(_GEOMETRIES) else "geometry"
    return f"unknown({code})"


def _is_binary(column: Any) -> bool:
    return getattr(column, "collation_name", None) == "binary"


def _bytes_per_char(column: Any) -> int:
    collation = getattr(column, "collation_name", None) or ""
    return _BYTES_PER_CHAR.get(collation.split("_", 1)[0], 1)
