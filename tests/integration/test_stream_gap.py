"""Changes the daemon never saw are reported as a stream_gap (the README's conflict taxonomy).

PostgreSQL: while the daemon is stopped, a captured row changes and the slot is advanced past
those changes. MariaDB: a captured row changes with ``sql_log_bin = 0``, so the binlog never
holds the change. In both cases the next logged change of the row has a before-image unlike the
last after-image cdc recorded: exactly one stream_gap, critical and pending (never auto-resolved,
even with an automatic policy), naming the row and the fields that changed unseen.
"""

from __future__ import annotations

import json

from tests.helpers import CdcSetup, MysqlCdcSetup

PG_SCHEMA = """
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text, updated_by text);
"""
MYSQL_SCHEMA = [
    "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100), phone VARCHAR(40),"
    " email VARCHAR(200), updated_by VARCHAR(40))"
]
MYSQL_TARGET = (
    "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text, updated_by text);"
)
AUTOMATIC = """
[conflicts]
policy = "last_writer_wins"
"""


def _rules(table: str) -> str:
    return f"""
[[tables]]
match = "{table}"
writer_column = "updated_by"
"""


def _conflicts(setup: CdcSetup, *args: str) -> list[dict]:
    result = setup.cdc("conflicts", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _check_gap(setup: CdcSetup, table: str, seen: dict, unseen: dict) -> None:
    """One stream_gap on row 42 between the last event seen and the next one, naming ``unseen``'s fields."""
    events = setup.events()
    row = [e for e in events if e["key"] == {"id": 42}]
    assert [e["op"] for e in row] == ["insert", "update", "update"]
    last_seen, next_ = row[1], row[2]
    assert next_["version"] == 3 and next_["changed"] == ["email"]
    found = _conflicts(setup)
    assert [(c["type"], c["table"], c["key"], c["fields"]) for c in found] == [
        ("stream_gap", table, '{"id":42}', sorted(unseen))
    ]
    gap = found[0]
    assert (gap["severity"], gap["status"], gap["resolution"]) == ("critical", "pending", None)
    assert [e["event_id"] for e in gap["events"]] == [last_seen["event_id"], next_["event_id"]]
    assert gap["evidence"] == {
        "recorded": {f: seen[f] for f in sorted(unseen)},
        "before": {f: unseen[f] for f in sorted(unseen)},
    }
    assert "changed without cdc seeing it" in gap["explanation"]
    assert next_["conflicts"] == [gap["id"]]
    assert [e for e in events if e["key"] != {"id": 42} and e["conflicts"]] == []
    # still pending after the daemon ran again: a gap is never resolved automatically
    setup.drain()
    assert [(c["id"], c["status"]) for c in _conflicts(setup)] == [(gap["id"], "pending")]


def test_postgres_slot_advanced_past_changes(pg_server, tmp_path):
    crm = CdcSetup(
        pg_server, tmp_path, PG_SCHEMA, ["public.customers"], extra_config=_rules("public.customers") + AUTOMATIC
    )
    crm.setup()
    with crm.source() as conn:
        conn.execute(
            "INSERT INTO customers VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import'),"
            " (43, 'Grace', '555-0200', 'grace@x.io', 'import')"
        )
        conn.execute("UPDATE customers SET phone = '555-0199', updated_by = 'sales-app' WHERE id = 42")
    crm.drain()
    assert len(crm.events()) == 3

    # the daemon is stopped: the row changes twice and the slot is moved past those changes
    with crm.source() as conn:
        conn.execute("UPDATE customers SET phone = '555-0900', updated_by = 'bulk-fix' WHERE id = 42")
        conn.execute("UPDATE customers SET name = 'Ada L.' WHERE id = 42")
        conn.execute("UPDATE customers SET name = 'Grace H.' WHERE id = 43")
        conn.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (crm.slot,))
        conn.execute("UPDATE customers SET email = 'ada@new.io' WHERE id = 42")
    crm.drain()

    assert len(crm.events()) == 4  # the three skipped updates never reached cdc
    _check_gap(
        crm,
        "public.customers",
        seen={"name": "Ada", "phone": "555-0199", "updated_by": "sales-app"},
        unseen={"name": "Ada L.", "phone": "555-0900", "updated_by": "bulk-fix"},
    )


def test_mariadb_changes_kept_out_of_the_binlog(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, MYSQL_SCHEMA, ["customers"], target_sql=MYSQL_TARGET)
    with erp.config.open("a") as config:
        config.write(_rules(f"{erp.source_db}.customers") + AUTOMATIC)
    erp.setup()
    erp.execute(
        "INSERT INTO customers VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import'),"
        " (43, 'Grace', '555-0200', 'grace@x.io', 'import')",
        "UPDATE customers SET phone = '555-0199', updated_by = 'sales-app' WHERE id = 42",
    )
    erp.drain()
    assert len(erp.events()) == 3

    # a session that keeps its changes out of the binlog (needs SUPER / BINLOG ADMIN: root has it)
    erp.execute(
        "SET SESSION sql_log_bin = 0",
        "UPDATE customers SET phone = '555-0900', updated_by = 'bulk-fix' WHERE id = 42",
        "UPDATE customers SET name = 'Ada L.' WHERE id = 42",
        "UPDATE customers SET name = 'Grace H.' WHERE id = 43",
    )
    erp.execute("UPDATE customers SET email = 'ada@new.io' WHERE id = 42")  # a new session: logged
    erp.drain()

    assert len(erp.events()) == 4
    _check_gap(
        erp,
        f"{erp.source_db}.customers",
        seen={"name": "Ada", "phone": "555-0199", "updated_by": "sales-app"},
        unseen={"name": "Ada L.", "phone": "555-0900", "updated_by": "bulk-fix"},
    )
