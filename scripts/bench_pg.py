#!/usr/bin/env python3
"""Throughput of cdc's PostgreSQL path compared with PostgreSQL's own raw logical-decoding reader.

What it does, on a throwaway PostgreSQL server (``cdc.devservers.ThrowawayPostgres``):

1. creates a source database with a CRM-like ``public.customers`` table (REPLICA IDENTITY
   FULL) and a target database with the same table;
2. writes a cdc config (one postgres source, one ``postgres`` target) and runs ``cdc setup``,
   which creates cdc's publication and pgoutput slot; then creates a second pgoutput slot,
   ``bench_raw``, for the raw reader, so both slots start before the workload;
3. writes the workload: ``--rows`` INSERTs into the source, ``--batch`` rows per transaction
   (inserts only: every change is a new row, so the target's row count checks completeness);
4. with the whole workload already in the WAL, times two readers of that same WAL:

   * ``raw``: ``pg_recvlogical --start`` on ``bench_raw`` with the same pgoutput options as cdc
     (proto_version 1, cdc's publication), ``--endpos`` = ``pg_current_wal_lsn()`` after the
     workload, output to a file. It decodes and ships the stream and does nothing with it: the
     ceiling for any pgoutput consumer on this server.
   * ``cdc``: ``cdc run --drain`` as a subprocess, from process start until it exits, i.e. WAL
     to rows committed in the postgres target, including cdc's state store (event log and row
     versions) and its Python start-up. Afterwards the target must hold exactly the source's
     rows (count and a checksum over every row), or the benchmark fails.

Each of ``--rounds N`` rounds (default 2) uses fresh databases, slots and cdc state, and the
order of the two readers alternates (raw first in odd rounds, cdc first in even ones); the summary
uses the median time of each reader.

Reading the report: ``rows/s`` is rows / wall seconds for each reader; the ratio is cdc's rate
divided by the raw rate, e.g. "cdc reaches 0.23x of pg_recvlogical's raw read rate" means that
cdc, doing everything it does per change, keeps up with about a quarter of the rate at which
the server can merely decode and send this WAL. Both times include connecting; cdc's also
includes starting Python, so small ``--rows`` understate cdc.

Usage, from the project root::

    .venv/bin/python scripts/bench_pg.py [--rows 100000] [--batch 1000] [--rounds 2] [--json]

Exit status 0 on success, 1 on any failure (with the reason on stderr).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
PROJECT = SCRIPTS.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(SCRIPTS))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

import benchlib  # noqa: E402
from benchlib import BenchError, Measurement, progress, require_success  # noqa: E402
from cdc.devservers import ThrowawayPostgres  # noqa: E402

TABLE = "public.customers"
RAW_SLOT = "bench_raw"
READERS = ("raw", "cdc")
LABELS = {"raw": "pg_recvlogical", "cdc": "cdc run --drain"}
TABLE_DDL = """
CREATE TABLE public.customers (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    email text,
    phone text,
    balance numeric(14, 2),
    updated_at timestamptz NOT NULL,
    notes text
);
"""
INSERT_BATCH = """
INSERT INTO public.customers (id, name, email, phone, balance, updated_at, notes)
SELECT i, 'Customer ' || i, 'customer' || i || '@example.com', '+1-555-' || lpad((i %% 10000000)::text, 7, '0'),
       round((random() * 100000)::numeric, 2), now() - random() * interval '365 days',
       repeat(md5(i::text), 3)
FROM generate_series(%s::bigint, %s::bigint) AS i
"""
CHECKSUM = "SELECT count(*), md5(coalesce(string_agg(c::text, E'\\n' ORDER BY id), '')) FROM public.customers c"


@dataclass(frozen=True)
class Round:
    """One round's databases, config and names."""

    index: int
    source_dsn: str
    target_dsn: str
    config: Path
    slot: str
    publication: str
    workdir: Path


# -- setting up -------------------------------------------------------------------------

def create_round(pg: ThrowawayPostgres, index: int, workdir: Path) -> Round:
    source_db, target_db = f"bench_crm_{index}", f"bench_dwh_{index}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for db in (source_db, target_db):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    bench = Round(index, pg.dsn(source_db), pg.dsn(target_db), workdir / "cdc.toml",
                  slot=f"bench_cdc_{index}", publication=f"bench_pub_{index}", workdir=workdir)
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        conn.execute(f"ALTER TABLE {TABLE} REPLICA IDENTITY FULL")
    with psycopg.connect(bench.target_dsn, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
    write_config(bench)
    return bench


def write_config(bench: Round) -> None:
    benchlib.write_cdc_config(
        bench.config, bench.workdir / "state",
        source={"name": "crm", "kind": "postgres", "dsn": bench.source_dsn, "tables": [TABLE],
                "slot": bench.slot, "publication": bench.publication},
        target={"name": "dwh", "kind": "postgres", "dsn": bench.target_dsn})


def create_slots(bench: Round) -> None:
    require_success("cdc setup", benchlib.run_cdc(bench.config, "setup", timeout=60))
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (RAW_SLOT,))


def write_workload(bench: Round, rows: int, batch: int) -> str:
    """Insert ``rows`` rows, ``batch`` per transaction; the WAL position after the last commit."""
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        for first in range(1, rows + 1, batch):
            conn.execute(INSERT_BATCH, (first, min(first + batch - 1, rows)))
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def drop_round(bench: Round) -> None:
    """Drop the round's slots so they stop holding WAL."""
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                     " WHERE slot_name IN (%s, %s)", (bench.slot, RAW_SLOT))


# -- measuring ----------------------------------------------------------------------------

def pg_recvlogical(pg: ThrowawayPostgres) -> str:
    candidate = os.path.join(pg.bindir, "pg_recvlogical")
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("pg_recvlogical")
    if not found:
        raise BenchError(f"pg_recvlogical is in neither {pg.bindir} nor PATH")
    return found


def measure_raw(pg: ThrowawayPostgres, bench: Round, rows: int, end_lsn: str, timeout: float) -> Measurement:
    output = bench.workdir / "raw.pgoutput"
    argv = [pg_recvlogical(pg), "-d", bench.source_dsn, "--slot", RAW_SLOT, "--start", "--no-loop",
            "-o", "proto_version=1", "-o", f"publication_names={bench.publication}",
            f"--endpos={end_lsn}", "-f", str(output)]
    started = time.perf_counter()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"pg_recvlogical did not reach {end_lsn} within {timeout:.0f}s") from None
    seconds = time.perf_counter() - started
    require_success("pg_recvlogical", result)
    size = output.stat().st_size if output.exists() else 0
    if size < rows * 50:  # an Insert message of this table is well over 100 bytes
        raise BenchError(f"pg_recvlogical wrote only {size} bytes for {rows} rows; did it read the slot?")
    output.unlink()
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        confirmed = conn.execute("SELECT confirmed_flush_lsn::text, confirmed_flush_lsn >= %s::pg_lsn"
                                 " FROM pg_replication_slots WHERE slot_name = %s", (end_lsn, RAW_SLOT)).fetchone()
    if confirmed is None or not confirmed[1]:
        raise BenchError(f"pg_recvlogical exited before {end_lsn} (slot {RAW_SLOT} confirmed "
                         f"{confirmed[0] if confirmed else 'nothing'})")
    return Measurement("raw", rows, seconds)


def verify_target(bench: Round, rows: int) -> None:
    with psycopg.connect(bench.source_dsn) as src, psycopg.connect(bench.target_dsn) as dst:
        source = src.execute(CHECKSUM).fetchone()
        target = dst.execute(CHECKSUM).fetchone()
    benchlib.check_copy(rows, source, target)


def run_round(pg: ThrowawayPostgres, index: int, workdir: Path, rows: int, batch: int,
              timeout: float) -> dict[str, Measurement]:
    bench = create_round(pg, index, workdir)
    create_slots(bench)
    started = time.perf_counter()
    end_lsn = write_workload(bench, rows, batch)
    progress(f"round {index}: wrote {rows} rows in {time.perf_counter() - started:.1f}s (WAL end {end_lsn})")
    results = benchlib.measure_readers(index, {
        "raw": lambda: measure_raw(pg, bench, rows, end_lsn, timeout),
        "cdc": lambda: benchlib.measure_cdc(bench.config, rows, timeout, lambda: verify_target(bench, rows)),
    })
    drop_round(bench)
    return results


# -- reporting ----------------------------------------------------------------------------

def summarize(rounds: list[dict[str, Measurement]], rows: int, batch: int, server_version: str) -> dict:
    summary = benchlib.summarize(rounds, READERS, rows, batch, {"postgres": server_version})
    summary["ratio"] = summary["cdc"]["rows_per_second"] / summary["raw"]["rows_per_second"]
    return summary


def print_report(summary: dict) -> None:
    benchlib.print_table(summary, f"PostgreSQL {summary['postgres']}", LABELS)
    print(f"cdc reaches {summary['ratio']:.3f}x of pg_recvlogical's raw read rate"
          f" (the raw reader is {1 / summary['ratio']:.1f}x faster)")


def main(argv: list[str] | None = None) -> int:
    args = benchlib.parse_args(argv, __doc__, fresh="databases and slots")

    def measure() -> tuple[str, list[dict[str, Measurement]]]:
        with tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp, ThrowawayPostgres() as pg:
            with psycopg.connect(pg.dsn()) as conn:
                server_version = conn.execute("SHOW server_version").fetchone()[0]
            rounds = [run_round(pg, index, workdir, args.rows, args.batch, args.timeout)
                      for index, workdir in benchlib.round_workdirs(tmp, args.rounds)]
        return server_version, rounds

    return benchlib.run_main("bench_pg", args, measure, (BenchError, psycopg.Error, RuntimeError, OSError),
                             lambda measured: summarize(measured[1], args.rows, args.batch, measured[0]),
                             print_report)


if __name__ == "__main__":
    sys.exit(main())
