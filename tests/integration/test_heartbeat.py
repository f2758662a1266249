"""An idle captured table does not make the slot retain WAL while other tables are busy."""

from __future__ import annotations

import signal
import time

from cdc.sources.postgres.protocol import parse_lsn
from tests.helpers import CdcSetup, wait_for

SCHEMA = """
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text);
CREATE TABLE public.page_views (id bigserial PRIMARY KEY, url text, at timestamptz DEFAULT now());
"""


def _slot_lsn(conn, slot: str) -> int:
    row = conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    return parse_lsn(row[0])


def test_slot_advances_while_captured_tables_are_idle(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"])
    crm.setup()
    daemon = crm.start()
    try:
        wait_for(lambda: "streaming slot" in crm.daemon_log(), what="the daemon to stream")
        with crm.source() as conn:
            start = _slot_lsn(conn, crm.slot)
            samples = []
            for _ in range(8):
                conn.execute(
                    "INSERT INTO page_views (url) SELECT 'https://example.com/' || i FROM generate_series(1, 2000) i"
                )
                written = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
                time.sleep(1)
                samples.append((written, _slot_lsn(conn, crm.slot)))
            last_written = samples[-1][0]
            final = wait_for(
                lambda: (lsn := _slot_lsn(conn, crm.slot)) >= last_written and lsn,
                timeout=30,
                what="the slot to pass the busy table's last write",
            )
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    confirmed = [lsn for _, lsn in samples]
    assert confirmed == sorted(confirmed)
    assert len(set(confirmed)) >= 4, "the confirmed position should keep moving"
    assert final > start
    assert samples[2][1] > samples[0][0], "the slot followed the busy table within seconds"
    assert crm.events() == []
