"""``cdc snapshot`` and ``cdc backfill`` on MariaDB: a snapshot the stream could not follow is
refused before it loads anything; with ``--where`` the count and the read see the same rows,
and a condition cannot undo the key range of a chunk with parentheses of its own."""

from __future__ import annotations

import json

from tests.helpers import MysqlCdcSetup

TABLE = [
    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20))",
    "INSERT INTO customers SELECT seq, CONCAT('c', seq) FROM seq_1_to_12",
]
TARGET = "CREATE TABLE public.customers (id integer PRIMARY KEY, name text);"


def test_a_where_with_its_own_parentheses_reads_what_it_counts(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, TABLE, ["customers"], TARGET)
    erp.setup()
    erp.drain()
    where = "id <= 4) OR (id >= 11"
    counted = erp.cdc("backfill", "--source", "erp", "--where", where, "--dry-run", "--json", timeout=30)
    assert counted.returncode == 0, counted.stdout + counted.stderr
    assert list(json.loads(counted.stdout)["tables"].values()) == [6], counted.stdout
    result = erp.cdc("backfill", "--source", "erp", "--chunk-rows", "2", "--where", where, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    erp.drain()
    backfilled = [e["key"]["id"] for e in erp.events() if e["source"] == "erp" and "backfill" in json.dumps(e)]
    assert sorted(backfilled) == [1, 2, 3, 4, 11, 12], backfilled


def test_a_snapshot_the_stream_could_not_follow_is_refused_before_it_loads(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, TABLE, ["customers"], TARGET)
    erp.setup()
    with erp.mysql() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@server_id")
        own = cur.fetchone()[0]
    refused = erp.cdc("snapshot", timeout=30, CDC_SOURCES__ERP__SERVER_ID=str(own))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot snapshot" in lines[0] and "server_id" in lines[0], refused.stderr
    assert erp.events() == []
    with erp.target() as dst:
        assert dst.execute("SELECT count(*) FROM public.customers").fetchone()[0] == 0
    loaded = erp.cdc("snapshot", timeout=30)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    erp.drain()
    with erp.target() as dst:
        assert dst.execute("SELECT count(*) FROM public.customers").fetchone()[0] == 12
