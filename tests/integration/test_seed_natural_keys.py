"""Natural keys of rows that were in a table before cdc, on PostgreSQL and MariaDB.

The customers exist before ``cdc setup`` (two of them already share an e-mail). cdc reads
their keys once, matched to the stream's position: the duplicate already there is reported
once, as ``"rule": "existing rows"``, and an insert taking the e-mail of a customer that
existed before cdc is a ``duplicate_key`` naming that customer. A changed ``natural_keys``
reads the table again.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import CdcSetup, MysqlCdcSetup

PG_SCHEMA = """
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text);
INSERT INTO public.customers VALUES
    (1, 'Ada', '555-0100', 'ada@x.io'),
    (2, 'Bob', '555-0200', 'bob@x.io'),
    (3, 'Ada L.', '555-0300', 'ada@x.io'),
    (4, 'Eve', '555-0200', 'eve@x.io');
"""
MARIADB_SCHEMA = [
    "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100), phone VARCHAR(40), email VARCHAR(200))",
    "INSERT INTO customers VALUES (1, 'Ada', '555-0100', 'ada@x.io'), (2, 'Bob', '555-0200', 'bob@x.io'),"
    " (3, 'Ada L.', '555-0300', 'ada@x.io'), (4, 'Eve', '555-0200', 'eve@x.io')",
]


def _rules(table: str, natural_keys: str) -> str:
    return f'\n[[tables]]\nmatch = "{table}"\nnatural_keys = {natural_keys}\n'


@pytest.fixture
def crm(pg_server, tmp_path):
    setup = CdcSetup(pg_server, tmp_path, PG_SCHEMA, ["public.customers"], target_sql="")
    _only_audit_target(setup)
    with setup.config.open("a") as config:
        config.write(_rules("public.customers", '[["email"]]'))
    setup.setup()
    return setup


@pytest.fixture
def erp(mariadb_server, pg_server, tmp_path):
    setup = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, MARIADB_SCHEMA, ["customers"], targets_toml="")
    with setup.config.open("a") as config:
        config.write(_rules(f"{setup.source_db}.customers", '[["email"]]'))
    setup.setup()
    return setup


def _only_audit_target(setup: CdcSetup) -> None:
    """The jsonl target alone (the rows that existed before cdc are in no target)."""
    text = setup.config.read_text()
    start = text.index('[[targets]]\nname = "dwh"')
    end = text.index("[pipeline]")
    setup.config.write_text(text[:start] + text[end:])


def _insert(setup: CdcSetup, row: str) -> None:
    if isinstance(setup, MysqlCdcSetup):
        setup.execute(f"INSERT INTO customers VALUES {row}")
    else:
        with setup.source() as conn:
            conn.execute(f"INSERT INTO customers VALUES {row}")


def _duplicates(setup: CdcSetup) -> list[tuple[str, str, list[str], str, dict]]:
    result = setup.cdc("conflicts", "list", "--json", "--type", "duplicate_key")
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    return sorted(
        (c["rule"], c["key"], c["fields"], c["evidence"]["owner_key"], c["evidence"]["natural_key"]) for c in found
    )


EXISTING_ADA = ("existing rows", '{"id":3}', ["email"], '{"id":1}', {"email": "ada@x.io"})


@pytest.mark.parametrize("which", ["crm", "erp"])
def test_existing_duplicate_reported_once_and_insert_meets_existing_customer(which, request):
    setup = request.getfixturevalue(which)
    setup.drain()
    assert _duplicates(setup) == [EXISTING_ADA]
    _insert(setup, "(5, 'Bobby', '555-0500', 'bob@x.io')")
    setup.drain()
    setup.drain()  # a restart reads nothing again
    inserted = ("a natural key already belongs to a live row", '{"id":5}', ["email"], '{"id":2}', {"email": "bob@x.io"})
    assert _duplicates(setup) == [inserted, EXISTING_ADA]
    shown = json.loads(setup.cdc("conflicts", "show", "--json", _id(setup, '{"id":3}')).stdout)
    assert [e["after"] for e in shown["events"]] == [{"email": "ada@x.io"}, {"email": "ada@x.io"}]


def _id(setup: CdcSetup, key: str) -> str:
    result = setup.cdc("conflicts", "list", "--json", "--type", "duplicate_key")
    return next(c["id"] for c in map(json.loads, result.stdout.splitlines()) if c["key"] == key)


@pytest.mark.parametrize("which", ["crm", "erp"])
def test_changed_natural_keys_read_the_table_again(which, request):
    setup = request.getfixturevalue(which)
    setup.drain()
    table = "public.customers" if which == "crm" else f"{setup.source_db}.customers"
    text = setup.config.read_text()
    setup.config.write_text(text.replace('natural_keys = [["email"]]', 'natural_keys = [["email"], ["phone"]]'))
    # a change made while the daemon is down, before the new keys are read: counted once
    _insert(setup, "(6, 'Eva', '555-0100', 'eva@x.io')")
    setup.drain()
    _insert(setup, "(7, 'Evan', '555-0300', 'evan@x.io')")
    setup.drain()
    assert _duplicates(setup) == [
        ("a natural key already belongs to a live row", '{"id":7}', ["phone"], '{"id":3}', {"phone": "555-0300"}),
        EXISTING_ADA,
        ("existing rows", '{"id":4}', ["phone"], '{"id":2}', {"phone": "555-0200"}),
        ("existing rows", '{"id":6}', ["phone"], '{"id":1}', {"phone": "555-0100"}),
    ], table


def test_snapshot_reports_the_duplicates_it_read_once(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, PG_SCHEMA, ["public.customers"], target_sql="")
    _only_audit_target(crm)
    crm.setup()  # without natural keys yet: nothing is read
    with crm.config.open("a") as config:
        config.write(_rules("public.customers", '[["email"]]'))
    result = crm.cdc("snapshot")
    assert result.returncode == 0, result.stderr
    assert _duplicates(crm) == [EXISTING_ADA]
    drained = crm.drain()
    assert "existing row(s) read" not in drained.stdout + drained.stderr  # the snapshot read them
    _insert(crm, "(5, 'Bobby', '555-0500', 'bob@x.io')")
    crm.drain()
    inserted = ("a natural key already belongs to a live row", '{"id":5}', ["email"], '{"id":2}', {"email": "bob@x.io"})
    assert _duplicates(crm) == [inserted, EXISTING_ADA]


def test_a_large_table_is_read_in_chunks(pg_server, tmp_path):
    rows = 12_001  # more than two chunks
    schema = (
        "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text);"
        " INSERT INTO public.customers SELECT n, 'c' || n, NULL, 'c' || n || '@x.io' FROM generate_series(1, 12000) n;"
        f" INSERT INTO public.customers VALUES ({rows}, 'again', NULL, 'c1@x.io');"
    )
    crm = CdcSetup(pg_server, tmp_path, schema, ["public.customers"], target_sql="")
    _only_audit_target(crm)
    with crm.config.open("a") as config:
        config.write(_rules("public.customers", '[["email"]]'))
    result = crm.cdc("setup")
    assert result.returncode == 0, result.stderr
    assert f"natural keys of {rows} existing row(s) read" in result.stdout
    assert _duplicates(crm) == [("existing rows", f'{{"id":{rows}}}', ["email"], '{"id":1}', {"email": "c1@x.io"})]
    _insert(crm, "(20000, 'late', NULL, 'c9999@x.io')")
    crm.drain()
    assert (
        "a natural key already belongs to a live row",
        '{"id":20000}',
        ["email"],
        '{"id":9999}',
        {"email": "c9999@x.io"},
    ) in _duplicates(crm)
