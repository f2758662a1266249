"""The statements of the postgres target, composed once per table and set of columns.

psycopg reads every ``%`` of a statement that has parameters as the start of a placeholder,
inside quoted identifiers too. ``cdc.sql_names.identifier`` quotes an identifier for such a
statement (a column ``pct%`` as ``"pct%%"``); the staging table's statements have no
parameters and use ``sql.Identifier`` itself.

A value of a key is compared cast to its target column's type (``format_type(atttypid,
-1)``, from the catalog: no type modifier, which a cast would apply by truncating), so that
the server reads the value's text with that type's input function, as logical replication
does, rather than with the type the operator suggests (an anonymous record for a composite
column). Values written by INSERT need no cast: the server reads a parameter of unknown type
as the type of its column, and COPY as that of the staging table's column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from cdc.sql_names import identifier

# each column of a table: its name, its type as a cast names it, its type name for
# postgres_family (a domain's base type, as information_schema.columns.udt_name)
COLUMNS_SQL = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, -1), coalesce(base.typname, t.typname)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_type base ON base.oid = t.typbasetype AND t.typtype = 'd'
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
"""

Quote = Callable[..., sql.Composable]


def _param_safe(text: str) -> sql.SQL:
    return sql.SQL(text.replace("%", "%%"))


def _table(quote: Quote, qualified: str) -> sql.Composable:
    return quote(*qualified.split(".", 1))


@dataclass(frozen=True, slots=True)
class Merge:
    """How a run of upserts of one table and set of columns goes in set-based: COPY into a
    staging table with the target columns' types, then one INSERT ... SELECT ... ON CONFLICT
    (a set holds each key once)."""

    create: sql.Composed
    copy: sql.Composed
    merge: sql.Composed
    empty: sql.Composed
    key_positions: tuple[int, ...]


def truncate_statement(table: str) -> sql.Composed:
    return sql.SQL("TRUNCATE {}").format(_table(identifier, table))


def delete_statement(table: str, keys: Sequence[str], types: Mapping[str, str]) -> sql.Composed:
    """DELETE by the key columns ``keys``, each value cast to the column's type in ``types``
    (uncast for a column the target lacks: the server then names it)."""
    condition = sql.SQL(" AND ").join(
        sql.SQL("{} = %s{}").format(identifier(key), _param_safe(f"::{types[key]}") if key in types else sql.SQL(""))
        for key in keys
    )
    return sql.SQL("DELETE FROM {} WHERE {}").format(_table(identifier, table), condition)


def upsert_statement(table: str, columns: Sequence[str], keys: Sequence[str]) -> sql.Composed:
    """INSERT one row of ``columns`` (parameters), updating the row of the same ``keys``."""
    values = sql.SQL("VALUES ({})").format(sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    return _upsert(identifier, table, columns, keys, values)


def merge_statements(stage: str, table: str, columns: Sequence[str], keys: Sequence[str]) -> Merge:
    """The set-based form of ``upsert_statement``, through the temporary table ``stage``."""
    names = sql.SQL(", ").join(sql.Identifier(column) for column in columns)
    staged = sql.Identifier(stage)
    return Merge(
        create=sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
        ).format(staged, names, _table(sql.Identifier, table)),
        copy=sql.SQL("COPY {} ({}) FROM STDIN").format(staged, names),
        merge=_upsert(sql.Identifier, table, columns, keys, sql.SQL("SELECT {} FROM {}").format(names, staged)),
        empty=sql.SQL("TRUNCATE {}").format(staged),
        key_positions=tuple(columns.index(key) for key in keys),
    )


def _upsert(
    quote: Quote, table: str, columns: Sequence[str], keys: Sequence[str], rows: sql.Composable
) -> sql.Composed:
    updates = [sql.SQL("{0} = EXCLUDED.{0}").format(quote(column)) for column in columns if column not in keys]
    conflict = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(updates)) if updates else sql.SQL("DO NOTHING")
    return sql.SQL("INSERT INTO {} ({}) {} ON CONFLICT ({}) {}").format(
        _table(quote, table),
        sql.SQL(", ").join(quote(column) for column in columns),
        rows,
        sql.SQL(", ").join(quote(key) for key in keys),
        conflict,
    )
