"""``cdc snapshot`` and ``cdc backfill`` on PostgreSQL: what the stream needs is made (or the
snapshot refused) before anything is created, ``--where`` is one condition run read-only,
and a ``%`` in a table or column name is only a character."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from tests.helpers import CdcSetup, table_rows

SCHEMA = "CREATE TABLE public.accounts (id bigint PRIMARY KEY, note text);"


def _slot_and_publication(crm: CdcSetup) -> tuple[bool, bool]:
    with crm.source() as conn:
        slot = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (crm.slot,)).fetchone()
        publication = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (crm.slot,)).fetchone()
    return slot is not None, publication is not None


def test_snapshot_without_setup_makes_what_the_stream_needs_before_its_slot(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.accounts"])
    with crm.source() as conn:
        conn.execute("INSERT INTO accounts SELECT i, 'old' FROM generate_series(1, 300) i")
    result = crm.cdc("snapshot")
    assert result.returncode == 0, result.stdout + result.stderr
    with crm.source() as conn:
        published = conn.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (crm.slot,))
        assert [row[0] for row in published] == ["accounts"]
        identity = conn.execute("SELECT relreplident FROM pg_class WHERE oid = 'public.accounts'::regclass")
        assert identity.fetchone() == ("f",)
        conn.execute("UPDATE accounts SET note = 'streamed' WHERE id <= 10")
        conn.execute("INSERT INTO accounts VALUES (301, 'new')")
    crm.drain()
    with crm.source() as src, crm.target() as dst:
        assert table_rows(src, "public.accounts") == table_rows(dst, "public.accounts")
    streamed = [e for e in crm.events() if e["op"] != "snapshot"]
    assert len(streamed) == 11


def test_snapshot_refuses_in_one_line_and_creates_nothing_when_setup_needs_another_role(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.accounts"])
    role = f"cdc_reader_{crm.slot}"
    with crm.source() as conn:
        conn.execute("INSERT INTO accounts VALUES (1, 'one')")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON accounts TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(crm.source_db)))
    env = {"CDC_SOURCES__CRM__DSN": crm.source_dsn.replace("postgres@", f"{role}@")}
    result = crm.cdc("snapshot", **env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cdc setup" in result.stderr and "REPLICA IDENTITY FULL" in result.stderr
    assert _slot_and_publication(crm) == (False, False)
    crm.setup()  # as the owner: then the same role's snapshot finds nothing left to make
    result = crm.cdc("snapshot", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _slot_and_publication(crm) == (True, True)


def test_snapshot_refuses_a_table_without_primary_key_before_creating_anything(pg_server, tmp_path):
    crm = CdcSetup(
        pg_server, tmp_path, SCHEMA + "CREATE TABLE public.logs (line text);", ["public.accounts", "public.logs"]
    )
    result = crm.cdc("snapshot")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "public.logs has no primary key" in result.stderr and "ADD PRIMARY KEY" in result.stderr
    assert _slot_and_publication(crm) == (False, False)


def _backfill_setup(pg_server, tmp_path) -> CdcSetup:
    crm = CdcSetup(
        pg_server, tmp_path, SCHEMA + "CREATE TABLE public.victim (id int PRIMARY KEY);", ["public.accounts"]
    )
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO accounts SELECT i, 'n' || i FROM generate_series(1, 30) i")
    crm.drain()
    return crm


def _victim_exists(crm: CdcSetup) -> bool:
    with crm.source() as conn:
        return conn.execute("SELECT to_regclass('public.victim') IS NOT NULL").fetchone()[0]


def test_a_where_holding_statements_is_refused_and_runs_nothing(pg_server, tmp_path):
    crm = _backfill_setup(pg_server, tmp_path)
    for where in (
        "1=1; COMMIT; DROP TABLE victim",
        "1=1); COMMIT; DROP TABLE victim; SELECT (1",
        "1=1 /* ; */ ; DROP TABLE victim",
    ):
        for dry_run in (["--dry-run"], []):
            result = crm.cdc("backfill", "--source", "crm", "--where", where, *dry_run)
            assert result.returncode == 2, result.stdout + result.stderr
            assert "--where" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert _victim_exists(crm)
    # a function that writes is refused by the read-only transaction the condition runs in
    with crm.source() as conn:
        conn.execute("CREATE SEQUENCE public.counter")
    result = crm.cdc("backfill", "--source", "crm", "--dry-run", "--where", "nextval('counter') > 0")
    assert result.returncode == 2 and "read-only transaction" in result.stderr and "--where" in result.stderr


def test_a_where_is_one_condition_that_the_count_and_the_read_both_see(pg_server, tmp_path):
    crm = _backfill_setup(pg_server, tmp_path)
    for where in ("id <= 3) OR (id > 0", "id <= 3) OR (true", "(id <= 3", "note = 'x''"):
        result = crm.cdc("backfill", "--source", "crm", "--where", where, "--dry-run")
        assert result.returncode == 2 and "--where" in result.stderr, (where, result.stderr)
    for where, rows in (
        ("id <= 3 -- the first three", 3),
        ("note IN ('n1', ')', 'n2') OR note = $$)$$ /* ( */", 2),
        ("note LIKE 'n1%'", 11),
        ("\"accounts\".id = 7 OR E'\\')' = note", 1),
    ):
        planned = crm.cdc("backfill", "--source", "crm", "--where", where, "--dry-run", "--json")
        assert planned.returncode == 0, (where, planned.stderr)
        assert json.loads(planned.stdout)["tables"] == {"public.accounts": rows}, where
        result = crm.cdc("backfill", "--source", "crm", "--where", where, "--chunk-rows", "2")
        assert result.returncode == 0, (where, result.stderr)
        assert f"{rows} row(s) re-read" in result.stdout, (where, result.stdout)


def test_no_where_the_checker_accepts_escapes_its_parentheses_on_the_server(pg_server, tmp_path):
    from cdc.errors import CommandError
    from cdc.sources.postgres.condition import where_clause

    tricks = [
        "true) OR (true",
        "'a' = 'a'') OR (''",
        "E'\\'' = '' ) OR (true --'",
        "$a$ $b$ ) OR (true $a$ = ''",
        '"x)" = 1 ) OR ( true',
        "/* /* */ ) OR (true */ true",
        "true -- ) OR (true",
        "U&'a' = 'a' ) OR (true",
        "e'\\\\' = '\\' ) OR (true",
    ]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("SET standard_conforming_strings = on")
        for trick in tricks:
            try:
                clause = where_clause(trick)
            except CommandError:
                continue
            query = sql.SQL("SELECT count(*) FROM (VALUES (1)) AS t(x) WHERE {} AND false").format(clause)
            try:
                count = conn.execute(query, [], prepare=True).fetchone()[0]
            except psycopg.Error:
                continue
            assert count == 0, f"{trick!r} escaped its parentheses"


PERCENT_SCHEMA = 'CREATE TABLE public."pct%s" (id int PRIMARY KEY, "pct%" text, "a%%b" int);'


def test_snapshot_and_backfill_of_names_with_percent_signs_into_a_postgres_target(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, PERCENT_SCHEMA, ["public.pct%s"])
    with crm.source() as conn:
        conn.execute("""INSERT INTO "pct%s" SELECT i, i || '%', i FROM generate_series(1, 25) i""")
    result = crm.cdc("snapshot", "--chunk-rows", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    crm.drain()
    with crm.source() as src, crm.target() as dst:
        assert table_rows(src, "public.pct%s") == table_rows(dst, "public.pct%s")
        dst.execute("""UPDATE "pct%s" SET "pct%" = 'damaged' WHERE id > 20""")
    planned = crm.cdc("backfill", "--source", "crm", "--dry-run", "--where", """"pct%" LIKE '2%'""")
    assert planned.returncode == 0 and "public.pct%s: 7" in planned.stdout, planned.stdout + planned.stderr
    result = crm.cdc("backfill", "--source", "crm", "--where", """"pct%" LIKE '2%'""", "--chunk-rows", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    crm.drain()
    with crm.source() as src, crm.target() as dst:
        assert table_rows(src, "public.pct%s") == table_rows(dst, "public.pct%s")
