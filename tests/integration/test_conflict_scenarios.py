"""Conflicts created for real by concurrent sessions on PostgreSQL, detected by the daemon."""

from __future__ import annotations

import json

import pytest

from tests.helpers import CdcSetup

SCHEMA = """
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text,
    lock_version integer NOT NULL DEFAULT 1, updated_by text, updated_at timestamptz DEFAULT now());
CREATE TABLE public.deals (id bigint PRIMARY KEY, title text, stage text, updated_by text);
CREATE TABLE public.counters (id bigint PRIMARY KEY, x bigint NOT NULL);
"""
CONFIG = """
[[tables]]
match = "public.customers"
writer_column = "updated_by"
version_column = "lock_version"
ignore_columns = ["updated_at"]
natural_keys = [["email"]]

[[tables]]
match = "public.deals"
writer_column = "updated_by"
status_column = "stage"
status_order = ["lead", "qualified", "proposal", "won"]
"""


@pytest.fixture
def crm(pg_server, tmp_path):
    setup = CdcSetup(
        pg_server, tmp_path, SCHEMA, ["public.customers", "public.deals", "public.counters"], extra_config=CONFIG
    )
    setup.setup()
    with setup.source() as conn:
        conn.execute(
            "INSERT INTO customers (id, name, phone, email, updated_by)"
            " VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import')"
        )
        conn.execute("INSERT INTO deals VALUES (7, 'Renewal', 'proposal', 'sales-app')")
        conn.execute("INSERT INTO counters VALUES (1, 100)")
    return setup


def _conflicts(crm: CdcSetup, *args: str) -> list[dict]:
    result = crm.cdc("conflicts", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_stale_full_row_save_by_another_application(crm):
    sales, erp = crm.source(), crm.source()
    stale = erp.execute("SELECT name, phone, email, lock_version FROM customers WHERE id = 42").fetchone()
    sales.execute(
        "UPDATE customers SET phone = '555-0199', lock_version = lock_version + 1,"
        " updated_by = 'sales-app', updated_at = now() WHERE id = 42"
    )
    # erp-sync saves the whole row it read before, with its own change of the e-mail
    erp.execute(
        "UPDATE customers SET name = %s, phone = %s, email = 'ada@erp.example', lock_version = %s + 1,"
        " updated_by = 'erp-sync', updated_at = now() WHERE id = 42",
        (stale[0], stale[1], stale[3]),
    )
    sales.close(), erp.close()
    crm.drain()
    found = _conflicts(crm, "--type", "lost_update")
    assert [(c["rule"], c["fields"]) for c in found] == [
        ("a stale full-row save reverted the previous write", ["phone"])
    ]
    stale_save = found[0]
    assert stale_save["key"] == '{"id":42}' and stale_save["table"] == "public.customers"
    assert [e["writer"] for e in stale_save["events"]] == ["sales-app", "erp-sync"]
    assert stale_save["events"][0]["after"] == {"phone": "555-0199"}
    assert "phone set by sales-app at" in stale_save["explanation"]
    assert "was reverted by erp-sync at" in stale_save["explanation"]
    event = [e for e in crm.events() if e["writer"] == "erp-sync"][0]
    assert sorted(event["conflicts"]) == sorted(c["id"] for c in found)
    shown = crm.cdc("conflicts", "show", stale_save["id"])
    assert shown.returncode == 0 and "reverted by erp-sync" in shown.stdout


def test_status_moving_backwards_and_delete_racing_an_update(crm):
    with crm.source() as conn:
        conn.execute("UPDATE deals SET stage = 'won', updated_by = 'sales-app' WHERE id = 7")
        conn.execute("UPDATE deals SET stage = 'qualified', updated_by = 'erp-sync' WHERE id = 7")
        conn.execute(
            "UPDATE customers SET phone = '555-0300', lock_version = 2, updated_by = 'sales-app' WHERE id = 42"
        )
        conn.execute("DELETE FROM customers WHERE id = 42")
    crm.drain()
    kinds = {(c["type"], c["table"]) for c in _conflicts(crm)}
    assert ("state_regression", "public.deals") in kinds
    assert ("update_delete", "public.customers") in kinds
    regression = _conflicts(crm, "--type", "state_regression")[0]
    assert regression["evidence"] == {
        "from": "won",
        "to": "qualified",
        "order": ["lead", "qualified", "proposal", "won"],
    }


def test_duplicate_natural_key(crm):
    with crm.source() as conn:
        conn.execute("INSERT INTO customers (id, name, email, updated_by) VALUES (43, 'Ada L.', 'ada@x.io', 'web')")
    crm.drain()
    found = _conflicts(crm, "--type", "duplicate_key")
    assert [(c["key"], c["fields"], c["evidence"]["owner_key"]) for c in found] == [
        ('{"id":43}', ["email"], '{"id":42}')
    ]


def test_benign_counters_and_own_edits_raise_nothing(crm):
    with crm.source() as conn:
        for delta in (5, -5, 3, -3, 7, 1, -1):
            conn.execute("UPDATE counters SET x = x + %s WHERE id = 1", (delta,))
        for phone in ("555-1", "555-2", "555-0100"):
            conn.execute(
                "UPDATE customers SET phone = %s, lock_version = lock_version + 1, updated_by = 'sales-app'"
                " WHERE id = 42",
                (phone,),
            )
    crm.drain()
    assert _conflicts(crm) == []


def test_stale_optimistic_lock_write(crm):
    first, second = crm.source(), crm.source()
    read_version = second.execute("SELECT lock_version FROM customers WHERE id = 42").fetchone()[0]
    first.execute(
        "UPDATE customers SET name = 'Ada Lovelace', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42"
    )
    # the second session writes the version it computed from its stale read, without checking it
    second.execute(
        "UPDATE customers SET phone = '555-0400', lock_version = %s, updated_by = 'erp-sync' WHERE id = 42",
        (read_version + 1,),
    )
    first.close(), second.close()
    crm.drain()
    found = _conflicts(crm, "--type", "lost_update")
    assert [(c["fields"], c["evidence"]) for c in found] == [
        (["lock_version"], {"previous_version": 2, "new_version": 2})
    ]
    assert [e["writer"] for e in found[0]["events"]] == ["sales-app", "erp-sync"]


def test_manual_policy_holds_the_key_until_a_person_resolves_it(pg_server, tmp_path):
    crm = CdcSetup(
        pg_server,
        tmp_path,
        SCHEMA,
        ["public.customers"],
        extra_config=CONFIG.replace(
            'ignore_columns = ["updated_at"]', 'ignore_columns = ["updated_at"]\npolicy = "manual"'
        ),
    )
    crm.setup()
    with crm.source() as conn:
        conn.execute(
            "INSERT INTO customers (id, name, phone, email, updated_by)"
            " VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import')"
        )
    crm.drain()
    sales, erp = crm.source(), crm.source()
    stale = erp.execute("SELECT name, phone FROM customers WHERE id = 42").fetchone()
    sales.execute("UPDATE customers SET phone = '555-0199', lock_version = 2, updated_by = 'sales-app' WHERE id = 42")
    erp.execute(
        "UPDATE customers SET name = %s, phone = %s, email = 'ada@erp.example', lock_version = 3,"
        " updated_by = 'erp-sync' WHERE id = 42",
        stale,
    )
    sales.close(), erp.close()
    crm.drain()
    pending = _conflicts(crm, "--status", "pending")
    assert [(c["type"], c["fields"], c["resolution"]) for c in pending] == [
        ("lost_update", ["phone"], {"policy": "manual"})
    ]
    assert json.loads(crm.cdc("status", "--json").stdout)["open_conflicts"] == {"lost_update": 1}
    assert "open conflicts: 1 (1 lost_update; see cdc conflicts list)" in crm.cdc("status").stdout
    with crm.target() as dst:  # the target keeps the last agreed row
        assert dst.execute("SELECT phone, email, updated_by FROM customers").fetchall() == [
            ("555-0199", "ada@x.io", "sales-app")
        ]

    resolved = crm.cdc("conflicts", "resolve", pending[0]["id"], "--merge")
    assert resolved.returncode == 0, resolved.stderr
    assert "555-0199" in resolved.stdout and "ada@erp.example" in resolved.stdout
    again = crm.cdc("conflicts", "resolve", pending[0]["id"], "--merge")
    assert again.returncode == 1 and "already resolved" in again.stderr
    crm.drain()
    with crm.target() as dst:  # the merged row: sales-app's phone and erp-sync's e-mail
        assert dst.execute("SELECT phone, email, updated_by FROM customers").fetchall() == [
            ("555-0199", "ada@erp.example", "erp-sync")
        ]
    assert _conflicts(crm, "--status", "resolved_by_hand")[0]["resolution"]["merged"] is True
    with crm.source() as conn:  # the key is released: later changes flow again
        conn.execute("UPDATE customers SET name = 'Ada K.', lock_version = 4, updated_by = 'erp-sync' WHERE id = 42")
    crm.drain()
    with crm.target() as dst:
        assert dst.execute("SELECT name, email FROM customers").fetchall() == [("Ada K.", "ada@erp.example")]
    resolutions = [e for e in crm.events() if e["event_id"].startswith("review:")]
    assert len(resolutions) == 1 and resolutions[0]["conflicts"] == [pending[0]["id"]]


def _lost_update_with_repair(pg_server, tmp_path, repair: str) -> CdcSetup:
    """sales-app's phone change reverted by erp-sync's stale save, with ``repair`` on the table."""
    crm = CdcSetup(
        pg_server,
        tmp_path,
        SCHEMA,
        ["public.customers"],
        extra_config=CONFIG.replace(
            'ignore_columns = ["updated_at"]', f'ignore_columns = ["updated_at"]\nrepair = "{repair}"'
        ),
    )
    crm.setup()
    with crm.source() as conn:
        conn.execute(
            "INSERT INTO customers (id, name, phone, email, updated_by)"
            " VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import')"
        )
        conn.execute("UPDATE customers SET phone = '555-0199', lock_version = 2, updated_by = 'sales-app'")
        conn.execute(
            "UPDATE customers SET phone = '555-0100', email = 'b@x.io', lock_version = 3, updated_by = 'erp-sync'"
        )
    crm.drain()
    return crm


def test_repair_proposes_the_row_that_restores_the_lost_change(pg_server, tmp_path):
    crm = _lost_update_with_repair(pg_server, tmp_path, "propose")
    [conflict] = _conflicts(crm, "--status", "pending")
    proposed = conflict["resolution"]["proposed_row"]
    assert (proposed["phone"], proposed["email"]) == ("555-0199", "b@x.io")
    with crm.target() as dst:  # the source row stays the truth until a person accepts the proposal
        assert dst.execute("SELECT phone, email FROM customers").fetchall() == [("555-0100", "b@x.io")]


def test_repair_writes_the_restored_row_back_into_the_source(pg_server, tmp_path):
    crm = _lost_update_with_repair(pg_server, tmp_path, "write")
    crm.drain()  # the written-back row comes back on the stream
    [conflict] = _conflicts(crm, "--type", "lost_update")
    assert conflict["status"] == "auto_resolved" and conflict["resolution"]["written_back"]
    with crm.source() as conn:
        rows = conn.execute("SELECT id, name, phone, email FROM customers").fetchall()
    assert rows == [(42, "Ada", "555-0199", "b@x.io")]
    with crm.target() as dst:  # and reached the target as the source's own change
        assert dst.execute("SELECT id, name, phone, email FROM customers").fetchall() == rows
    echoes = [e for e in crm.events() if e.get("echo")]
    assert [(e["key"], e["after"]["phone"], e["conflicts"]) for e in echoes] == [({"id": 42}, "555-0199", [])]


def test_truncate_and_key_changes_end_rows_without_false_duplicates(crm):
    with crm.source() as conn:
        conn.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x.io'), (2, 'b', 'b@x.io')")
        conn.execute("TRUNCATE customers")
        conn.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x.io'), (3, 'b', 'b@x.io')")
        conn.execute("INSERT INTO customers (id, name, email) VALUES (50, 'k', 'k@x.io')")
        conn.execute("UPDATE customers SET id = 51 WHERE id = 50")
        conn.execute("INSERT INTO customers (id, name, email) VALUES (50, 'n', 'n@x.io')")
    crm.drain()
    assert _conflicts(crm) == []
    with crm.source() as conn:  # a real duplicate is still caught after all that
        conn.execute("INSERT INTO customers (id, name, email) VALUES (60, 'dup', 'k@x.io')")
    crm.drain()
    assert [(c["type"], c["key"], c["evidence"]["owner_key"]) for c in _conflicts(crm)] == [
        ("duplicate_key", '{"id":60}', '{"id":51}')
    ]
