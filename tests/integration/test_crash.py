"""SIGKILL the daemon in the middle of a stream: after a restart nothing is lost or applied twice."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

from tests.helpers import CdcSetup, wait_for

SCHEMA = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text NOT NULL, n integer NOT NULL);"
TARGET = (
    SCHEMA
    + """
CREATE TABLE public.applied_log (id bigint, n integer, op text);
CREATE FUNCTION log_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO applied_log VALUES (OLD.id, OLD.n, TG_OP);
    ELSE
        INSERT INTO applied_log VALUES (NEW.id, NEW.n, TG_OP);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER log_applied AFTER INSERT OR UPDATE OR DELETE ON customers
    FOR EACH ROW EXECUTE FUNCTION log_applied();
"""
)


def _workload(crm: CdcSetup, changes: list[int]) -> None:
    """About 12,000 row changes in transactions of 1 to 500 rows: inserts, updates, deletes."""
    with crm.source() as conn:
        next_id = 1
        for round_ in range(40):
            size = 1 if round_ % 4 == 0 else 250
            with conn.transaction():
                conn.execute(
                    "INSERT INTO customers SELECT i, 'c' || i, 0 FROM generate_series(%s::int, %s::int) i",
                    (next_id, next_id + size - 1),
                )
            changes[0] += size
            next_id += size
            with conn.transaction():
                updated = conn.execute(
                    "UPDATE customers SET n = n + 1, name = name || '.' WHERE id %% 3 = %s::int", (round_ % 3,)
                ).rowcount
            changes[0] += updated
            with conn.transaction():
                deleted = conn.execute("DELETE FROM customers WHERE id %% 97 = %s::int", (round_ % 97,)).rowcount
            changes[0] += deleted
            time.sleep(0.05)


def test_sigkill_mid_stream_loses_and_repeats_nothing(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.customers"], target_sql=TARGET)
    crm.setup()
    changes = [0]
    writer = threading.Thread(target=_workload, args=(crm, changes))
    daemon = crm.start()
    writer.start()
    try:
        for threshold in (1500, 5000):
            wait_for(lambda: len(crm.events()) >= threshold, timeout=120, what=f"{threshold} events")
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=30)
            daemon = crm.start()
        writer.join(timeout=300)
        wait_for(lambda: crm.daemon_log().count("streaming slot") == 3, what="the third start")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    crm.drain()
    assert changes[0] >= 10_000

    events = crm.events()
    ids = Counter(event["event_id"] for event in events)
    assert max(ids.values()) == 1, [i for i, c in ids.items() if c > 1][:5]
    assert len(events) == changes[0]

    with crm.source() as src, crm.target() as dst:
        assert (
            src.execute("SELECT id, name, n FROM customers ORDER BY id").fetchall()
            == dst.execute("SELECT id, name, n FROM customers ORDER BY id").fetchall()
        )
        applied = dst.execute("SELECT id, n, op FROM applied_log").fetchall()
    assert len(applied) == changes[0]
    assert len(set(applied)) == len(applied)
