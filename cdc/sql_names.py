"""Identifiers in PostgreSQL queries that also take parameters.

psycopg reads every ``%`` of a query run with parameters as a placeholder, quoted names
included, so a table ``"pct%s"`` would take a parameter's place. ``identifier`` quotes a
name as ``sql.Identifier`` does and doubles its ``%``: use it only in a query executed with
parameters (a list, even an empty one), where psycopg turns ``%%`` back into ``%``.
"""

from __future__ import annotations

from psycopg import sql


def identifier(*names: str) -> sql.Composable:
    """The (qualified) quoted name, safe in a query executed with parameters."""
    quoted = sql.Identifier(*names)
    if not any("%" in name for name in names):
        return quoted
    return sql.SQL(quoted.as_string(None).replace("%", "%%"))
