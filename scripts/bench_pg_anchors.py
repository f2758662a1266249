"""The two anchors ``scripts/bench_pg.py`` times beside ``cdc run --drain``: ``pg_recvlogical`` and
PostgreSQL's own logical replication subscription, reading the same WAL as cdc.

Both are set up before the workload is written (``create_anchors``), so that their slots hold
all of it:

* ``raw``: a pgoutput slot ``bench_raw``. ``measure_raw`` runs ``pg_recvlogical --start`` on it
  with cdc's pgoutput options (proto_version 1, cdc's publication) up to ``--endpos`` = the
  workload's end LSN, writing the stream to a file: decoding and shipping only, the ceiling
  of any pgoutput consumer on this server. The slot must have confirmed the end LSN afterwards.
* ``sub``: a publication ``bench_sub_pub`` of the table, a pgoutput slot ``bench_sub`` made with
  ``pg_create_logical_replication_slot`` (CREATE SUBSCRIPTION cannot create a slot on its own
  cluster: it would wait for its own transaction), and in the subscriber database (which holds
  the table too) ``CREATE SUBSCRIPTION bench_sub CONNECTION '<source dsn>' PUBLICATION
  bench_sub_pub WITH (create_slot = false, slot_name = 'bench_sub', copy_data = false, enabled
  = false)``; the throwaway server trusts local connections, so it needs no password.
  ``measure_sub`` runs ``ALTER SUBSCRIPTION bench_sub ENABLE`` and then, every ~5 ms, compares
  the subscriber's copy of the workload's last changed row with the source's; its time is
  until they are equal. The apply worker applies transactions whole and in commit order, so
  by then every one is applied; afterwards the subscriber table's count and checksum must
  equal the source's (the ``verify`` callback). As a detail it notes when the slot's
  ``confirmed_flush_lsn`` reached the workload's end LSN: the subscription commits
  asynchronously (``synchronous_commit = off`` is its default) and reports its flush position
  only now and then, which can add up to about a second that is not apply work. Finally
  ``DROP SUBSCRIPTION`` drops the subscription and its slot. The server runs with
  ``wal_retrieve_retry_interval = 10ms`` (``SERVER_SETTINGS``): the logical replication
  launcher starts apply workers at most once per that interval (default 5 s), which would
  otherwise add up to 5 s to the subscription's time in every round after the first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from benchlib import BenchError, Measurement, require_success
from devtools.servers import ThrowawayPostgres

RAW_SLOT, SUB_SLOT, SUB_PUBLICATION, SUBSCRIPTION = "bench_raw", "bench_sub", "bench_sub_pub", "bench_sub"
SLOTS = (RAW_SLOT, SUB_SLOT)
POLL_SECONDS = 0.005
# The launcher starts apply workers at most once per wal_retrieve_retry_interval (default 5s): in
# every round after the first, ENABLE would wait out the rest of it.
SERVER_SETTINGS = {"wal_retrieve_retry_interval": "10ms"}


def ident(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def create_anchors(source_dsn: str, sub_dsn: str, table: str) -> None:
    """The raw reader's slot; the subscription's publication, slot and (disabled) subscription."""
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (RAW_SLOT,))
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(SUB_PUBLICATION), ident(table))
        )
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SUB_SLOT,))
    with psycopg.connect(sub_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (create_slot = false,"
                " slot_name = {}, copy_data = false, enabled = false)"
            ).format(
                sql.Identifier(SUBSCRIPTION),
                sql.Literal(source_dsn),
                sql.Identifier(SUB_PUBLICATION),
                sql.Literal(SUB_SLOT),
            )
        )


def slot_confirmed(conn: psycopg.Connection, slot: str, end_lsn: str) -> tuple[str, bool] | None:
    """The slot's confirmed_flush_lsn and whether it reached ``end_lsn`` (None: no such slot)."""
    return conn.execute(
        "SELECT confirmed_flush_lsn::text, confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
        " WHERE slot_name = %s",
        (end_lsn, slot),
    ).fetchone()


def pg_recvlogical(pg: ThrowawayPostgres) -> str:
    candidate = os.path.join(pg.bindir, "pg_recvlogical")
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("pg_recvlogical")
    if not found:
        raise BenchError(f"pg_recvlogical is in neither {pg.bindir} nor PATH")
    return found


def measure_raw(
    pg: ThrowawayPostgres, source_dsn: str, publication: str, workdir: Path, rows: int, end_lsn: str, timeout: float
) -> Measurement:
    """``pg_recvlogical`` on ``bench_raw`` with ``publication`` up to ``end_lsn``."""
    output = workdir / "raw.pgoutput"
    argv = [pg_recvlogical(pg), "-d", source_dsn, "--slot", RAW_SLOT, "--start", "--no-loop"]
    argv += ["-o", "proto_version=1", "-o", f"publication_names={publication}"]
    argv += [f"--endpos={end_lsn}", "-f", str(output)]
    started = time.perf_counter()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"pg_recvlogical did not reach {end_lsn} within {timeout:.0f}s") from None
    seconds = time.perf_counter() - started
    require_success("pg_recvlogical", result)
    size = output.stat().st_size if output.exists() else 0
    if size < rows * 30:  # an Insert message of these tables is well over 50 bytes
        raise BenchError(f"pg_recvlogical wrote only {size} bytes for {rows} rows; did it read the slot?")
    output.unlink()
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        confirmed = slot_confirmed(conn, RAW_SLOT, end_lsn)
    if confirmed is None or not confirmed[1]:
        raise BenchError(
            f"pg_recvlogical exited before {end_lsn} (slot {RAW_SLOT} confirmed "
            f"{confirmed[0] if confirmed else 'nothing'})"
        )
    return Measurement("raw", rows, seconds)


def measure_sub(
    pg: ThrowawayPostgres,
    source_dsn: str,
    sub_dsn: str,
    table: str,
    rows: int,
    end_lsn: str,
    timeout: float,
    verify: Callable[[], None],
) -> Measurement:
    """Enable the subscription; the seconds until the subscriber's row ``rows`` (the workload's last
    change) equals the source's, and as detail until the slot confirmed ``end_lsn``; then drop the
    subscription and ``verify()`` the subscriber's table."""
    last_row = sql.SQL("SELECT t::text FROM {} t WHERE id = %s").format(ident(table))
    with psycopg.connect(source_dsn, autocommit=True) as src, psycopg.connect(sub_dsn, autocommit=True) as sub:
        expected = src.execute(last_row, (rows,)).fetchone()
        started = time.perf_counter()
        sub.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(SUBSCRIPTION)))
        applied = confirmed = None
        while applied is None or confirmed is None:
            if applied is None and sub.execute(last_row, (rows,), prepare=True).fetchone() == expected:
                applied = time.perf_counter() - started
            if confirmed is None and (slot_confirmed(src, SUB_SLOT, end_lsn) or ("", False))[1]:
                confirmed = time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                status = sub.execute("SELECT * FROM pg_stat_subscription").fetchall()
                log = pg.log_path.read_text(errors="replace").splitlines()[-15:] if pg.log_path.exists() else []
                raise BenchError(
                    f"the subscription did not apply up to {end_lsn} within {timeout:.0f}s"
                    f" (applied after: {applied}, confirmed after: {confirmed}; pg_stat_subscription: {status});"
                    " the server's log ends:\n" + "\n".join(log)
                )
            time.sleep(POLL_SECONDS)
        sub.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(SUBSCRIPTION)))
    verify()
    return Measurement("sub", rows, applied, {"confirmed_seconds": confirmed})
