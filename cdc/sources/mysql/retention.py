"""Whether the binlog still holds what comes after a stored position, and the binlog's state.

``retention`` compares a position (MariaDB GTID list, MySQL GTID set or file:pos) with the
oldest binlog files the server keeps: ``purged`` means changes after it are gone (the
source then fails fatally, see ``purged``), ``close`` that the next purge or expiry takes
them. ``check_retention`` turns that into the problem ``cdc check`` reports, with a longer
expiry as the fix; ``binlog_status`` describes the binlog for ``cdc status``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pymysql

from cdc.config import SourceSettings
from cdc.sources.base import Problem
from cdc.sources.mysql import positions
from cdc.sources.mysql.server import Server, cnf, first_working, query, server_info

SNAPSHOT_FIX = "cdc snapshot -- the changes after the stored position are gone: load the tables again"
MIN_EXPIRY_SECONDS = 7 * 86400


def WarningProblem(what: str, fix: str) -> Problem:  # noqa: N802 - reads like the class it makes
    """A problem that does not stop cdc yet (the stored position is close to being purged)."""
    return Problem(what, fix, severity="warning")


@dataclass(frozen=True, slots=True)
class Retention:
    """Where a stored position stands against the binlog files the server still has."""

    state: Literal["ok", "close", "purged", "unknown"]
    oldest_file: str | None = None
    oldest_start: str = ""  # the GTID state written before the oldest retained binlog ("" for file:pos)


def _binlog_files(conn: pymysql.connections.Connection) -> list[tuple[str, int]] | None:
    try:
        rows = first_working(conn, "SHOW BINARY LOGS")
    except pymysql.MySQLError:  # binary logging is off
        return None
    return [(str(row[0]), int(row[1])) for row in rows] if rows else None


def _mariadb_behind(seen: dict[int, int], state: str) -> bool:
    """Whether a binlog GTID state holds a transaction the position has not seen (in any domain)."""
    return any(
        int(gtid.rsplit("-", 1)[1]) > seen.get(domain, 0) for domain, gtid in positions.mariadb_gtids(state).items()
    )


def _mysql_previous_gtids(conn: pymysql.connections.Connection, file: str) -> str:
    """The GTID set written before ``file``: its Previous_gtids event."""
    for row in query(conn, f"SHOW BINLOG EVENTS IN {conn.escape(file)} LIMIT 3"):
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
        starts = [str(query(conn, "SELECT BINLOG_GTID_POS(%s, 4)", (name,))[0][0] or "") for name in oldest_two]
        behind = [_mariadb_behind(seen, start) for start in starts]
    elif kind == "mysql_gtid" and not server.mariadb:
        starts = [_mysql_previous_gtids(conn, name) for name in oldest_two]
        behind = [not query(conn, "SELECT GTID_SUBSET(%s, %s)", (start, position))[0][0] for start in starts]
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


def check_retention(
    conn: pymysql.connections.Connection, server: Server, settings: SourceSettings, acked: str
) -> list[Problem]:
    """A stored position of the wrong kind of server, purged, or about to expire from the binlog."""
    where = f"the stored position {acked} of source {settings.name}"
    kind = positions.kind_of(acked)
    if kind != "file_pos" and (kind == "mariadb_gtid") != server.mariadb:
        return [
            Problem(
                f"{where} is a {kind.replace('_', ' ')} position, but the server is "
                f"{'MariaDB' if server.mariadb else 'MySQL'}",
                SNAPSHOT_FIX,
            )
        ]
    result = retention(conn, acked, server)
    oldest = f"the oldest binlog is {result.oldest_file}" + (result.oldest_start and f", after {result.oldest_start}")
    if result.state == "purged":
        return [
            Problem(f"{where} has been purged from the binlog ({oldest}): changes after it were lost", SNAPSHOT_FIX)
        ]
    expiry = _expiry_seconds(server)
    if result.state != "close" or not expiry:  # nothing expires by itself
        return []
    longer = int(max(2 * expiry, MIN_EXPIRY_SECONDS))
    if "binlog_expire_logs_seconds" in server.variables:
        fix = cnf("binlog_expire_logs_seconds", longer)
    else:
        fix = cnf("expire_logs_days", -(-longer // 86400))
    return [
        WarningProblem(
            f"{where} is close to being purged: the changes after it start in"
            f" {result.oldest_file}, the oldest binlog, which expires after {int(expiry)}s",
            fix,
        )
    ]


def binlog_status(conn: pymysql.connections.Connection) -> dict[str, Any]:
    """The binlog's current end, GTID position and files, for ``cdc status``."""
    server = server_info(conn)
    rows = first_working(conn, "SHOW MASTER STATUS", "SHOW BINARY LOG STATUS")
    gtid = "@@global.gtid_binlog_pos" if server.mariadb else "@@global.gtid_executed"
    files = _binlog_files(conn) or []
    return {
        "server": "mariadb" if server.mariadb else "mysql",
        "file": str(rows[0][0]) if rows else None,
        "position": int(rows[0][1]) if rows else None,
        "gtid_position": str(query(conn, f"SELECT {gtid}")[0][0] or "").replace("\n", ""),
        "binlog_files": [{"name": name, "size": size} for name, size in files],
        "binlog_bytes": sum(size for _, size in files),
    }
