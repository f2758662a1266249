"""The sources' registry: a source ``kind`` names the package that implements it.

Each package (``cdc.sources.postgres``, ``cdc.sources.mysql``) offers the same functions,
described by ``SourceKind``: its stream, its snapshot reader, its preflight (``cdc check``
and ``cdc setup``) and what its server keeps for cdc (``cdc status``). Nothing outside this
registry imports a concrete source; a package is imported only when a source of its kind is
configured, so a host without one database's client library can still run the other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from cdc.errors import SourceError

if TYPE_CHECKING:
    from cdc.config import SourceSettings
    from cdc.sources.base import Problem, SnapshotReader, Source

KINDS = {"postgres": "cdc.sources.postgres", "mysql": "cdc.sources.mysql"}


class SourceKind(Protocol):
    """What a source package offers, as module-level functions."""

    def make_source(self, settings: SourceSettings) -> Source: ...

    def make_snapshot_reader(self, settings: SourceSettings) -> SnapshotReader: ...

    def server_status(self, settings: SourceSettings) -> dict[str, Any] | None: ...

    def control_connection(self, settings: SourceSettings) -> Any: ...

    def check(
        self, conn: Any, settings: SourceSettings, stored_position: str | None, written_tables: list[tuple[str, str]]
    ) -> list[Problem]: ...

    def binlog_backlog(self, files: list[dict[str, Any]], complete_txn: str) -> tuple[int, int]: ...

    def setup(
        self, conn: Any, settings: SourceSettings, state_dir: Path, print_sql: bool, say: Callable[[str], None]
    ) -> None: ...


def kind_of(settings: SourceSettings) -> SourceKind:
    """The package of ``settings.kind``."""
    module = KINDS.get(settings.kind)
    if module is None:
        raise SourceError(
            f"source {settings.name}: the {settings.kind} source is not available in this version", fatal=True
        )
    return cast("SourceKind", importlib.import_module(module))


def make_source(settings: SourceSettings) -> Source:
    """The stream of one configured source."""
    return kind_of(settings).make_source(settings)


def make_snapshot_reader(settings: SourceSettings) -> SnapshotReader:
    """The consistent reader of one configured source (``cdc snapshot``, ``cdc backfill``)."""
    return kind_of(settings).make_snapshot_reader(settings)


def server_status(settings: SourceSettings) -> dict[str, Any] | None:
    """What the source's server keeps for cdc (``cdc status``, the daemon's monitor): a
    PostgreSQL slot's position, lag and retained WAL, or a binlog's end and files."""
    return kind_of(settings).server_status(settings)
