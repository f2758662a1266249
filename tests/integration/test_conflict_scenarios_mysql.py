"""Conflicts created for real by concurrent sessions on MariaDB, detected by the daemon.

The MariaDB counterpart of test_conflict_scenarios.py: each anomaly is made by two or more
pymysql sessions (interleaved transactions, or a statement blocked on another session's row
lock), streamed from the binlog by ``cdc run --drain``, and checked in ``cdc conflicts list
--json``: the type, the key, the fields, and the ids of the events involved, matched to the
events the jsonl target received.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tests.helpers import MysqlCdcSetup, wait_for

SCHEMA = [
    "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100), phone VARCHAR(40), email VARCHAR(200),"
    " lock_version INT NOT NULL DEFAULT 1, updated_by VARCHAR(40),"
    " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
    "CREATE TABLE deals (id BIGINT PRIMARY KEY, title VARCHAR(100), stage VARCHAR(20), updated_by VARCHAR(40))",
]
ORDER = ["lead", "qualified", "proposal", "won"]


def _rules(db: str) -> str:
    return f"""
[[tables]]
match = "{db}.customers"
writer_column = "updated_by"
version_column = "lock_version"
ignore_columns = ["updated_at"]
natural_keys = [["email"]]

[[tables]]
match = "{db}.deals"
writer_column = "updated_by"
status_column = "stage"
status_order = {json.dumps(ORDER)}
"""


@pytest.fixture
def erp(mariadb_server, pg_server, tmp_path):
    setup = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, SCHEMA, ["customers", "deals"], targets_toml="")
    with setup.config.open("a") as config:
        config.write(_rules(setup.source_db))
    setup.setup()
    setup.execute(
        "INSERT INTO customers (id, name, phone, email, updated_by)"
        " VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import')",
        "INSERT INTO deals VALUES (7, 'Renewal', 'proposal', 'sales-app')",
    )
    return setup


# -- sessions ----------------------------------------------------------------------------


def _session(erp: MysqlCdcSetup):
    """A session of its own (autocommit; ``conn.begin()`` opens a transaction)."""
    conn = erp.mysql(erp.source_db)
    with conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    return conn


def _run(conn, statement: str, args: Any = None) -> int:
    with conn.cursor() as cur:
        return cur.execute(statement, args)


def _one(conn, statement: str, args: Any = None) -> tuple:
    with conn.cursor() as cur:
        cur.execute(statement, args)
        return cur.fetchone()


class _Blocked:
    """A statement run on ``conn`` in a thread, started and left waiting for a row lock."""

    def __init__(self, erp: MysqlCdcSetup, conn, statement: str, args: Any = None) -> None:
        self.error: BaseException | None = None
        self.rowcount = -1
        thread_id = conn.thread_id()

        def run() -> None:
            try:
                self.rowcount = _run(conn, statement, args)
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        with erp.mysql() as watch:
            wait_for(
                lambda: (
                    self.error is not None
                    or _one(
                        watch,
                        "SELECT COUNT(*) FROM information_schema.INNODB_TRX"
                        " WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'",
                        (thread_id,),
                    )[0]
                ),
                timeout=30,
                what="the statement to wait for the row lock",
            )
        assert self.error is None, self.error

    def join(self) -> int:
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the blocked statement never finished"
        if self.error is not None:
            raise self.error
        return self.rowcount


# -- reading what cdc found ----------------------------------------------------------------


def _conflicts(erp: MysqlCdcSetup, *args: str) -> list[dict]:
    result = erp.cdc("conflicts", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _row_events(erp: MysqlCdcSetup, table: str, id_: int) -> list[dict]:
    """The jsonl target's events of one row, in stream order."""
    return [e for e in erp.events() if e["table"] == table and e["key"] == {"id": id_}]


def _ids(conflict: dict) -> list[str]:
    return [e["event_id"] for e in conflict["events"]]


# -- the scenarios -------------------------------------------------------------------------


def test_stale_full_row_save_by_another_application(erp):
    sales, sync = _session(erp), _session(erp)
    sync.begin()  # erp-sync reads the row in its transaction ...
    stale = _one(sync, "SELECT name, phone, email, lock_version FROM customers WHERE id = 42")
    # ... sales changes the phone meanwhile ...
    _run(
        sales,
        "UPDATE customers SET phone = '555-0199', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42",
    )
    # ... and erp-sync saves the whole row it read, with its own change of the e-mail
    _run(
        sync,
        "UPDATE customers SET name = %s, phone = %s, email = 'ada@erp.example', lock_version = %s + 1,"
        " updated_by = 'erp-sync' WHERE id = 42",
        (stale[0], stale[1], stale[3]),
    )
    sync.commit()
    sales.close(), sync.close()
    erp.drain()

    insert, by_sales, by_sync = _row_events(erp, "customers", 42)
    assert (by_sales["writer"], by_sync["writer"]) == ("sales-app", "erp-sync")
    assert by_sync["after"]["phone"] == "555-0100" and by_sync["changed"] == [
        "phone",
        "email",
        "updated_by",
        "updated_at",
    ]
    found = _conflicts(erp)
    assert [(c["type"], c["key"], c["fields"]) for c in found] == [("lost_update", '{"id":42}', ["phone"])]
    lost = found[0]
    assert lost["table"] == f"{erp.source_db}.customers"
    assert lost["rule"] == "a stale full-row save reverted the previous write"
    assert _ids(lost) == [by_sales["event_id"], by_sync["event_id"]]
    assert [e["writer"] for e in lost["events"]] == ["sales-app", "erp-sync"]
    assert lost["evidence"] == {"lost": {"phone": "555-0199"}, "restored": {"phone": "555-0100"}}
    assert "phone set by sales-app at" in lost["explanation"]
    assert "was reverted by erp-sync at" in lost["explanation"]
    assert (lost["severity"], lost["id"]) == ("error", f"lost_update:{by_sync['event_id']}")
    assert by_sync["conflicts"] == [lost["id"]] and by_sales["conflicts"] == [] == insert["conflicts"]


def test_stale_optimistic_lock_write(erp):
    first, second = _session(erp), _session(erp)
    second.begin()
    read_version = _one(second, "SELECT lock_version FROM customers WHERE id = 42")[0]
    _run(
        first,
        "UPDATE customers SET name = 'Ada Lovelace', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42",
    )
    # the second session writes the version it computed from its stale read, without checking it;
    # it changes the phone too (MariaDB does not log an UPDATE that changes no value)
    _run(
        second,
        "UPDATE customers SET phone = '555-0400', lock_version = %s, updated_by = 'erp-sync' WHERE id = 42",
        (read_version + 1,),
    )
    second.commit()
    first.close(), second.close()
    erp.drain()

    _, by_sales, by_sync = _row_events(erp, "customers", 42)
    assert by_sales["after"]["lock_version"] == by_sync["after"]["lock_version"] == 2
    found = _conflicts(erp)
    assert [(c["type"], c["key"], c["fields"], c["evidence"]) for c in found] == [
        ("lost_update", '{"id":42}', ["lock_version"], {"previous_version": 2, "new_version": 2})
    ]
    assert found[0]["rule"] == "version_column did not advance (a write based on a stale read)"
    assert _ids(found[0]) == [by_sales["event_id"], by_sync["event_id"]]
    assert [e["writer"] for e in found[0]["events"]] == ["sales-app", "erp-sync"]
    assert by_sync["conflicts"] == [found[0]["id"]]


def test_two_writers_editing_the_same_field(erp):
    sales, marketing = _session(erp), _session(erp)
    sales.begin()
    _run(
        sales,
        "UPDATE customers SET phone = '555-0111', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42",
    )
    # marketing automation edits the same field at the same time: it waits for sales' row lock
    blocked = _Blocked(
        erp,
        marketing,
        "UPDATE customers SET phone = '555-0222', lock_version = lock_version + 1,"
        " updated_by = 'marketing' WHERE id = 42",
    )
    sales.commit()
    assert blocked.join() == 1
    sales.close(), marketing.close()
    erp.drain()

    _, by_sales, by_marketing = _row_events(erp, "customers", 42)
    assert [e["after"]["lock_version"] for e in (by_sales, by_marketing)] == [2, 3]
    found = _conflicts(erp)
    assert [(c["type"], c["key"], c["fields"]) for c in found] == [("concurrent_overwrite", '{"id":42}', ["phone"])]
    overwrite = found[0]
    assert _ids(overwrite) == [by_sales["event_id"], by_marketing["event_id"]]
    assert [e["writer"] for e in overwrite["events"]] == ["sales-app", "marketing"]
    assert overwrite["evidence"] == {"overwritten": {"phone": "555-0111"}, "written": {"phone": "555-0222"}}
    assert "phone set by sales-app at" in overwrite["explanation"]
    assert "overwritten by marketing at" in overwrite["explanation"]
    assert by_marketing["conflicts"] == [overwrite["id"]]


def test_delete_racing_an_update(erp):
    sales, cleanup = _session(erp), _session(erp)
    sales.begin()
    _run(
        sales,
        "UPDATE customers SET phone = '555-0300', lock_version = lock_version + 1,"
        " updated_by = 'sales-app' WHERE id = 42",
    )
    # a clean-up job deletes the customer while sales is still saving it: it waits for the lock
    blocked = _Blocked(erp, cleanup, "DELETE FROM customers WHERE id = 42")
    sales.commit()
    assert blocked.join() == 1
    sales.close(), cleanup.close()
    erp.drain()

    _, update, delete = _row_events(erp, "customers", 42)
    assert (update["op"], delete["op"]) == ("update", "delete")
    assert update["txid"] != delete["txid"]
    found = _conflicts(erp)
    assert [(c["type"], c["key"], c["fields"]) for c in found] == [("update_delete", '{"id":42}', ["phone"])]
    assert _ids(found[0]) == [update["event_id"], delete["event_id"]]
    assert [e["op"] for e in found[0]["events"]] == ["update", "delete"]
    assert found[0]["evidence"] == {"updated": {"phone": "555-0300"}}
    assert "that update is lost" in found[0]["explanation"]
    assert delete["conflicts"] == [found[0]["id"]]


def test_status_moving_backwards(erp):
    sales, sync = _session(erp), _session(erp)
    sync.begin()
    _one(sync, "SELECT stage FROM deals WHERE id = 7")  # erp-sync still sees 'proposal'
    _run(sales, "UPDATE deals SET stage = 'won', updated_by = 'sales-app' WHERE id = 7")
    _run(sync, "UPDATE deals SET stage = 'qualified', updated_by = 'erp-sync' WHERE id = 7")
    sync.commit()
    sales.close(), sync.close()
    erp.drain()

    _, won, back = _row_events(erp, "deals", 7)
    assert (won["after"]["stage"], back["before"]["stage"], back["after"]["stage"]) == ("won", "won", "qualified")
    found = {c["type"]: c for c in _conflicts(erp)}
    # two writers changed the stage within the window, and the second moved it backwards: both are reported
    assert sorted(found) == ["concurrent_overwrite", "state_regression"]
    regression = found["state_regression"]
    assert (regression["key"], regression["fields"], regression["table"]) == (
        '{"id":7}',
        ["stage"],
        f"{erp.source_db}.deals",
    )
    assert regression["evidence"] == {"from": "won", "to": "qualified", "order": ORDER}
    assert _ids(regression) == [back["event_id"]]
    assert regression["events"][0]["writer"] == "erp-sync"
    overwrite = found["concurrent_overwrite"]
    assert (overwrite["key"], overwrite["fields"]) == ('{"id":7}', ["stage"])
    assert _ids(overwrite) == [won["event_id"], back["event_id"]]
    assert sorted(back["conflicts"]) == sorted(c["id"] for c in found.values())


def test_duplicate_insert_of_a_natural_key(erp):
    web, sync = _session(erp), _session(erp)
    # two systems create the same new customer at the same time, neither seeing the other's row
    web.begin()
    sync.begin()
    _run(web, "INSERT INTO customers (id, name, email, updated_by) VALUES (50, 'Grace', 'grace@x.io', 'web-form')")
    _run(sync, "INSERT INTO customers (id, name, email, updated_by) VALUES (51, 'Grace H.', 'grace@x.io', 'erp-sync')")
    web.commit()
    sync.commit()
    web.close(), sync.close()
    erp.drain()

    [first] = _row_events(erp, "customers", 50)
    [second] = _row_events(erp, "customers", 51)
    found = _conflicts(erp)
    assert [(c["type"], c["key"], c["fields"], c["evidence"]["owner_key"]) for c in found] == [
        ("duplicate_key", '{"id":51}', ["email"], '{"id":50}')
    ]
    assert found[0]["evidence"]["natural_key"] == {"email": "grace@x.io"}
    assert _ids(found[0]) == [first["event_id"], second["event_id"]]
    assert [e["writer"] for e in found[0]["events"]] == ["web-form", "erp-sync"]
    assert second["conflicts"] == [found[0]["id"]] and first["conflicts"] == []
