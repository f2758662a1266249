"""Facts about the MySQL/MariaDB server a binlog source reads, and the checks of its setup.

``server_info`` says whether the server is MariaDB or MySQL, its version and the global
variables cdc cares about; ``check_binlog`` reports binlog settings a row-based reader
cannot live with (with the ``SET GLOBAL``/my.cnf line that fixes each), ``check_server_id``
a ``server_id`` that clashes with the server's or a replica's. The small SQL helpers the
other preflight modules share live here too: ``query``, ``first_working`` (statements that
differ between servers or need a privilege) and ``quote_identifier``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pymysql

from cdc.config import SourceSettings
from cdc.sources.base import Problem

SERVER_ID_FIX = "set server_id = <a number unique among the server's replicas> in the [[sources]] entry"
ACCESS_DENIED = {1044, 1045, 1142, 1143, 1227}
_SYNTAX_ERROR = 1064
_VARIABLES = (
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "server_id",
    "gtid_mode",
    "enforce_gtid_consistency",
    "binlog_expire_logs_seconds",
    "expire_logs_days",
)


@dataclass(frozen=True, slots=True)
class Server:
    """What kind of server we talk to, and its relevant global variables."""

    mariadb: bool
    version: tuple[int, int]
    variables: dict[str, str]


def quote_identifier(name: str) -> str:
    """A backtick-quoted identifier; a backtick inside the name is doubled."""
    return "`" + name.replace("`", "``") + "`"


def query(conn: pymysql.connections.Connection, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
    """All rows of one statement."""
    with conn.cursor() as cur:
        cur.execute(statement, args)
        return list(cur.fetchall())


def first_working(conn: pymysql.connections.Connection, *statements: str) -> list[tuple[Any, ...]] | None:
    """The rows of the first statement the server understands; None when the account may not run it."""
    for statement in statements:
        try:
            return query(conn, statement)
        except pymysql.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if code in ACCESS_DENIED:
                return None
            if code != _SYNTAX_ERROR or statement == statements[-1]:
                raise
    return None


def is_mariadb(conn: pymysql.connections.Connection) -> bool:
    """Whether the server is MariaDB (its GTIDs and binlog positions differ from MySQL's)."""
    return "mariadb" in str(query(conn, "SELECT VERSION()")[0][0]).lower()


def server_info(conn: pymysql.connections.Connection) -> Server:
    """MariaDB or MySQL, its version, and the global variables cdc cares about."""
    version = str(query(conn, "SELECT VERSION()")[0][0])
    numbers = re.match(r"(\d+)\.(\d+)", version)
    rows = query(conn, "SHOW GLOBAL VARIABLES WHERE Variable_name IN %s", (_VARIABLES,))
    return Server(
        "mariadb" in version.lower(),
        (int(numbers[1]), int(numbers[2])) if numbers else (0, 0),
        {str(name).lower(): str(value) for name, value in rows},
    )


def cnf(name: str, value: str | int) -> str:
    """The fix that sets a global variable now and in my.cnf."""
    literal = str(value) if isinstance(value, int) else "'" + value + "'"
    return f"SET GLOBAL {name} = {literal}; -- and in my.cnf [mysqld]: {name} = {value}"


def check_binlog(server: Server) -> list[Problem]:
    """Binlog settings that keep cdc from reading full row images (or from GTID positions)."""
    problems: list[Problem] = []
    variables = server.variables
    if variables.get("log_bin", "OFF").upper() not in ("ON", "1"):
        problems.append(
            Problem(
                "binary logging is off (log_bin = OFF): cdc reads changes from the binlog",
                "in my.cnf [mysqld]: log_bin = mysql-bin -- then restart the server",
            )
        )
    for name, wanted, why in (
        ("binlog_format", "ROW", "row events"),
        ("binlog_row_image", "FULL", "full before and after images"),
        ("binlog_row_metadata", "FULL", "column names and primary keys in the binlog"),
    ):
        value = variables.get(name)
        if value is None:
            problems.append(
                Problem(
                    f"the server has no {name} setting (needs MariaDB 10.5+ or MySQL 8.0.1+); cdc needs {why}",
                    f"upgrade the server, then in my.cnf [mysqld]: {name} = {wanted}",
                )
            )
        elif value.upper() != wanted:
            problems.append(Problem(f"{name} is {value}, cdc needs {wanted} ({why})", cnf(name, wanted)))
    if not server.mariadb and variables.get("gtid_mode", "OFF").upper() != "ON":
        problems.append(
            Problem(
                f"gtid_mode is {variables.get('gtid_mode', 'OFF')}: cdc falls back to file:pos positions,"
                " which do not survive a failover to a replica",
                "in my.cnf [mysqld]: gtid_mode = ON and enforce_gtid_consistency = ON -- then restart the server",
            )
        )
    return problems


def check_server_id(conn: pymysql.connections.Connection, server: Server, settings: SourceSettings) -> list[Problem]:
    """A missing ``server_id``, or one the server or one of its replicas already uses."""
    wanted = settings.server_id
    if wanted is None:
        return [
            Problem(f"source {settings.name} has no server_id: a binlog reader needs one of its own", SERVER_ID_FIX)
        ]
    own = int(server.variables.get("server_id", "0"))
    statements = ("SHOW SLAVE HOSTS",) if server.mariadb else ("SHOW REPLICAS", "SHOW SLAVE HOSTS")
    replicas = first_working(conn, *statements) or []  # MariaDB wants REPLICATION MASTER ADMIN: skip then
    used = sorted({own, *(int(row[0]) for row in replicas)})
    fix = f"{SERVER_ID_FIX} (not {', '.join(map(str, used))})"
    problems = []
    if wanted == own:
        problems.append(Problem(f"server_id {wanted} of source {settings.name} is the server's own server_id", fix))
    for replica_id, replica_host, replica_port, *_ in replicas:
        if int(replica_id) == wanted:
            problems.append(
                Problem(
                    f"server_id {wanted} of source {settings.name} is already used by the replica"
                    f" at {replica_host or '?'}:{replica_port}",
                    fix,
                )
            )
    return problems
