"""The throwaway servers really are configured for change data capture, and restart() keeps data."""

from __future__ import annotations

import uuid

import psycopg
import pymysql
import pytest

from devtools.servers import ThrowawayMariaDB, ThrowawayPostgres


def mariadb_connect(server: ThrowawayMariaDB, database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=server.host, port=server.port, user="root", password="", database=database, autocommit=True
    )


def mariadb_value(server: ThrowawayMariaDB, sql: str) -> object:
    with mariadb_connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        assert row is not None
        return row[0]


# -- PostgreSQL --------------------------------------------------------------


def test_pg_dsn_shape(pg_server: ThrowawayPostgres) -> None:
    assert pg_server.host == "127.0.0.1"
    assert pg_server.dsn() == f"postgresql://{pg_server.superuser}@127.0.0.1:{pg_server.port}/postgres"
    assert pg_server.dsn("crm", user="cdc_admin") == f"postgresql://cdc_admin@127.0.0.1:{pg_server.port}/crm"
    assert pg_server.datadir.is_dir()


def test_pg_wal_level_is_logical(pg_server: ThrowawayPostgres) -> None:
    with psycopg.connect(pg_server.dsn()) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


def test_pg_logical_slot_with_pgoutput(pg_server: ThrowawayPostgres) -> None:
    slot = f"test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        row = conn.execute("SELECT plugin, slot_type FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        assert row.fetchone() == ("pgoutput", "logical")
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() == (
            0,
        )


@pytest.mark.server
def test_pg_restart_keeps_data() -> None:
    with ThrowawayPostgres(settings={"wal_sender_timeout": "10s"}) as server:
        port, datadir = server.port, server.datadir
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            assert conn.execute("SHOW wal_sender_timeout").fetchone() == ("10s",)
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO kept VALUES (1, 'ä survives')")
        server.restart()
        assert (server.port, server.datadir) == (port, datadir)
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT name FROM kept WHERE id = 1").fetchone() == ("ä survives",)
            assert conn.execute("SHOW wal_sender_timeout").fetchone() == ("10s",)
    assert not datadir.exists()
    server.stop()  # a second stop is harmless


# -- MariaDB -----------------------------------------------------------------


def test_mariadb_dsn_shape(mariadb_server: ThrowawayMariaDB) -> None:
    assert mariadb_server.host == "127.0.0.1"
    assert mariadb_server.dsn() == f"mysql://root@127.0.0.1:{mariadb_server.port}/"
    assert mariadb_server.dsn("crm") == f"mysql://root@127.0.0.1:{mariadb_server.port}/crm"


def test_mariadb_binlog_settings(mariadb_server: ThrowawayMariaDB) -> None:
    assert mariadb_value(mariadb_server, "SELECT @@binlog_format") == "ROW"
    assert mariadb_value(mariadb_server, "SELECT @@binlog_row_image") == "FULL"
    assert mariadb_value(mariadb_server, "SELECT @@binlog_row_metadata") == "FULL"
    assert mariadb_value(mariadb_server, "SELECT @@log_bin") == 1  # SHOW VARIABLES says ON
    with mariadb_connect(mariadb_server) as conn, conn.cursor() as cur:
        cur.execute("SHOW VARIABLES LIKE 'log_bin'")
        assert cur.fetchone() == ("log_bin", "ON")
    assert mariadb_value(mariadb_server, "SELECT @@character_set_server") == "utf8mb4"


def test_mariadb_write_reaches_binlog(mariadb_server: ThrowawayMariaDB) -> None:
    db = f"binlog_{uuid.uuid4().hex[:8]}"
    with mariadb_connect(mariadb_server) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, name VARCHAR(50))")
        cur.execute("SHOW MASTER STATUS")
        binlog_file = cur.fetchone()[0]
        cur.execute(f"INSERT INTO {db}.t VALUES (1, 'hello')")
        cur.execute("SHOW BINLOG EVENTS IN %s", (binlog_file,))
        events = cur.fetchall()
        cur.execute("SELECT @@gtid_binlog_pos")
        gtid_pos = cur.fetchone()[0]
    event_types = [event[2] for event in events]
    assert "Write_rows_v1" in event_types
    assert any(f"{db}.t" in str(event[5]) or "`t`" in str(event[5]) for event in events if event[2] == "Table_map")
    assert gtid_pos and gtid_pos.startswith("0-1-")


@pytest.mark.server
def test_mariadb_restart_keeps_data() -> None:
    with ThrowawayMariaDB(settings={"binlog_checksum": "NONE"}) as server:
        port, datadir = server.port, server.datadir
        assert mariadb_value(server, "SELECT @@binlog_checksum") == "NONE"
        with mariadb_connect(server) as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE kept")
            cur.execute("CREATE TABLE kept.t (id INT PRIMARY KEY, name VARCHAR(50)) DEFAULT CHARSET utf8mb4")
            cur.execute("INSERT INTO kept.t VALUES (1, 'ä survives')")
        gtid_before = mariadb_value(server, "SELECT @@gtid_binlog_pos")
        server.restart()
        assert (server.port, server.datadir) == (port, datadir)
        assert mariadb_value(server, "SELECT name FROM kept.t WHERE id = 1") == "ä survives"
        assert mariadb_value(server, "SELECT @@gtid_binlog_pos") == gtid_before
    assert not datadir.exists()
    server.stop()  # a second stop is harmless
