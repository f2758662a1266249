"""DDL on captured MariaDB tables while ``cdc run`` streams them, seen by a jsonl target.

Each table gets one ALTER TABLE mid-stream, followed by a write to a row streamed before it.
The binlog's next table map of the table describes the new columns, typed as MariaDB's
catalog prints them, and the table's first event after the DDL carries a ``schema_change``
with what was added, dropped and retyped. No stream_gap is raised for the rows last seen
with the old columns, and exactly the DDLs that changed existing rows without row events (a
column added with a default or NOT NULL, a type changed other than by widening, a rename, a
conversion to another character set) ask for the table to be read again: the state store's
``reread:`` meta key, which the daemon deletes once the table is read again, and the daemon's
log line written with it.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tests.helpers import MysqlCdcSetup, wait_for

# table -> (its columns, its DDL, the write after it, the columns after it, added, dropped, retyped)
CHANGES: dict[str, tuple[str, str, str, list[tuple[str, str]], list[str], list[str], list[str]]] = {
    "defaulted": (
        "id INT PRIMARY KEY, name VARCHAR(50)",
        "ALTER TABLE defaulted ADD COLUMN farbe VARCHAR(20) DEFAULT 'rot'",
        "UPDATE defaulted SET name = 'Ada L' WHERE id = 1",
        [("id", "int(11)"), ("name", "varchar(50)"), ("farbe", "varchar(20)")],
        ["farbe"],
        [],
        [],
    ),
    "plain": (
        "id INT PRIMARY KEY, name VARCHAR(50)",
        "ALTER TABLE plain ADD COLUMN notiz TEXT, ADD COLUMN menge DECIMAL(10,2) UNSIGNED AFTER id",
        "UPDATE plain SET notiz = 'neu', menge = 2.5 WHERE id = 1",
        [("id", "int(11)"), ("menge", "decimal(10,2) unsigned"), ("name", "varchar(50)"), ("notiz", "text")],
        ["menge", "notiz"],
        [],
        [],
    ),
    "required": (
        "id INT PRIMARY KEY, name VARCHAR(50)",
        "ALTER TABLE required ADD COLUMN stufe TINYINT UNSIGNED NOT NULL",
        "UPDATE required SET stufe = 3 WHERE id = 1",
        [("id", "int(11)"), ("name", "varchar(50)"), ("stufe", "tinyint(3) unsigned")],
        ["stufe"],
        [],
        [],
    ),
    "widened": (
        "id INT PRIMARY KEY, name VARCHAR(50) NOT NULL DEFAULT 'Ada'",
        "ALTER TABLE widened MODIFY name VARCHAR(100) NOT NULL",
        "UPDATE widened SET name = 'Ada L' WHERE id = 1",
        [("id", "int(11)"), ("name", "varchar(100)")],
        [],
        [],
        ["name"],
    ),
    "retyped": (
        "id INT PRIMARY KEY, code VARCHAR(10) DEFAULT '41'",
        "ALTER TABLE retyped MODIFY COLUMN code BIGINT",
        "UPDATE retyped SET code = code + 1 WHERE id = 1",
        [("id", "int(11)"), ("code", "bigint(20)")],
        [],
        [],
        ["code"],
    ),
    "dropped": (
        "id INT PRIMARY KEY, name VARCHAR(50), fax VARCHAR(20)",
        "ALTER TABLE dropped DROP COLUMN fax",
        "UPDATE dropped SET name = 'Ada L' WHERE id = 1",
        [("id", "int(11)"), ("name", "varchar(50)")],
        [],
        ["fax"],
        [],
    ),
    "renamed": (
        "id INT PRIMARY KEY, phone VARCHAR(20)",
        "ALTER TABLE renamed RENAME COLUMN phone TO mobile",
        "UPDATE renamed SET mobile = '555-0142' WHERE id = 1",
        [("id", "int(11)"), ("mobile", "varchar(20)")],
        ["mobile"],
        ["phone"],
        [],
    ),
}
# its columns stay as they were: no schema_change record, but a re-read
CONVERTED = ("id INT PRIMARY KEY, name VARCHAR(50)", "ALTER TABLE converted CONVERT TO CHARACTER SET latin1")
TABLES = [*CHANGES, "converted"]
REWRITING = {"defaulted", "required", "retyped", "renamed", "converted"}


def _row_events(setup: MysqlCdcSetup, table: str) -> list[dict[str, Any]]:
    return [e for e in setup.events() if e.get("table") == table and e.get("op") in ("insert", "update", "delete")]


def _reread_asked(setup: MysqlCdcSetup) -> set[str]:
    """The tables whose schema change asked for a re-read, as the daemon logged it."""
    logged = [json.loads(line) for line in setup.daemon_log().splitlines() if line.startswith("{")]
    return {
        entry["msg"].split()[3].split(".", 1)[1]
        for entry in logged
        if entry["msg"].startswith("schema change of ") and entry["msg"].endswith("so the table is read again")
    }


def _reread_keys(setup: MysqlCdcSetup) -> set[str]:
    with sqlite3.connect(f"file:{setup.state_dir / 'state.db'}?mode=ro", uri=True) as db:
        return {key for (key,) in db.execute("SELECT key FROM meta WHERE key LIKE 'reread:%'")}


def test_ddl_mid_stream_is_a_schema_change_of_the_next_event(mariadb_server, pg_server, tmp_path):
    schema = [f"CREATE TABLE {table} ({columns})" for table, (columns, *_) in CHANGES.items()]
    schema.append(f"CREATE TABLE converted ({CONVERTED[0]})")
    setup = MysqlCdcSetup(
        mariadb_server, pg_server, tmp_path, schema, TABLES, targets_toml="", extra_config='[http]\nlisten = ""'
    )
    setup.setup()
    with setup.running():
        for table in TABLES:
            setup.execute(f"INSERT INTO {table} (id) VALUES (1)")
        wait_for(lambda: all(_row_events(setup, t) for t in TABLES), what="the first rows")
        for table, (_, ddl, write, *_) in CHANGES.items():
            setup.execute(ddl, write)
            wait_for(lambda: len(_row_events(setup, table)) == 2, what=f"the write after the DDL of {table}")
        setup.execute(CONVERTED[1], "UPDATE converted SET name = 'Ada L' WHERE id = 1")
        wait_for(lambda: len(_row_events(setup, "converted")) == 2, what="the write after the conversion")
        for table in TABLES:  # a second write: the table's columns are as recorded
            setup.execute(f"UPDATE {table} SET id = 2 WHERE id = 1")
        wait_for(lambda: all(len(_row_events(setup, t)) == 3 for t in TABLES), what="the second writes")

    for table, (_, _, _, columns, added, dropped, retyped) in CHANGES.items():
        first, after_ddl, second = _row_events(setup, table)
        assert "schema_change" not in first and "schema_change" not in second, table
        change = after_ddl["schema_change"]
        assert change["op"] == "schema_change" and change["source_kind"] == "mysql"
        assert (change["schema"], change["table"]) == (setup.source_db, table)
        assert [(c["name"], c["type"]) for c in change["columns"]] == columns, table
        assert (change["added"], change["dropped"], change["retyped"]) == (added, dropped, retyped), table
        assert change["commit_ts"] == after_ddl["commit_ts"]
    assert all("schema_change" not in event for event in _row_events(setup, "converted"))
    conflicts = setup.cdc("conflicts", "list", "--json")
    assert conflicts.returncode == 0, conflicts.stderr
    assert [json.loads(line)["type"] for line in conflicts.stdout.splitlines()] == []
    assert _reread_asked(setup) == REWRITING, setup.daemon_log()[-3000:]
    assert _reread_keys(setup) <= {f"reread:{setup.name}:{setup.source_db}.{table}" for table in REWRITING}
