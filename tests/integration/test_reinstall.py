"""cdc set up again after its state directory was deleted, against the same databases.

The new state store numbers its pseudo-sources' transactions from 1 again, while the
targets' position tables still hold the positions of the earlier installation: each store
has an identity kept with every position, and a target treats another installation's
position as absent (with a warning), so that no new write is taken for one already applied.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time

import psycopg
import pymysql
from psycopg import sql

from cdc.config import Settings, TargetSettings
from cdc.model import WriteBack, sync_source
from cdc.pipeline.entities import EntitySync
from cdc.state.identity import WITHOUT_IDENTITY, Installation
from cdc.state.store import StateStore
from cdc.targets.mysql import MysqlTarget
from cdc.targets.postgres import PostgresTarget
from tests.helpers import CdcSetup, add_mysql_mirror, table_rows, wait_for
from tests.integration.test_entity_sync import TwoSources

SCHEMA = "CREATE TABLE public.accounts (id bigint PRIMARY KEY, note text);"
MARIADB_ACCOUNTS = "CREATE TABLE accounts (id BIGINT PRIMARY KEY, note VARCHAR(100))"
FOREIGN = "another cdc installation"
# the position table as a cdc before installation identities made it
OLD_PG_POSITIONS = """CREATE TABLE {} (target text NOT NULL, source text NOT NULL, txn_key text NOT NULL,
    seq bigint NOT NULL, event_id text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, source))"""
OLD_MYSQL_POSITIONS = """CREATE TABLE {} (target VARCHAR(255) NOT NULL, source VARCHAR(255) NOT NULL,
    txn_key TEXT NOT NULL, seq BIGINT NOT NULL, event_id TEXT NOT NULL,
    applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (target, source))"""


def _reinstall(setup: CdcSetup, state_dir) -> None:
    """What a DBA does: delete the state directory and set cdc up again."""
    shutil.rmtree(state_dir)
    setup.setup()


# -- the state store's identity ------------------------------------------------------


def test_a_new_store_has_an_identity_that_stays(tmp_path):
    store = StateStore(tmp_path)
    first = store.installation
    store.close()
    assert first.id and not first.upgraded
    again = StateStore(tmp_path)
    assert again.installation == first
    again.close()
    assert StateStore(tmp_path, readonly=True).installation == first
    other = StateStore(tmp_path / "other").installation
    assert other.id != first.id
    assert not other.holds(first.id) and not other.holds(None) and other.holds(other.id)


def test_a_store_older_than_identities_gets_one_and_keeps_its_unmarked_positions(tmp_path):
    StateStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "state.db") as old:  # as a cdc before identities left it
        old.execute("DELETE FROM meta WHERE key LIKE 'installation%'")
    assert StateStore(tmp_path, readonly=True).installation == WITHOUT_IDENTITY
    upgraded = StateStore(tmp_path).installation
    assert upgraded.id and upgraded.upgraded
    assert upgraded.holds(None) and upgraded.holds(upgraded.id) and not upgraded.holds("another")


def test_a_write_back_marker_of_another_installation_marks_nothing_as_seen(tmp_path):
    store = StateStore(tmp_path)
    settings = Settings(
        state_dir=tmp_path,
        sources=[{"name": "crm", "kind": "postgres", "dsn": "postgresql://x/crm", "tables": ["public.customers"]}],
    )
    sync = EntitySync(settings, store)
    own = store.installation.id
    marker = WriteBack("t", sync_source("crm"), "1", 0, own)
    assert WriteBack.from_json(marker.to_json()) == marker
    with store.transaction():  # re-read on the member's stream from before cdc was set up again
        sync.echoed("crm", WriteBack("t", sync_source("crm"), "00000000000000000009", 0, "another"))
        sync.echoed("crm", WriteBack("t", sync_source("crm"), "00000000000000000008", 0, None))
    assert store.get_meta("echoed:crm") is None
    with store.transaction():
        sync.echoed("crm", WriteBack("t", sync_source("crm"), "00000000000000000001", 0, own))
    assert store.get_meta("echoed:crm") == '["00000000000000000001", 0]'


# -- the targets' position tables ----------------------------------------------------


def test_postgres_target_adds_the_column_and_ignores_another_installations_position(pg_server, caplog):
    db = f"reinstall_pg_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with psycopg.connect(pg_server.dsn(db), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA cdc")
        conn.execute(sql.SQL(OLD_PG_POSITIONS).format(sql.Identifier("cdc", "applied_positions")))
        conn.execute("INSERT INTO cdc.applied_positions VALUES ('dwh', 'backfill:crm', '00000000000000000003', 9, 'x')")
    settings = TargetSettings(name="dwh", kind="postgres", dsn=pg_server.dsn(db))
    upgraded = PostgresTarget(settings, installation=Installation("old", upgraded=True))
    upgraded.open()  # the store that wrote it, upgraded: the position is its own
    upgraded.close()
    assert upgraded.position("backfill:crm") == ("00000000000000000003", 9)
    new = PostgresTarget(settings, installation=Installation("new", upgraded=False))
    with caplog.at_level(logging.WARNING, logger="cdc.targets"):
        new.open()
    new.close()
    assert new.position("backfill:crm") is None
    [warning] = [r.getMessage() for r in caplog.records if FOREIGN in r.getMessage()]
    assert "target dwh holds a position of backfill:crm" in warning and "taken as absent" in warning
    with psycopg.connect(pg_server.dsn(db)) as conn:
        assert conn.execute("SELECT installation FROM cdc.applied_positions").fetchall() == [(None,)]


def test_mysql_target_adds_the_column_and_ignores_another_installations_position(mariadb_server, caplog):
    db = f"reinstall_my_{os.getpid()}_{time.monotonic_ns()}"
    conn = pymysql.connect(host=mariadb_server.host, port=mariadb_server.port, user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}`")
        cur.execute(OLD_MYSQL_POSITIONS.format(f"`{db}`.`positions`"))
        cur.execute(
            f"INSERT INTO `{db}`.positions VALUES ('mirror', 'sync:erp', '00000000000000000003', 0, 'x', NOW())"
        )
    settings = TargetSettings(name="mirror", kind="mysql", dsn=mariadb_server.dsn(), position_table=f"{db}.positions")
    new = MysqlTarget(settings, installation=Installation("new", upgraded=False))
    with caplog.at_level(logging.WARNING, logger="cdc.targets"):
        new.open()
    assert new.position("sync:erp") is None
    assert any("target mirror holds a position of sync:erp" in r.getMessage() for r in caplog.records)
    new.close()
    upgraded = MysqlTarget(settings, installation=Installation("old", upgraded=True))
    upgraded.open()
    upgraded.close()
    assert upgraded.position("sync:erp") == ("00000000000000000003", 0)
    with conn.cursor() as cur:
        cur.execute(f"SELECT installation FROM `{db}`.positions")
        assert cur.fetchall() == ((None,),)
        cur.execute(f"DROP DATABASE `{db}`")
    conn.close()


# -- re-installing cdc -------------------------------------------------------------


def test_a_reinstalled_sync_between_postgres_and_mariadb_loses_no_new_write(pg_server, mariadb_server, tmp_path):
    two = TwoSources(pg_server, mariadb_server, tmp_path)
    two.setup()
    with two.running():
        with two.crm() as crm:
            for n in range(1, 4):
                crm.execute("INSERT INTO customers VALUES (%s, 'crm', '1', %s, 10, 'sales-app')", (n, f"c{n}@x.io"))
        with two.erp(two.erp_db) as erp, erp.cursor() as cur:
            for n in range(101, 104):
                cur.execute("INSERT INTO customers VALUES (%s, 'erp', '1', %s, 10, 'erp-user')", (n, f"e{n}@x.io"))
        wait_for(lambda: len(two.crm_rows()) == len(two.erp_rows()) == 6, what="the first rows synced")
        time.sleep(1)  # the echoes back
    _reinstall(two, tmp_path / "state")
    with two.running():
        with two.crm() as crm:
            crm.execute("INSERT INTO customers VALUES (4, 'crm new', '1', 'c4@x.io', 10, 'sales-app')")
            crm.execute("UPDATE customers SET phone = '2', updated_by = 'sales-app' WHERE id = 101")
        with two.erp(two.erp_db) as erp, erp.cursor() as cur:
            cur.execute("INSERT INTO customers VALUES (104, 'erp new', '1', 'e104@x.io', 10, 'erp-user')")
            cur.execute("UPDATE customers SET phone = '3', updated_by = 'erp-user' WHERE id = 1")

        def synced() -> bool:
            crm, erp = two.crm_rows(), two.erp_rows()
            return crm == erp and len(crm) == 8 and {r[0]: r[2] for r in crm}.get(101) == "2"

        wait_for(synced, timeout=30, what="the new writes in the other member\n" + two.daemon_log()[-3000:])
    assert {row[0]: row[2] for row in two.crm_rows()} == {
        1: "3",
        2: "1",
        3: "1",
        4: "1",
        101: "2",
        102: "1",
        103: "1",
        104: "1",
    }
    foreign = [line for line in two.daemon_log().splitlines() if FOREIGN in line]
    assert any("holds a position of sync:erp" in line for line in foreign), foreign
    assert any("holds a position of sync:crm" in line for line in foreign), foreign


class CrmWithMirror(CdcSetup):
    """The CRM database with a postgres target (``dwh``) and a mysql target (``mirror``, MariaDB)."""

    def __init__(self, pg_server, mariadb_server, tmp_path) -> None:
        super().__init__(pg_server, tmp_path, SCHEMA, ["public.accounts"])
        self.mirror_db = f"reinstall_mirror_{os.getpid()}_{time.monotonic_ns()}"
        self.mariadb = mariadb_server
        add_mysql_mirror(self, mariadb_server, self.mirror_db, MARIADB_ACCOUNTS, {"public.accounts": "accounts"})

    def mirror(self) -> pymysql.connections.Connection:
        return pymysql.connect(host=self.mariadb.host, port=self.mariadb.port, user="root", autocommit=True)


def _rows(crm: CrmWithMirror) -> tuple[list[tuple], list[tuple], list[tuple]]:
    with crm.source() as src, crm.target() as dst, crm.mirror() as mirror, mirror.cursor() as cur:
        cur.execute(f"SELECT id, note FROM `{crm.mirror_db}`.accounts ORDER BY id")
        return table_rows(src, "public.accounts"), table_rows(dst, "public.accounts"), [tuple(r) for r in cur]


def test_reinstalled_cdc_writes_every_new_row_into_postgres_mysql_and_jsonl_targets(
    pg_server, mariadb_server, tmp_path
):
    crm = CrmWithMirror(pg_server, mariadb_server, tmp_path)
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO accounts SELECT i, 'first' FROM generate_series(1, 5) i")
    crm.drain()
    result = crm.cdc("backfill", "--source", "crm")  # the earlier installation's backfill: its positions stay
    assert result.returncode == 0, result.stderr
    crm.drain()
    _reinstall(crm, crm.state_dir)
    with crm.source() as conn:
        conn.execute("INSERT INTO accounts SELECT i, 'second' FROM generate_series(6, 8) i")
        conn.execute("UPDATE accounts SET note = 'changed' WHERE id = 1")
    first = crm.drain()
    source, target, mirror = _rows(crm)
    assert len(source) == 8 and source == target == mirror
    with crm.target() as dst, crm.mirror() as mirror, mirror.cursor() as cur:  # lost behind cdc's back
        dst.execute("DELETE FROM accounts")
        cur.execute(f"DELETE FROM `{crm.mirror_db}`.accounts")
    result = crm.cdc("backfill", "--source", "crm")  # the new installation's backfill, numbered from 1 again
    assert result.returncode == 0, result.stderr
    crm.drain()
    source, target, mirror = _rows(crm)
    assert source == target == mirror, (source, target, mirror)
    backfilled = [event["key"]["id"] for event in crm.events() if event["event_id"].startswith("backfill:crm:")]
    assert backfilled == [*range(1, 6), *range(1, 9)]  # the jsonl log: both installations' backfills
    foreign = [line for line in (first.stdout + first.stderr).splitlines() if FOREIGN in line]
    assert {line.split(" holds")[0].rsplit(" ", 1)[-1] for line in foreign} >= {"dwh", "mirror"}, foreign
