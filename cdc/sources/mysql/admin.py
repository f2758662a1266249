"""Preflight checks for a MySQL/MariaDB source: what ``cdc check`` reports, and binlog facts for ``cdc status``.

``check`` returns every ``Problem`` that would stop (or soon stop) the binlog source, each
with the statement or my.cnf setting that fixes it, composed of: binlog settings, GTIDs and
the source's ``server_id`` (``server``), the privileges of the connected account
(``grants``), the captured tables and their primary keys (here), and whether the stored
position is still in the binlog (``retention``, which also holds ``purged`` and
``binlog_status``). SQL values are escaped by pymysql, identifiers are backtick-quoted
(``quote_identifier``). The names other modules import from here are re-exported.
"""

from __future__ import annotations

from dataclasses import replace

import pymysql

from cdc.config import SourceSettings
from cdc.sources.base import Problem
from cdc.sources.mysql.grants import Grant, check_privileges, check_writes, has_privilege, parse_grants
from cdc.sources.mysql.retention import (
    MIN_EXPIRY_SECONDS,
    SNAPSHOT_FIX,
    Retention,
    WarningProblem,
    binlog_status,
    check_retention,
    purged,
    retention,
)
from cdc.sources.mysql.server import (
    ACCESS_DENIED,
    SERVER_ID_FIX,
    Server,
    check_binlog,
    check_server_id,
    query,
    quote_identifier,
    server_info,
)

__all__ = [
    "MIN_EXPIRY_SECONDS",
    "SERVER_ID_FIX",
    "SNAPSHOT_FIX",
    "Grant",
    "Retention",
    "Server",
    "WarningProblem",
    "binlog_status",
    "check",
    "has_privilege",
    "parse_grants",
    "purged",
    "quote_identifier",
    "retention",
    "server_info",
]


def check(
    conn: pymysql.connections.Connection,
    settings: SourceSettings,
    acked_position: str | None = None,
    written: list[tuple[str, str]] | None = None,
) -> list[Problem]:
    """Everything that would stop the binlog source from streaming, or cdc from writing the
    ``written`` tables (synced entity members, repairs), with its fix."""
    server = server_info(conn)
    user, _, host = str(query(conn, "SELECT CURRENT_USER()")[0][0]).rpartition("@")
    account = f"{conn.escape(user)}@{conn.escape(host)}"
    problems = check_binlog(server)
    problems += check_server_id(conn, server, settings)
    grants = parse_grants(row[0] for row in query(conn, "SHOW GRANTS"))
    problems += check_privileges(server, grants, account)
    problems += _check_tables(conn, settings, grants, account)
    if written:
        problems += check_writes(written, grants, account)
    if acked_position and acked_position.strip():
        problems += check_retention(conn, server, settings, acked_position.strip())
    return [replace(p, what=" ".join(p.what.split()), fix=" ".join(p.fix.split())) for p in problems]


def _select_error(conn: pymysql.connections.Connection, table: str) -> int | None:
    """Whether SELECT really works (roles, column grants): None, else the error code."""
    try:
        query(conn, f"SELECT * FROM {table} LIMIT 0")
    except pymysql.MySQLError as exc:
        return int(exc.args[0]) if exc.args and isinstance(exc.args[0], int) else -1
    return None


def _check_tables(
    conn: pymysql.connections.Connection, settings: SourceSettings, grants: list[Grant], account: str
) -> list[Problem]:
    problems = []
    for db, table in settings.qualified_tables:
        name, quoted = f"{db}.{table}", f"{quote_identifier(db)}.{quote_identifier(table)}"
        if not has_privilege(grants, {"SELECT"}, db, table) and _select_error(conn, quoted) in ACCESS_DENIED:
            problems.append(
                Problem(f"account {account} cannot SELECT from {name}", f"GRANT SELECT ON {quoted} TO {account};")
            )
            continue  # information_schema hides what the account may not see
        rows = query(
            conn,
            "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (db, table),
        )
        if not rows:
            problems.append(
                Problem(
                    f"table {name} does not exist",
                    f"create it, or remove {name!r} from 'tables' of source {settings.name}",
                )
            )
            continue
        if rows[0][0] == "VIEW":
            problems.append(
                Problem(
                    f"{name} is a view: the binlog holds changes of tables only",
                    f"remove {name!r} from 'tables' of source {settings.name}",
                )
            )
            continue
        indexes = _unique_indexes(conn, db, table)
        if "PRIMARY" not in indexes:
            columns = next((cols for cols, not_null in indexes.values() if not_null), [])
            key = ", ".join(map(quote_identifier, columns)) if columns else "<key columns>"
            problems.append(
                Problem(
                    f"table {name} has no primary key: events and targets are keyed by it",
                    f"ALTER TABLE {quoted} ADD PRIMARY KEY ({key});",
                )
            )
    return problems


def _unique_indexes(conn: pymysql.connections.Connection, db: str, table: str) -> dict[str, tuple[list[str], bool]]:
    """Unique indexes (``PRIMARY`` is the primary key): their columns, and whether all are NOT NULL and whole.

    information_schema.STATISTICS, not TABLE_CONSTRAINTS: MariaDB hides constraints from
    an account that may only SELECT.
    """
    indexes: dict[str, tuple[list[str], bool]] = {}
    for index, column, nullable, sub_part in query(
        conn,
        "SELECT INDEX_NAME, COLUMN_NAME, NULLABLE, SUB_PART FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND NON_UNIQUE = 0"
        " ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
        (db, table),
    ):
        columns, whole = indexes.get(index, ([], True))
        indexes[index] = ([*columns, column], whole and nullable != "YES" and sub_part is None)
    return indexes
