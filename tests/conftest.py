"""Shared pytest fixtures: throwaway database servers, one of each per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cdc.devservers import ThrowawayMariaDB, ThrowawayPostgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL 15 server with wal_level=logical, shared by the whole session."""
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[ThrowawayMariaDB]:
    """A MariaDB server with a full row-based binlog, started when a test first asks for it."""
    with ThrowawayMariaDB() as server:
        yield server


@pytest.fixture(autouse=True)
def _drop_replication_slots():
    """Each test's replication slot is dropped after it."""
    from tests import helpers

    yield
    while helpers.CREATED:
        setup = helpers.CREATED.pop()
        if getattr(setup, "slot", None) and getattr(setup, "pg_admin_dsn", None):
            setup.drop_slot()
