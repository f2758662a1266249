"""The postgres target's set-based apply: a run of upserts goes through a staging table and
ends exactly as applying the changes one by one would, also where the order of the rows matters."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import psycopg
import pytest

from cdc.config import TargetSettings
from cdc.model import Event
from cdc.targets.postgres import PostgresTarget
from cdc.values import dumps_row

_counter = itertools.count()


@pytest.fixture
def target_db(pg_server) -> Iterator[str]:
    name = f"pgtarget_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.dsn(name)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _event(n: int, op: str, key: int, after: dict[str, str | None] | None) -> Event:
    """An event from a PostgreSQL source: values in their text form."""
    key_json = dumps_row({"id": key})
    return Event(
        "crm",
        f"{n:016d}",
        0,
        f"crm:0/{n}:0",
        "public",
        "customers",
        op,
        key_json,
        "2026-12-03T10:00:00.000000+00:00",
        "{}",
        {"key": {"id": str(key)}, "after": after},
    )


def _target(dsn: str) -> PostgresTarget:
    target = PostgresTarget(TargetSettings(name="dwh", kind="postgres", dsn=dsn))
    target.open()
    return target


def _rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, email, tags FROM customers ORDER BY id").fetchall()


def test_a_batch_with_repeated_keys_applies_every_change_once_in_order(target_db: str) -> None:
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text, tags text[])")
        conn.execute("CREATE TABLE applied (id int, email text)")
        conn.execute(
            "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN INSERT INTO applied VALUES (NEW.id, NEW.email); RETURN NULL; END $$"
        )
        conn.execute("CREATE TRIGGER note AFTER INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION note()")
    target = _target(target_db)
    events = [
        _event(1, "insert", 1, {"id": "1", "email": "a@x", "tags": "{a}"}),
        _event(2, "insert", 2, {"id": "2", "email": "b@x", "tags": None}),
        _event(3, "update", 1, {"id": "1", "email": "a2@x", "tags": '{a,"b c"}'}),
        _event(4, "insert", 3, {"id": "3", "email": "tab\there\\back", "tags": "{}"}),
        _event(5, "update", 1, {"id": "1", "email": "a3@x", "tags": '{a,"b c"}'}),
        _event(6, "delete", 2, None),
        _event(7, "insert", 2, {"id": "2", "email": "b2@x", "tags": "{z}"}),
    ]
    try:
        target.apply("crm", events)
        assert target.position("crm") == (events[-1].txn_key, 0)
    finally:
        target.close()
    assert _rows(target_db) == [(1, "a3@x", ["a", "b c"]), (2, "b2@x", ["z"]), (3, "tab\there\\back", [])]
    with psycopg.connect(target_db) as conn:
        applied = conn.execute("SELECT id, email FROM applied").fetchall()
    assert sorted(applied) == sorted(
        [(1, "a@x"), (2, "b@x"), (1, "a2@x"), (3, "tab\there\\back"), (1, "a3@x"), (2, "b2@x")]
    )
    assert [email for id_, email in applied if id_ == 1] == ["a@x", "a2@x", "a3@x"]


def test_values_moving_between_rows_of_another_unique_index_are_applied_in_order(target_db: str) -> None:
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text UNIQUE, tags text[])")
        conn.execute("INSERT INTO customers VALUES (1, 'a@x', NULL), (2, 'b@x', NULL)")
    target = _target(target_db)
    # one by one these succeed; as one set (row 2 first) the unique index on email would refuse them
    events = [
        _event(1, "update", 2, {"id": "2", "email": "c@x", "tags": None}),
        _event(2, "update", 1, {"id": "1", "email": "b@x", "tags": None}),
        _event(3, "update", 2, {"id": "2", "email": "a@x", "tags": None}),
    ]
    try:
        target.apply("crm", events)
    finally:
        target.close()
    assert _rows(target_db) == [(1, "b@x", None), (2, "a@x", None)]
