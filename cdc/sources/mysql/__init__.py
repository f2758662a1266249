"""The MySQL/MariaDB source: the row-based binlog (see ``cdc.sources`` for the interface).

``stream`` runs the binlog reader, ``translate`` turns its row events into row changes,
``positions`` reads and writes binlog positions, ``values`` converts column values, ``admin``
holds the preflight checks, ``snapshot`` the consistent read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pymysql

    from cdc.config import SourceSettings
    from cdc.sources.base import Problem, SnapshotReader, Source


def make_source(settings: SourceSettings) -> Source:
    from cdc.sources.mysql.stream import MysqlSource

    return MysqlSource(settings)


def make_snapshot_reader(settings: SourceSettings) -> SnapshotReader:
    from cdc.sources.mysql.snapshot import MysqlSnapshot

    return MysqlSnapshot(settings)


def control_connection(settings: SourceSettings) -> pymysql.connections.Connection:
    """A regular autocommit connection to the server (not the binlog stream)."""
    from cdc.sources.mysql.stream import MysqlSource

    return MysqlSource(settings).control_connection()


def server_status(settings: SourceSettings) -> dict[str, Any] | None:
    from cdc.sources.mysql import admin

    conn = control_connection(settings)
    try:
        return admin.binlog_status(conn)
    finally:
        conn.close()


def check(
    conn: pymysql.connections.Connection,
    settings: SourceSettings,
    stored_position: str | None,
    written_tables: list[tuple[str, str]],
) -> list[Problem]:
    from cdc.sources.mysql import admin

    return admin.check(conn, settings, stored_position, written_tables)


def setup(
    conn: pymysql.connections.Connection,
    settings: SourceSettings,
    state_dir: Path,
    print_sql: bool,
    say: Callable[[str], None],
) -> None:
    """A binlog has no slot: record where streaming starts, once, in the state store."""
    from cdc.sources.mysql.server import is_mariadb
    from cdc.sources.mysql.stream import MysqlSource
    from cdc.state.store import StateStore

    reader = MysqlSource(settings)
    reader.is_mariadb = is_mariadb(conn)
    current = reader.current_position(conn)
    store = StateStore(state_dir)
    try:
        stored = store.source_state(settings.name)
        if stored.acked or stored.complete_resume:
            say(f"[{settings.name}] nothing to do: streaming resumes at {stored.acked or stored.complete_resume}")
        else:
            store.set_acked(settings.name, current)
            say(f"[{settings.name}] streaming will start at the binlog position {current or '(empty binlog)'}")
    finally:
        store.close()


def binlog_backlog(files: list[dict[str, Any]], complete_txn: str) -> tuple[int, int]:
    """The bytes of the binlog files before the one holding ``complete_txn`` (what a purge may
    take before it reaches cdc's position), and the bytes written after that position."""
    from cdc.sources.mysql import positions

    number, offset = positions.txn_key_parts(complete_txn)
    numbers = [positions.binlog_file_number(f["name"]) for f in files]
    older = sum(f["size"] for f, n in zip(files, numbers) if n < number)
    newer = sum(f["size"] for f, n in zip(files, numbers) if n >= number)
    return older, max(0, newer - offset)
