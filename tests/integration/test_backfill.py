"""``cdc backfill``: rows re-read from the source while the daemon streams bring a target in line."""

from __future__ import annotations

import json
import random
import time

from tests.helpers import CdcSetup, concurrent_writers, table_rows, wait_for

SCHEMA = "CREATE TABLE public.accounts (id bigint PRIMARY KEY, n bigint NOT NULL, note text);"


def _equal(crm: CdcSetup) -> bool:
    with crm.source() as src, crm.target() as dst:
        return table_rows(src, "public.accounts") == table_rows(dst, "public.accounts")


def test_a_corrupted_target_is_repaired_by_backfill_while_writes_go_on(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.accounts"])
    crm.setup()
    with crm.running() as daemon:
        with crm.source() as conn:
            conn.execute("INSERT INTO accounts SELECT i, 0, md5(i::text) FROM generate_series(1, 5000) i")
        wait_for(lambda: _equal(crm), timeout=120, what="the initial rows in the target\n" + crm.daemon_log())
        with crm.target() as dst:  # behind cdc's back
            dst.execute("DELETE FROM accounts WHERE id % 17 = 0")
            dst.execute("UPDATE accounts SET note = 'corrupted', n = -1 WHERE id % 13 = 0")

        def write(rng: random.Random, conn) -> None:
            key = rng.randint(1, 5200)
            if key > 5000:
                conn.execute("INSERT INTO accounts VALUES (%s, 0, 'new') ON CONFLICT DO NOTHING", (key,))
            else:
                conn.execute("UPDATE accounts SET n = n + 1 WHERE id = %s", (key,))
            time.sleep(0.002)

        with concurrent_writers(crm.source, write):
            time.sleep(0.5)
            planned = crm.cdc("backfill", "--source", "crm", "--dry-run", "--json")
            assert planned.returncode == 0, planned.stderr
            assert json.loads(planned.stdout)["tables"]["public.accounts"] >= 5000
            result = crm.cdc("backfill", "--source", "crm", "--chunk-rows", "700")
            assert result.returncode == 0, result.stdout + result.stderr
            assert "row(s) re-read" in result.stdout
            time.sleep(1)
        wait_for(lambda: _equal(crm), timeout=120, what="the target back in line\n" + crm.daemon_log())


def test_backfill_of_a_where_filter_into_one_target(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.accounts"])
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO accounts SELECT i, i, 'ok' FROM generate_series(1, 500) i")
    crm.drain()
    with crm.target() as dst:
        dst.execute("DELETE FROM accounts WHERE id <= 20 OR id > 480")
    result = crm.cdc("backfill", "--source", "crm", "--where", "id <= 20 AND note LIKE 'o%'", "--target", "dwh")
    assert result.returncode == 0, result.stderr
    assert "20 row(s) re-read" in result.stdout
    crm.drain()
    with crm.target() as dst:
        ids = [row[0] for row in dst.execute("SELECT id FROM accounts ORDER BY id")]
    assert ids == list(range(1, 481))  # the filter's rows only
    bad = crm.cdc("backfill", "--source", "crm", "--where", "no_such_column = 1")
    assert bad.returncode == 2 and "no_such_column" in bad.stderr and "check --where" in bad.stderr
