"""What every source provides to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cdc.model import Idle, RowChange, TxnBegin, TxnCommit, WriteBack

SourceItem = TxnBegin | RowChange | TxnCommit | Idle | WriteBack


@dataclass(frozen=True, slots=True)
class Problem:
    """A preflight problem (``cdc check``) and the statement or setting that fixes it.

    A ``warning`` does not stop cdc yet (a stored position close to being purged); an
    ``error`` does.
    """

    what: str
    fix: str
    severity: str = "error"


class SourceError(Exception):
    """A source failed. ``fatal`` errors need a person (a missing slot, a table without a key);
    the others (a lost connection) are retried with backoff."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class Source(Protocol):
    name: str

    def start(self, resume_position: str | None, drain: bool = False) -> None:
        """Connect and stream from just after ``resume_position`` (None: where the slot is)."""

    def read(self, timeout: float) -> list[SourceItem]:
        """The items available now, waiting up to ``timeout`` seconds for the first one.

        With ``drain``, an ``Idle`` whose ``reached`` is ``"drained"`` says that everything
        up to the source's end position at start has been read.
        """

    def acknowledge(self, resume_position: str) -> None:
        """Everything up to ``resume_position`` is durable in the state store and every target."""

    def keepalive(self) -> None:
        """Keep the connection alive while the pipeline is not reading (a full queue)."""

    def close(self) -> None: ...


def server_status(settings) -> dict[str, Any] | None:
    """What the source's server keeps for cdc (``cdc status``, the daemon's monitor): a
    PostgreSQL slot's position, lag and retained WAL, or a binlog's end and files."""
    if settings.kind == "mysql":
        from cdc.sources import mysql_admin
        from cdc.sources.mysql import MysqlSource

        conn = MysqlSource(settings).control_connection()
        try:
            return mysql_admin.binlog_status(conn)
        finally:
            conn.close()
    import psycopg

    from cdc.dsn import connect_kwargs
    from cdc.sources import pg_admin

    with psycopg.connect(**connect_kwargs(settings.dsn, settings.password, connect_timeout=5),
                         autocommit=True) as conn:
        return pg_admin.slot_status(conn, settings)


def make_source(settings, store=None) -> Source:
    if settings.kind == "postgres":
        from cdc.sources.postgres import PostgresSource

        return PostgresSource(settings)
    if settings.kind == "mysql":
        from cdc.sources.mysql import MysqlSource

        return MysqlSource(settings)
    raise SourceError(f"source {settings.name}: the {settings.kind} source is not available in this version",
                      fatal=True)
