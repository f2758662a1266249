"""The type a database target gives a column it adds for a source's schema change.

A schema change names each source column's type as its source prints it (PostgreSQL's
``format_type``: ``character varying(20)``, ``numeric(12,2)``, ``public.mood``,
``integer[]``; MySQL/MariaDB's ``COLUMN_TYPE``: ``varchar(20)``, ``decimal(10,2)``,
``int(11) unsigned``, ``enum('a','b')``). ``[[targets]] schema_changes = "add_columns"``
adds a column the target lacks with the type chosen here:

- PostgreSQL to PostgreSQL: the source's type itself when the target has it (the postgres
  target asks ``to_regtype``: built-in types, and the domains, enums and composite types
  the target defines too), else ``postgres_fallback`` (``text``, ``text[]`` for an array).
- MySQL/MariaDB to PostgreSQL: ``postgres_type_of_mysql``.
- PostgreSQL to MySQL/MariaDB: ``mysql_type_of_postgres``.
- MySQL/MariaDB to MySQL/MariaDB: the source's type itself (``mysql_type_of_mysql``),
  but MariaDB's own types on a MySQL server.

Every type chosen holds each value of the source type as the events carry it (see
``cdc.targets.convert``), so that rows land; a type this module does not know becomes text.
Nothing here does I/O.
"""

from __future__ import annotations

import re

POSTGRES_TEXT = "text"
MYSQL_TEXT = "longtext"

# a MySQL/MariaDB column type: a name, an optional list of sizes or quoted labels, attributes
_LABEL = r"'(?:[^'\\]|''|\\.)*'"
_MYSQL_TYPE = re.compile(
    rf"(?P<name>[a-z][a-z0-9_]*(?: (?!(?:un)?signed\b|zerofill\b)[a-z][a-z0-9_]*)?)"
    rf"(?:\s*\((?P<args>\d+(?:\s*,\s*\d+)?|{_LABEL}(?:\s*,\s*{_LABEL})*)\))?"
    r"(?P<attributes>(?:\s+(?:unsigned|signed|zerofill))*)",
    re.IGNORECASE,
)
_MYSQL_TO_POSTGRES = {
    **dict.fromkeys(["tinyint", "smallint", "year", "bool", "boolean"], "smallint"),
    **dict.fromkeys(["mediumint", "int", "integer"], "integer"),
    "bigint": "bigint",
    "float": "real",
    **dict.fromkeys(["double", "double precision", "real"], "double precision"),
    **dict.fromkeys(["tinytext", "text", "mediumtext", "longtext"], "text"),
    **dict.fromkeys(["binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"], "bytea"),
    "date": "date",
    "time": "interval",  # a TIME may be negative or longer than a day
    **dict.fromkeys(["enum", "set"], "text"),
    "json": "jsonb",
    "uuid": "uuid",
    **dict.fromkeys(["inet4", "inet6"], "inet"),
}
_UNSIGNED_TO_POSTGRES = {"smallint": "integer", "int": "bigint", "integer": "bigint", "bigint": "numeric(20,0)"}


def postgres_type_of_mysql(source_type: str) -> str:
    """The PostgreSQL type for a MySQL/MariaDB column type (``POSTGRES_TEXT`` when unknown)."""
    parsed = _MYSQL_TYPE.fullmatch(source_type.strip())
    if parsed is None:
        return POSTGRES_TEXT
    name, args = parsed["name"].lower(), _args(parsed["args"])
    if "unsigned" in parsed["attributes"].lower() and name in _UNSIGNED_TO_POSTGRES:
        return _UNSIGNED_TO_POSTGRES[name]
    if name in ("decimal", "numeric", "fixed"):
        return f"numeric({args})" if args else "numeric"
    if name in ("char", "varchar"):
        return f"character varying({args})" if args else "text"  # a CHAR's trailing spaces are not its value
    if name in ("datetime", "timestamp"):
        precision = f"({args})" if args else ""
        zone = "with" if name == "timestamp" else "without"  # a TIMESTAMP is an instant (UTC in events)
        return f"timestamp{precision} {zone} time zone"
    if name == "bit":
        return "numeric(20,0)" if args and int(args) > 63 else "bigint"  # BIT travels as a number
    if name == "set":
        return "text[]"  # a SET travels as a list
    return _MYSQL_TO_POSTGRES.get(name, POSTGRES_TEXT)


def postgres_fallback(source_type: str) -> str:
    """The type for a PostgreSQL source type the target does not have (an enum, domain or
    composite type defined only in the source): text, or an array of text."""
    return f"{POSTGRES_TEXT}[]" if source_type.strip().endswith("]") else POSTGRES_TEXT


# PostgreSQL's format_type names: "name", "name(args)", "name(args) with/without time zone", "name[]"
_POSTGRES_TYPE = re.compile(r'(?P<name>[a-z" ]+?)(?:\((?P<args>[\d, ]+)\))?(?P<zone> with(?:out)? time zone)?')
_POSTGRES_TO_MYSQL = {
    "smallint": "smallint",
    "integer": "int",
    "bigint": "bigint",
    "real": "float",
    "double precision": "double",
    "boolean": "tinyint(1)",
    "text": MYSQL_TEXT,
    '"char"': "char(1)",
    "name": "varchar(63)",
    "bytea": "longblob",
    "date": "date",
    "json": "json",
    "jsonb": "json",
    "uuid": "char(36)",
    **dict.fromkeys(["inet", "cidr"], "varchar(43)"),
    "macaddr": "char(17)",
    "macaddr8": "char(23)",
    "interval": "varchar(64)",  # its ISO-8601 duration
    "oid": "int unsigned",
}
_MYSQL_VARCHAR_MAX = 16383  # characters of utf8mb4 that fit a row
_MYSQL_DECIMAL_MAX = (65, 30)


def mysql_type_of_postgres(source_type: str) -> str:
    """The MySQL/MariaDB type for a PostgreSQL column type (``MYSQL_TEXT`` when unknown)."""
    text = source_type.strip()
    if text.endswith("]"):
        return "json"  # an array travels as a JSON list
    parsed = _POSTGRES_TYPE.fullmatch(text)
    if parsed is None:
        return MYSQL_TEXT
    name, args, zone = parsed["name"].strip(), _args(parsed["args"]), parsed["zone"]
    if name == "numeric":
        return _mysql_decimal(args)
    if name in ("character varying", "character"):
        length = int(args) if args else 0
        if not length or length > _MYSQL_VARCHAR_MAX:
            return MYSQL_TEXT
        return f"char({length})" if name == "character" and length <= 255 else f"varchar({length})"
    if name == "timestamp":
        return f"datetime({args or 6})"  # timestamptz in UTC: a MySQL TIMESTAMP ends in 2038
    if name == "time":
        return MYSQL_TEXT if zone == " with time zone" else f"time({args or 6})"
    if name == "bit":
        return f"bit({args or 1})" if int(args or 1) <= 64 else MYSQL_TEXT
    return _POSTGRES_TO_MYSQL.get(name, MYSQL_TEXT)


def _mysql_decimal(args: str) -> str:
    if not args:
        return "decimal({},{})".format(*_MYSQL_DECIMAL_MAX)
    precision, _, scale = args.partition(",")
    digits, places = int(precision), int(scale or 0)
    if digits > _MYSQL_DECIMAL_MAX[0] or not 0 <= places <= _MYSQL_DECIMAL_MAX[1]:
        return MYSQL_TEXT  # beyond a DECIMAL: its exact text
    return f"decimal({digits},{places})"


_MARIADB_ONLY = {"uuid": "char(36)", "inet4": "varchar(15)", "inet6": "varchar(39)"}


def mysql_type_of_mysql(source_type: str, target_is_mariadb: bool) -> str:
    """The source's own type, which a MySQL/MariaDB target reads as it is (``MYSQL_TEXT`` for
    text that is no column type); MariaDB's UUID and INET types as text on a MySQL server."""
    text = source_type.strip()
    parsed = _MYSQL_TYPE.fullmatch(text)
    if parsed is None:
        return MYSQL_TEXT
    if not target_is_mariadb and parsed["name"].lower() in _MARIADB_ONLY:
        return _MARIADB_ONLY[parsed["name"].lower()]
    return text


def _args(args: str | None) -> str:
    return "" if args is None else ",".join(part.strip() for part in args.split(","))
