"""DDL on captured PostgreSQL tables while ``cdc run`` streams them, seen by a jsonl target.

Each table gets one ALTER TABLE mid-stream, followed by an update of a row streamed before it.
pgoutput sends the table's Relation message again, the source describes the new columns with
their ``format_type`` names, and the table's first event after the DDL carries a
``schema_change`` with what was added, dropped and retyped. No stream_gap is raised for the
rows last seen with the old columns, and exactly the DDLs that changed existing rows without
row events (a column added with a default, a type changed with USING, a rename) ask for the
table to be read again (the state store's ``reread:`` meta key, which the daemon deletes once
the table is read again, and the daemon's log line written with it).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

from tests.helpers import CdcSetup, wait_for

TABLES = ["defaulted", "stamped", "numbered", "plain", "retyped", "dropped", "renamed", "together"]
SCHEMA = """
CREATE TYPE public.mood AS ENUM ('calm', 'busy');
CREATE TABLE public.defaulted (id int PRIMARY KEY, name text);
CREATE TABLE public.stamped (id int PRIMARY KEY, name text);
CREATE TABLE public.numbered (id int PRIMARY KEY, name text);
CREATE TABLE public.plain (id int PRIMARY KEY, name text);
CREATE TABLE public.retyped (id int PRIMARY KEY, code text);
CREATE TABLE public.dropped (id int PRIMARY KEY, name text, fax text);
CREATE TABLE public.renamed (id int PRIMARY KEY, phone varchar(20));
CREATE TABLE public.together (id int PRIMARY KEY, name text);
"""
FIRST_ROWS = [
    "INSERT INTO defaulted VALUES (1, 'Ada')",
    "INSERT INTO stamped VALUES (1, 'Ada')",
    "INSERT INTO numbered VALUES (1, 'Ada')",
    "INSERT INTO plain VALUES (1, 'Ada')",
    "INSERT INTO retyped VALUES (1, '42')",
    "INSERT INTO dropped VALUES (1, 'Ada', '555-0100')",
    "INSERT INTO renamed VALUES (1, '555-0199')",
    "INSERT INTO together VALUES (1, 'Ada')",
]
# table -> (its DDL, the write after it, the columns after it, added, dropped, retyped)
CHANGES: dict[str, tuple[str, str, list[tuple[str, str]], list[str], list[str], list[str]]] = {
    "defaulted": (
        "ALTER TABLE defaulted ADD COLUMN tier text NOT NULL DEFAULT 'basic'",
        "UPDATE defaulted SET name = 'Ada L' WHERE id = 1",
        [("id", "integer"), ("name", "text"), ("tier", "text")],
        ["tier"],
        [],
        [],
    ),
    "stamped": (
        "ALTER TABLE stamped ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        "UPDATE stamped SET name = 'Ada L' WHERE id = 1",
        [("id", "integer"), ("name", "text"), ("token", "uuid")],
        ["token"],
        [],
        [],
    ),
    "numbered": (
        "ALTER TABLE numbered ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY",
        "UPDATE numbered SET name = 'Ada L' WHERE id = 1",
        [("id", "integer"), ("name", "text"), ("seq", "bigint")],
        ["seq"],
        [],
        [],
    ),
    "plain": (
        "ALTER TABLE plain ADD COLUMN nickname varchar(20), ADD COLUMN mood public.mood, ADD COLUMN amount numeric(12,2)",
        "UPDATE plain SET nickname = 'ada', mood = 'calm' WHERE id = 1",
        [
            ("id", "integer"),
            ("name", "text"),
            ("nickname", "character varying(20)"),
            ("mood", "public.mood"),
            ("amount", "numeric(12,2)"),
        ],
        ["nickname", "mood", "amount"],
        [],
        [],
    ),
    "retyped": (
        "ALTER TABLE retyped ALTER COLUMN code TYPE integer USING code::integer",
        "UPDATE retyped SET code = code + 1 WHERE id = 1",
        [("id", "integer"), ("code", "integer")],
        [],
        [],
        ["code"],
    ),
    "dropped": (
        "ALTER TABLE dropped DROP COLUMN fax",
        "UPDATE dropped SET name = 'Ada L' WHERE id = 1",
        [("id", "integer"), ("name", "text")],
        [],
        ["fax"],
        [],
    ),
    "renamed": (
        "ALTER TABLE renamed RENAME COLUMN phone TO mobile",
        "UPDATE renamed SET mobile = '555-0142' WHERE id = 1",
        [("id", "integer"), ("mobile", "character varying(20)")],
        ["mobile"],
        ["phone"],
        [],
    ),
    "together": (  # the DDL and the write in one transaction
        "ALTER TABLE together ADD COLUMN score numeric(5,1) DEFAULT 0",
        "UPDATE together SET score = score + 1 WHERE id = 1",
        [("id", "integer"), ("name", "text"), ("score", "numeric(5,1)")],
        ["score"],
        [],
        [],
    ),
}
REWRITING = {"defaulted", "stamped", "numbered", "retyped", "renamed", "together"}


def _jsonl_only(setup: CdcSetup) -> None:
    """The test's configuration without its postgres target (whose tables lack the new columns)."""
    config = setup.config.read_text()
    dwh = f'[[targets]]\nname = "dwh"\nkind = "postgres"\ndsn = "{setup.target_dsn}"\n'
    assert dwh in config
    setup.config.write_text(config.replace(dwh, ""))


def _row_events(setup: CdcSetup, table: str) -> list[dict[str, Any]]:
    return [e for e in setup.events() if e.get("table") == table and e.get("op") in ("insert", "update", "delete")]


def _reread_asked(setup: CdcSetup) -> set[str]:
    """The tables whose schema change asked for a re-read, as the daemon logged it."""
    logged = [json.loads(line) for line in setup.daemon_log().splitlines() if line.startswith("{")]
    return {
        entry["msg"].split()[3]
        for entry in logged
        if entry["msg"].startswith("schema change of ") and entry["msg"].endswith("so the table is read again")
    }


def _reread_keys(setup: CdcSetup) -> set[str]:
    with sqlite3.connect(f"file:{setup.state_dir / 'state.db'}?mode=ro", uri=True) as db:
        return {key for (key,) in db.execute("SELECT key FROM meta WHERE key LIKE 'reread:%'")}


def test_ddl_mid_stream_is_a_schema_change_of_the_next_event(pg_server, tmp_path):
    setup = CdcSetup(pg_server, tmp_path, SCHEMA, [f"public.{table}" for table in TABLES])
    _jsonl_only(setup)
    setup.setup()
    with setup.running(), setup.source() as conn:
        for statement in FIRST_ROWS:
            conn.execute(statement)
        wait_for(lambda: all(_row_events(setup, t) for t in TABLES), what="the first rows")
        for table, (ddl, write, *_) in CHANGES.items():
            with conn.transaction() if table == "together" else contextlib.nullcontext():
                conn.execute(ddl)
                conn.execute(write)
            wait_for(lambda: len(_row_events(setup, table)) == 2, what=f"the write after the DDL of {table}")
        for table in TABLES:  # a second write: the table's columns are as recorded
            conn.execute(f"UPDATE {table} SET id = 2 WHERE id = 1")
        wait_for(lambda: all(len(_row_events(setup, t)) == 3 for t in TABLES), what="the second writes")

    for table, (_, _, columns, added, dropped, retyped) in CHANGES.items():
        first, after_ddl, second = _row_events(setup, table)
        assert "schema_change" not in first and "schema_change" not in second, table
        change = after_ddl["schema_change"]
        assert change["op"] == "schema_change" and change["source_kind"] == "postgres"
        assert (change["schema"], change["table"]) == ("public", table)
        assert [(c["name"], c["type"]) for c in change["columns"]] == columns, table
        assert (change["added"], change["dropped"], change["retyped"]) == (added, dropped, retyped), table
        assert change["commit_ts"] == after_ddl["commit_ts"]
    conflicts = setup.cdc("conflicts", "list", "--json")
    assert conflicts.returncode == 0, conflicts.stderr
    assert [json.loads(line)["type"] for line in conflicts.stdout.splitlines()] == []
    assert _reread_asked(setup) == {f"public.{table}" for table in REWRITING}
    assert _reread_keys(setup) <= {f"reread:crm:public.{table}" for table in REWRITING}
