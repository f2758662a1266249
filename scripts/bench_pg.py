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

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from cdc.devservers import ThrowawayPostgres  # noqa: E402

TABLE = "public.customers"
RAW_SLOT = "bench_raw"
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


class BenchError(Exception):
    """The benchmark could not run or a reader produced a wrong result."""


@dataclass(frozen=True)
class Measurement:
    reader: str
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


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
    bench.config.write_text(f"""\
state_dir = {json.dumps(str(bench.workdir / "state"))}

[[sources]]
name = "crm"
kind = "postgres"
dsn = {json.dumps(bench.source_dsn)}
tables = [{json.dumps(TABLE)}]
slot = "{bench.slot}"
publication = "{bench.publication}"

[[targets]]
name = "dwh"
kind = "postgres"
dsn = {json.dumps(bench.target_dsn)}

[log]
level = "warning"
""", encoding="utf-8")


def cdc_env(bench: Round) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    env.update(CDC_CONFIG=str(bench.config), PYTHONPATH=str(PROJECT))
    return env


def run_cdc(bench: Round, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "cdc", *args], env=cdc_env(bench), cwd=PROJECT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"cdc {' '.join(args)} did not finish within {timeout:.0f}s") from None


def require_success(what: str, result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        output = (result.stdout[-3000:] + result.stderr[-3000:]).strip() or "(no output)"
        raise BenchError(f"{what} exited with code {result.returncode}:\n{output}")


def create_slots(bench: Round) -> None:
    require_success("cdc setup", run_cdc(bench, "setup", timeout=60))
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


def measure_cdc(bench: Round, rows: int, timeout: float) -> Measurement:
    started = time.perf_counter()
    result = run_cdc(bench, "run", "--drain", timeout=timeout)
    seconds = time.perf_counter() - started
    require_success("cdc run --drain", result)
    verify_target(bench, rows)
    return Measurement("cdc", rows, seconds)


def verify_target(bench: Round, rows: int) -> None:
    with psycopg.connect(bench.source_dsn) as src, psycopg.connect(bench.target_dsn) as dst:
        source_count, source_sum = src.execute(CHECKSUM).fetchone()
        target_count, target_sum = dst.execute(CHECKSUM).fetchone()
    if source_count != rows:
        raise BenchError(f"the source holds {source_count} rows, expected {rows}")
    if target_count != source_count:
        raise BenchError(f"cdc left {target_count} rows in the target, the source holds {source_count}")
    if target_sum != source_sum:
        raise BenchError("the target's rows differ from the source's (same count, different checksum)")


def run_round(pg: ThrowawayPostgres, index: int, workdir: Path, rows: int, batch: int,
              timeout: float) -> dict[str, Measurement]:
    bench = create_round(pg, index, workdir)
    create_slots(bench)
    started = time.perf_counter()
    end_lsn = write_workload(bench, rows, batch)
    progress(f"round {index}: wrote {rows} rows in {time.perf_counter() - started:.1f}s (WAL end {end_lsn})")
    raw_first = index % 2 == 1
    results: dict[str, Measurement] = {}
    for reader in (("raw", "cdc") if raw_first else ("cdc", "raw")):
        if reader == "raw":
            results[reader] = measure_raw(pg, bench, rows, end_lsn, timeout)
        else:
            results[reader] = measure_cdc(bench, rows, timeout)
        m = results[reader]
        progress(f"round {index}: {reader:3} {m.seconds:7.2f}s {m.rows_per_second:10,.0f} rows/s")
    drop_round(bench)
    return results


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- reporting ----------------------------------------------------------------------------

def summarize(rounds: list[dict[str, Measurement]], rows: int, batch: int, server_version: str) -> dict:
    summary: dict = {"rows": rows, "batch": batch, "postgres": server_version, "rounds": []}
    for results in rounds:
        summary["rounds"].append({name: {**asdict(m), "rows_per_second": m.rows_per_second}
                                  for name, m in results.items()})
    for reader in ("raw", "cdc"):
        seconds = statistics.median(results[reader].seconds for results in rounds)
        summary[reader] = {"seconds": seconds, "rows_per_second": rows / seconds}
    summary["ratio"] = summary["cdc"]["rows_per_second"] / summary["raw"]["rows_per_second"]
    return summary


def print_report(summary: dict) -> None:
    rounds = len(summary["rounds"])
    print(f"PostgreSQL {summary['postgres']}: {summary['rows']:,} inserted rows, {summary['batch']:,} per transaction"
          + (f", median of {rounds} rounds" if rounds > 1 else ""))
    print(f"{'reader':<16} {'rows':>10} {'seconds':>9} {'rows/s':>11}")
    for reader, label in (("raw", "pg_recvlogical"), ("cdc", "cdc run --drain")):
        m = summary[reader]
        print(f"{label:<16} {summary['rows']:>10,} {m['seconds']:>9.2f} {m['rows_per_second']:>11,.0f}")
    print(f"cdc reaches {summary['ratio']:.3f}x of pg_recvlogical's raw read rate"
          f" (the raw reader is {1 / summary['ratio']:.1f}x faster)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows to insert (default 100000)")
    parser.add_argument("--batch", type=int, default=1_000, help="rows per source transaction (default 1000)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measure this often, fresh databases and slots each time (default 2)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds each reader may take (default 600)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--rows, --batch and --rounds must be at least 1")
    try:
        with tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp, ThrowawayPostgres() as pg:
            with psycopg.connect(pg.dsn()) as conn:
                server_version = conn.execute("SHOW server_version").fetchone()[0]
            rounds = []
            for index in range(1, args.rounds + 1):
                workdir = Path(tmp) / f"round{index}"
                workdir.mkdir()
                rounds.append(run_round(pg, index, workdir, args.rows, args.batch, args.timeout))
    except (BenchError, psycopg.Error, RuntimeError, OSError) as exc:
        print(f"bench_pg: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_pg: interrupted", file=sys.stderr)
        return 130
    summary = summarize(rounds, args.rows, args.batch, server_version)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_report(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
