"""Tables and columns whose names hold ``%``, ``%s``, a double quote or other scripts reach a
postgres target intact, change by change and set-based, from a PostgreSQL source."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tests.helpers import CdcSetup

NAMES = ["pct%", "pct%s", 'a"b', "Überblick_日本"]


def _table_sql(table: str) -> sql.Composed:
    """A table named ``table`` whose key is its own name and whose other columns are the other names."""
    others = [name for name in NAMES if name != table]
    columns = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(name)) for name in others)
    return sql.SQL("CREATE TABLE {} ({} integer PRIMARY KEY, {});").format(
        sql.Identifier("public", table), sql.Identifier(table), columns
    )


SCHEMA = sql.SQL("\n").join(_table_sql(table) for table in NAMES).as_string()


def _insert(table: str, first: int, last: int) -> str:
    others = [name for name in NAMES if name != table]
    values = sql.SQL(", ").join(sql.SQL("'%' || i || ' ' || {}").format(sql.Literal(name)) for name in others)
    return (
        sql.SQL("INSERT INTO {} SELECT i, {} FROM generate_series({}, {}) i")
        .format(sql.Identifier("public", table), values, sql.Literal(first), sql.Literal(last))
        .as_string()
    )


def _statement(template: str, table: str, column: str | None = None) -> str:
    """``template`` with {t} the table, {k} its key column and {c} another column."""
    return (
        sql.SQL(template)
        .format(
            t=sql.Identifier("public", table),
            k=sql.Identifier(table),
            c=sql.Identifier(column or next(name for name in NAMES if name != table)),
        )
        .as_string()
    )


def _dump(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as conn:
        return {
            table: [
                row[0]
                for row in conn.execute(
                    sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier("public", table))
                )
            ]
            for table in NAMES
        }


def test_names_with_percent_quotes_and_other_scripts_reach_a_postgres_target(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, [f"public.{table}" for table in NAMES])
    crm.setup()
    one_by_one = []  # each change alone: the tables take turns
    for number in range(1, 4):
        one_by_one += [_insert(table, number, number) for table in NAMES]
    for table in NAMES:
        one_by_one += [
            _statement("UPDATE {t} SET {c} = '%s changed' WHERE {k} = 1", table),
            _statement("UPDATE {t} SET {k} = 10 WHERE {k} = 2", table),
            _statement("DELETE FROM {t} WHERE {k} = 3", table),
        ]
    set_based = [_insert(table, 100, 150) for table in NAMES] + [
        _statement("UPDATE {t} SET {c} = {c} || ' %%' WHERE {k} >= 100", table) for table in NAMES
    ]
    with crm.source() as conn:
        for statement in one_by_one:
            conn.execute(statement)
        with conn.transaction():
            for statement in set_based:
                conn.execute(statement)
    crm.drain()
    assert _dump(crm.target_dsn) == _dump(crm.source_dsn)

    with crm.source() as conn:
        conn.execute(_statement("TRUNCATE {t}", "pct%s"))
        conn.execute(_insert("pct%s", 7, 7))
    crm.drain()
    target = _dump(crm.target_dsn)
    assert target == _dump(crm.source_dsn)
    assert len(target["pct%s"]) == 1 and len(target["pct%"]) == 53
