"""Shared pytest fixtures: throwaway database servers, one of each per test session.

A test that uses a database server is marked ``server``, from the fixtures it asks for (or
by hand, where it starts a server of its own), and the tests that need none run first:
``scripts/test -m "not server"`` runs them alone in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.servers import ThrowawayMariaDB, ThrowawayPostgres

SERVER_FIXTURES = frozenset({"pg_server", "mariadb_server"})


@pytest.hookimpl(tryfirst=True)  # before '-m' deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
    items.sort(key=lambda item: item.get_closest_marker("server") is not None)


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
