"""The PostgreSQL source: logical replication with pgoutput (see ``cdc.sources`` for the interface).

``stream`` runs the replication connection, ``translate`` turns decoded pgoutput messages into
row changes, ``pgoutput`` and ``protocol`` decode the wire format, ``values`` reads column
values, ``admin`` holds the preflight and setup statements, ``snapshot`` the consistent read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from cdc.config import SourceSettings
    from cdc.sources.base import Problem, SnapshotReader, Source


def make_source(settings: SourceSettings) -> Source:
    from cdc.sources.postgres.stream import PostgresSource

    return PostgresSource(settings)


def make_snapshot_reader(settings: SourceSettings) -> SnapshotReader:
    from cdc.sources.postgres.snapshot import PostgresSnapshot

    return PostgresSnapshot(settings)


def control_connection(settings: SourceSettings, connect_timeout: int | None = None) -> psycopg.Connection[Any]:
    """A regular (not replication) autocommit connection to the source's database."""
    import psycopg

    from cdc.dsn import connect_kwargs
    from cdc.errors import DsnError, SourceError
    from cdc.logs import one_line

    options = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    try:
        return psycopg.connect(**connect_kwargs(settings.dsn, settings.password, **options), autocommit=True)
    except DsnError as exc:
        raise DsnError(f"source {settings.name}: {exc}") from None
    except psycopg.OperationalError as exc:
        raise SourceError(f"cannot connect: {one_line(exc)}") from None


def server_status(settings: SourceSettings) -> dict[str, Any] | None:
    from cdc.sources.postgres import admin

    with control_connection(settings, connect_timeout=5) as conn:
        return admin.slot_status(conn, settings)


def check(
    conn: psycopg.Connection[Any],
    settings: SourceSettings,
    stored_position: str | None,
    written_tables: list[tuple[str, str]],
) -> list[Problem]:
    from cdc.sources.postgres import admin

    return admin.check(conn, settings, written_tables)


def setup(
    conn: psycopg.Connection[Any],
    settings: SourceSettings,
    state_dir: Path,
    print_sql: bool,
    say: Callable[[str], None],
) -> None:
    """Create the publication and the slot (``cdc setup``), or only print the statements."""
    from cdc.dsn import redact_dsn
    from cdc.sources.postgres import admin

    statements = admin.setup_statements(conn, settings)
    if print_sql:
        say(f"-- source {settings.name} ({redact_dsn(settings.dsn)})")
        for statement in statements:
            say(statement.as_string(conn))
        if not statements:
            say("-- nothing to do: publication and slot exist")
        return
    admin.run_statements(conn, settings, statements, say)
    if not statements:
        say(f"[{settings.name}] nothing to do: publication and slot exist")


def binlog_backlog(files: list[dict[str, Any]], complete_txn: str) -> tuple[int, int]:
    """A PostgreSQL server has no binlog files: its slot's lag is in ``server_status``."""
    return 0, 0
