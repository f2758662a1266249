"""Preflight checks for a MySQL/MariaDB source: what ``cdc check`` reports, and binlog facts for ``cdc status``.

``check`` returns every ``Problem`` that would stop (or soon stop) the binlog source, each
with the statement or my.cnf setting that fixes it: binlog settings, GTIDs, the source's
``server_id``, the privileges of the connected account (parsed from ``SHOW GRANTS``), the
captured tables and their primary keys, and whether the stored position is still in the
binlog. ``purged`` answers the last question alone (the source fails fatally on it), and
``binlog_status`` describes the binlog for ``cdc status``. SQL values are escaped by pymysql,
identifiers are backtick-quoted (``quote_identifier``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import pymysql

from cdc.config import SourceSettings
from cdc.model import SYNC_POSITION_TABLE
from cdc.sources import mysql_positions as positions
from cdc.sources.base import Problem

SERVER_ID_FIX = "set server_id = <a number unique among the server's replicas> in the [[sources]] entry"
SNAPSHOT_FIX = "cdc snapshot -- the changes after the stored position are gone: load the tables again"
MIN_EXPIRY_SECONDS = 7 * 86400
_ACCESS_DENIED = {1044, 1045, 1142, 1143, 1227}
_SYNTAX_ERROR = 1064
_REPLICATION_CLIENT = {"REPLICATION CLIENT", "BINLOG MONITOR"}  # MariaDB 10.5 renamed it
_ALIASES = {"ALL": "ALL PRIVILEGES", "REPLICATION REPLICA": "REPLICATION SLAVE"}
_VARIABLES = ("log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata", "server_id", "gtid_mode",
              "enforce_gtid_consistency", "binlog_expire_logs_seconds", "expire_logs_days")
_IDENT = r"(?:\*|`(?:[^`]|``)*`|[\w$]+)"
_OBJECT = re.compile(rf"^(?:(?P<routine>FUNCTION|PROCEDURE|PACKAGE(?:\s+BODY)?)\s+|TABLE\s+)?"
                     rf"(?P<db>{_IDENT})(?:\.(?P<table>{_IDENT}))?\s+TO\s", re.I)


def WarningProblem(what: str, fix: str) -> Problem:  # noqa: N802 - reads like the class it makes
    """A problem that does not stop cdc yet (the stored position is close to being purged)."""
    return Problem(what, fix, severity="warning")


@dataclass(frozen=True, slots=True)
class Server:
    """What kind of server we talk to, and its relevant global variables."""

    mariadb: bool
    version: tuple[int, int]
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``GRANT privs ON db.table`` line; ``None`` stands for ``*``."""

    privileges: frozenset[str]
    db: str | None
    table: str | None


@dataclass(frozen=True, slots=True)
class Retention:
    """Where a stored position stands against the binlog files the server still has."""

    state: Literal["ok", "close", "purged", "unknown"]
    oldest_file: str | None = None
    oldest_start: str = ""  # the GTID state written before the oldest retained binlog ("" for file:pos)


def quote_identifier(name: str) -> str:
    """A backtick-quoted identifier; a backtick inside the name is doubled."""
    return "`" + name.replace("`", "``") + "`"


def _query(conn: pymysql.connections.Connection, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement, args)
        return list(cur.fetchall())


def _first_working(conn: pymysql.connections.Connection, *statements: str) -> list[tuple[Any, ...]] | None:
    """The rows of the first statement the server understands; None when the account may not run it."""
    for statement in statements:
        try:
            return _query(conn, statement)
        except pymysql.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if code in _ACCESS_DENIED:
                return None
            if code != _SYNTAX_ERROR or statement == statements[-1]:
                raise
    return None


def server_info(conn: pymysql.connections.Connection) -> Server:
    """MariaDB or MySQL, its version, and the global variables cdc cares about."""
    version = str(_query(conn, "SELECT VERSION()")[0][0])
    numbers = re.match(r"(\d+)\.(\d+)", version)
    rows = _query(conn, "SHOW GLOBAL VARIABLES WHERE Variable_name IN %s", (_VARIABLES,))
    return Server("mariadb" in version.lower(), (int(numbers[1]), int(numbers[2])) if numbers else (0, 0),
                  {str(name).lower(): str(value) for name, value in rows})


def check(conn: pymysql.connections.Connection, settings: SourceSettings,
          acked_position: str | None = None, written: list[tuple[str, str]] | None = None) -> list[Problem]:
    """Everything that would stop the binlog source from streaming, or cdc from writing the
    ``written`` tables (synced entity members, repairs), with its fix."""
    server = server_info(conn)
    user, _, host = str(_query(conn, "SELECT CURRENT_USER()")[0][0]).rpartition("@")
    account = f"{conn.escape(user)}@{conn.escape(host)}"
    problems = _check_binlog(server)
    problems += _check_server_id(conn, server, settings)
    grants = parse_grants(row[0] for row in _query(conn, "SHOW GRANTS"))
    problems += _check_privileges(server, grants, account)
    problems += _check_tables(conn, settings, grants, account)
    if written:
        problems += _check_writes(written, grants, account)
    if acked_position and acked_position.strip():
        problems += _check_retention(conn, server, settings, acked_position.strip())
    return [replace(p, what=" ".join(p.what.split()), fix=" ".join(p.fix.split())) for p in problems]


def _cnf(name: str, value: str | int) -> str:
    literal = str(value) if isinstance(value, int) else "'" + value + "'"
    return f"SET GLOBAL {name} = {literal}; -- and in my.cnf [mysqld]: {name} = {value}"


def _check_binlog(server: Server) -> list[Problem]:
    problems: list[Problem] = []
    variables = server.variables
    if variables.get("log_bin", "OFF").upper() not in ("ON", "1"):
        problems.append(Problem("binary logging is off (log_bin = OFF): cdc reads changes from the binlog",
                                "in my.cnf [mysqld]: log_bin = mysql-bin -- then restart the server"))
    for name, wanted, why in (("binlog_format", "ROW", "row events"),
                              ("binlog_row_image", "FULL", "full before and after images"),
                              ("binlog_row_metadata", "FULL", "column names and primary keys in the binlog")):
        value = variables.get(name)
        if value is None:
            problems.append(Problem(
                f"the server has no {name} setting (needs MariaDB 10.5+ or MySQL 8.0.1+); cdc needs {why}",
                f"upgrade the server, then in my.cnf [mysqld]: {name} = {wanted}"))
        elif value.upper() != wanted:
            problems.append(Problem(f"{name} is {value}, cdc needs {wanted} ({why})", _cnf(name, wanted)))
    if not server.mariadb and variables.get("gtid_mode", "OFF").upper() != "ON":
        problems.append(Problem(
            f"gtid_mode is {variables.get('gtid_mode', 'OFF')}: cdc falls back to file:pos positions,"
            " which do not survive a failover to a replica",
            "in my.cnf [mysqld]: gtid_mode = ON and enforce_gtid_consistency = ON -- then restart the server"))
    return problems


def _check_server_id(conn: pymysql.connections.Connection, server: Server,
                     settings: SourceSettings) -> list[Problem]:
    wanted = settings.server_id
    if wanted is None:
        return [Problem(f"source {settings.name} has no server_id: a binlog reader needs one of its own",
                        SERVER_ID_FIX)]
    own = int(server.variables.get("server_id", "0"))
    statements = ("SHOW SLAVE HOSTS",) if server.mariadb else ("SHOW REPLICAS", "SHOW SLAVE HOSTS")
    replicas = _first_working(conn, *statements) or []  # MariaDB wants REPLICATION MASTER ADMIN: skip then
    used = sorted({own, *(int(row[0]) for row in replicas)})
    fix = f"{SERVER_ID_FIX} (not {', '.join(map(str, used))})"
    problems = []
    if wanted == own:
        problems.append(Problem(f"server_id {wanted} of source {settings.name} is the server's own server_id", fix))
    for replica_id, replica_host, replica_port, *_ in replicas:
        if int(replica_id) == wanted:
            problems.append(Problem(f"server_id {wanted} of source {settings.name} is already used by the replica"
                                    f" at {replica_host or '?'}:{replica_port}", fix))
    return problems


# -- privileges ----------------------------------------------------------------------------

def _unquote(identifier: str) -> str | None:
    if identifier == "*":
        return None
    return identifier[1:-1].replace("``", "`") if identifier.startswith("`") else identifier


def _split_on(text: str) -> tuple[str, str] | None:
    """``privs`` and the rest after the top-level `` ON `` of a GRANT's body."""
    depth, quoted = 0, False
    for i, char in enumerate(text):
        if char == "`":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and text[i:i + 4].upper() == " ON ":
            return text[:i], text[i + 4:].lstrip()
    return None


def _privileges(text: str) -> frozenset[str]:
    """Privilege names of a GRANT; column privileges (``SELECT (`a`)``) are left out."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    names = {" ".join(part.split()).upper() for part in [*parts, current] if "(" not in part}
    return frozenset(_ALIASES.get(name, name) for name in names if name)


def parse_grants(lines: Any) -> list[Grant]:
    """The privilege grants among ``SHOW GRANTS`` lines (role grants and routine grants are skipped)."""
    grants = []
    for line in lines:
        body = str(line).strip()
        if not body.upper().startswith("GRANT "):
            continue
        split = _split_on(body[6:])
        match = _OBJECT.match(split[1]) if split else None
        if split is None or match is None or match["routine"] or "PROXY" in _privileges(split[0]):
            continue
        grants.append(Grant(_privileges(split[0]), _unquote(match["db"]),
                            _unquote(match["table"]) if match["table"] else None))
    return grants


def _like(pattern: str, name: str) -> bool:
    """Whether a database-level grant's name (with ``%``, ``_`` and ``\\`` escapes) covers ``name``."""
    regex = "".join(".*" if part == "%" else "." if part == "_" else re.escape(part[-1])
                    for part in re.findall(r"\\.|.", pattern, re.S))
    return re.fullmatch(regex, name, re.S) is not None


def has_privilege(grants: list[Grant], wanted: set[str], db: str | None = None, table: str | None = None) -> bool:
    """Whether one of ``wanted`` is granted globally, on ``db``, or on ``db.table``."""
    for grant in grants:
        if not (grant.privileges & (wanted | {"ALL PRIVILEGES"})):
            continue
        if grant.db is None:
            return True
        if db is not None and grant.table is None and _like(grant.db, db):
            return True
        if db is not None and grant.db == db and grant.table == table:
            return True
    return False


def _check_privileges(server: Server, grants: list[Grant], account: str) -> list[Problem]:
    missing = []
    if not has_privilege(grants, {"REPLICATION SLAVE"}):
        missing.append("REPLICATION SLAVE")
    if not has_privilege(grants, _REPLICATION_CLIENT):
        missing.append("BINLOG MONITOR" if server.mariadb and server.version >= (10, 5) else "REPLICATION CLIENT")
    if not missing:
        return []
    return [Problem(f"account {account} lacks {' and '.join(missing)} (needed to read the binlog and its position)",
                    f"GRANT {', '.join(missing)} ON *.* TO {account};")]


def _check_writes(written: list[tuple[str, str]], grants: list[Grant], account: str) -> list[Problem]:
    problems = []
    wanted = ("INSERT", "UPDATE", "DELETE")
    for db, table in written:
        missing = [p for p in wanted if not has_privilege(grants, {p}, db, table)]
        if missing:
            quoted = f"{quote_identifier(db)}.{quote_identifier(table)}"
            problems.append(Problem(f"account {account} cannot {', '.join(missing)} {db}.{table}, which cdc keeps"
                                    " in sync", f"GRANT {', '.join(missing)} ON {quoted} TO {account};"))
    positions_db = SYNC_POSITION_TABLE.split(".", 1)[0]
    missing = [p for p in ("CREATE", "SELECT", *wanted[:2]) if not has_privilege(grants, {p}, positions_db)]
    if missing:
        problems.append(Problem(f"account {account} cannot {', '.join(missing)} in database {positions_db}, where"
                                " cdc marks its own writes", f"GRANT {', '.join(missing)} ON"
                                f" {quote_identifier(positions_db)}.* TO {account};"))
    return problems


# -- tables --------------------------------------------------------------------------------

def _select_error(conn: pymysql.connections.Connection, table: str) -> int | None:
    """Whether SELECT really works (roles, column grants): None, else the error code."""
    try:
        _query(conn, f"SELECT * FROM {table} LIMIT 0")
    except pymysql.MySQLError as exc:
        return int(exc.args[0]) if exc.args and isinstance(exc.args[0], int) else -1
    return None


def _check_tables(conn: pymysql.connections.Connection, settings: SourceSettings, grants: list[Grant],
                  account: str) -> list[Problem]:
    problems = []
    for db, table in settings.qualified_tables:
        name, quoted = f"{db}.{table}", f"{quote_identifier(db)}.{quote_identifier(table)}"
        if not has_privilege(grants, {"SELECT"}, db, table) and _select_error(conn, quoted) in _ACCESS_DENIED:
            problems.append(Problem(f"account {account} cannot SELECT from {name}",
                                    f"GRANT SELECT ON {quoted} TO {account};"))
            continue  # information_schema hides what the account may not see
        rows = _query(conn, "SELECT TABLE_TYPE FROM information_schema.TABLES"
                            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (db, table))
        if not rows:
            problems.append(Problem(f"table {name} does not exist",
                                    f"create it, or remove {name!r} from 'tables' of source {settings.name}"))
            continue
        if rows[0][0] == "VIEW":
            problems.append(Problem(f"{name} is a view: the binlog holds changes of tables only",
                                    f"remove {name!r} from 'tables' of source {settings.name}"))
            continue
        indexes = _unique_indexes(conn, db, table)
        if "PRIMARY" not in indexes:
            columns = next((cols for cols, not_null in indexes.values() if not_null), [])
            key = ", ".join(map(quote_identifier, columns)) if columns else "<key columns>"
            problems.append(Problem(f"table {name} has no primary key: events and targets are keyed by it",
                                    f"ALTER TABLE {quoted} ADD PRIMARY KEY ({key});"))
    return problems


def _unique_indexes(conn: pymysql.connections.Connection, db: str,
                    table: str) -> dict[str, tuple[list[str], bool]]:
    """Unique indexes (``PRIMARY`` is the primary key): their columns, and whether all are NOT NULL and whole.

    information_schema.STATISTICS, not TABLE_CONSTRAINTS: MariaDB hides constraints from
    an account that may only SELECT.
    """
    indexes: dict[str, tuple[list[str], bool]] = {}
    for index, column, nullable, sub_part in _query(
            conn, "SELECT INDEX_NAME, COLUMN_NAME, NULLABLE, SUB_PART FROM information_schema.STATISTICS"
                  " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND NON_UNIQUE = 0"
                  " ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX", (db, table)):
        columns, whole = indexes.get(index, ([], True))
        indexes[index] = ([*columns, column], whole and nullable != "YES" and sub_part is None)
    return indexes


# -- binlog retention ----------------------------------------------------------------------

def _binlog_files(conn: pymysql.connections.Connection) -> list[tuple[str, int]] | None:
    try:
        rows = _first_working(conn, "SHOW BINARY LOGS")
    except pymysql.MySQLError:  # binary logging is off
        return None
    return [(str(row[0]), int(row[1])) for row in rows] if rows else None


def _mariadb_behind(seen: dict[int, int], state: str) -> bool:
    """Whether a binlog GTID state holds a transaction the position has not seen (in any domain)."""
    return any(int(gtid.rsplit("-", 1)[1]) > seen.get(domain, 0)
               for domain, gtid in positions.mariadb_gtids(state).items())


def _mysql_previous_gtids(conn: pymysql.connections.Connection, file: str) -> str:
    """The GTID set written before ``file``: its Previous_gtids event."""
    for row in _query(conn, f"SHOW BINLOG EVENTS IN {conn.escape(file)} LIMIT 3"):
        if str(row[2]) == "Previous_gtids":
            return str(row[5])
    return ""


def retention(conn: pymysql.connections.Connection, acked_position: str, server: Server | None = None) -> Retention:
    """Whether the binlog still holds everything after ``acked_position``.

    ``close``: what comes after the position starts in the oldest binlog file, which is no
    longer the one being written, so the next purge or expiry removes it. ``unknown``: no
    binlog, no privilege to list it, or a position of another kind of server.
    """
    server = server or server_info(conn)
    files = _binlog_files(conn)
    position = acked_position.strip()
    if not files or not position:
        return Retention("unknown")
    oldest_two = [name for name, _ in files[:2]]
    kind = positions.kind_of(position)
    # starts[i]: what was written before file i; behind[i]: the position has not seen all of it
    if kind == "file_pos":
        number = positions.binlog_file_number(positions.parse_file_pos(position).file)
        starts = ["" for _ in oldest_two]
        behind = [number < positions.binlog_file_number(name) for name in oldest_two]
    elif kind == "mariadb_gtid" and server.mariadb:
        seen = {domain: int(gtid.rsplit("-", 1)[1]) for domain, gtid in positions.mariadb_gtids(position).items()}
        starts = [str(_query(conn, "SELECT BINLOG_GTID_POS(%s, 4)", (name,))[0][0] or "") for name in oldest_two]
        behind = [_mariadb_behind(seen, start) for start in starts]
    elif kind == "mysql_gtid" and not server.mariadb:
        starts = [_mysql_previous_gtids(conn, name) for name in oldest_two]
        behind = [not _query(conn, "SELECT GTID_SUBSET(%s, %s)", (start, position))[0][0] for start in starts]
    else:
        return Retention("unknown", oldest_two[0])
    if behind[0]:
        return Retention("purged", oldest_two[0], starts[0])
    return Retention("close" if behind[1:] == [True] else "ok", oldest_two[0], starts[0])


def purged(conn: pymysql.connections.Connection, acked_position: str) -> bool:
    """Whether changes after ``acked_position`` have been purged from the binlog (resuming would lose them)."""
    return bool(acked_position and acked_position.strip()) and retention(conn, acked_position).state == "purged"


def _expiry_seconds(server: Server) -> float:
    variables = server.variables
    seconds = float(variables.get("binlog_expire_logs_seconds") or 0)
    return seconds or float(variables.get("expire_logs_days") or 0) * 86400


def _check_retention(conn: pymysql.connections.Connection, server: Server, settings: SourceSettings,
                     acked: str) -> list[Problem]:
    where = f"the stored position {acked} of source {settings.name}"
    kind = positions.kind_of(acked)
    if kind != "file_pos" and (kind == "mariadb_gtid") != server.mariadb:
        return [Problem(f"{where} is a {kind.replace('_', ' ')} position, but the server is "
                        f"{'MariaDB' if server.mariadb else 'MySQL'}", SNAPSHOT_FIX)]
    result = retention(conn, acked, server)
    oldest = f"the oldest binlog is {result.oldest_file}" + (result.oldest_start and f", after {result.oldest_start}")
    if result.state == "purged":
        return [Problem(f"{where} has been purged from the binlog ({oldest}): changes after it were lost",
                        SNAPSHOT_FIX)]
    expiry = _expiry_seconds(server)
    if result.state != "close" or not expiry:  # nothing expires by itself
        return []
    longer = int(max(2 * expiry, MIN_EXPIRY_SECONDS))
    if "binlog_expire_logs_seconds" in server.variables:
        fix = _cnf("binlog_expire_logs_seconds", longer)
    else:
        fix = _cnf("expire_logs_days", -(-longer // 86400))
    return [WarningProblem(f"{where} is close to being purged: the changes after it start in"
                           f" {result.oldest_file}, the oldest binlog, which expires after {int(expiry)}s", fix)]


# -- status --------------------------------------------------------------------------------

def binlog_status(conn: pymysql.connections.Connection) -> dict[str, Any]:
    """The binlog's current end, GTID position and files, for ``cdc status``."""
    server = server_info(conn)
    rows = _first_working(conn, "SHOW MASTER STATUS", "SHOW BINARY LOG STATUS")
    gtid = "@@global.gtid_binlog_pos" if server.mariadb else "@@global.gtid_executed"
    files = _binlog_files(conn) or []
    return {
        "server": "mariadb" if server.mariadb else "mysql",
        "file": str(rows[0][0]) if rows else None,
        "position": int(rows[0][1]) if rows else None,
        "gtid_position": str(_query(conn, f"SELECT {gtid}")[0][0] or "").replace("\n", ""),
        "binlog_files": [{"name": name, "size": size} for name, size in files],
        "binlog_bytes": sum(size for _, size in files),
    }
