#!/usr/bin/env python3
"""Throughput of cdc's PostgreSQL path compared with PostgreSQL's own raw logical-decoding reader,
or (``--detection``) with conflict detection on compared with off.

What it does, on a throwaway PostgreSQL server (``devtools.servers.ThrowawayPostgres``):

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

With ``--detection`` the benchmark measures instead what conflict detection (the cdc config key
``[conflicts] detect``, default true) costs, timing ``cdc run --drain`` twice on the same workload:

* the table gets three more columns, ``status`` ('lead' on insert), ``version`` (1 on insert)
  and ``updated_by`` ('import' on insert), and the cdc config a ``[[tables]]`` entry for it with
  ``writer_column = "updated_by"``, ``version_column = "version"``, ``ignore_columns =
  ["updated_at"]``, ``natural_keys = [["email"]]`` and ``status_column = "status"`` (order lead,
  prospect, customer), so that every rule runs on every change;
* the workload is the same ``--rows`` INSERTs, ``--batch`` rows per transaction, and in later
  transactions an UPDATE of every row once (after each insert batch, the rows of the batch before
  it; at the end the last batch): another writer (``updated_by = 'sales-app'``) changes balance
  and status (lead -> customer) and advances version and updated_at. That makes 2 x ``--rows``
  events, each update with a row history to read. None of it is a conflict;
* ``detect_on`` runs with ``[conflicts] detect = true``, ``detect_off`` with ``detect = false``.
  Each gets its own fresh databases, slot and cdc state, and the workload is written just before
  it is measured, so neither has the other's WAL to read; the order alternates as above. Besides
  the target's rows, each must leave the event log with every insert and update, no conflicts,
  and (detection's bookkeeping) the natural key of every row with detection on, none with it off.

The report gives, for each, µs/event (wall time / events, including start-up) and events/s; the
ratio of the two throughputs (on / off) and detection's overhead, ``(1 - ratio)`` in percent:
"detection costs 7.9% throughput; the target is under 15%". Detection reads the row's history and
the table's natural keys in cdc's state store, which grow with the table, so compare overheads
measured with the same ``--rows``.

Usage, from the project root::

    .venv/bin/python scripts/bench_pg.py [--rows 100000] [--batch 1000] [--rounds 2] [--detection] [--json]

Exit status 0 on success, 1 on any failure (with the reason on stderr).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
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
from devtools.servers import ThrowawayPostgres  # noqa: E402

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

# --detection: detection on and off, on inserts and one update of every row
DETECTION_READERS = ("detect_on", "detect_off")
DETECTION_LABELS = {"detect_on": "cdc, detect on", "detect_off": "cdc, detect off"}
DETECTION_TARGET_PERCENT = 15.0  # the throughput detection may cost
DETECTION_COLUMNS = """
ALTER TABLE public.customers
    ADD COLUMN status text NOT NULL DEFAULT 'lead',
    ADD COLUMN version integer NOT NULL DEFAULT 1,
    ADD COLUMN updated_by text NOT NULL DEFAULT 'import'
"""
DETECTION_RULES = {
    "match": TABLE,
    "writer_column": "updated_by",
    "version_column": "version",
    "ignore_columns": ["updated_at"],
    "natural_keys": [["email"]],
    "status_column": "status",
    "status_order": ["lead", "prospect", "customer"],
}
UPDATE_BATCH = """
UPDATE public.customers
SET balance = balance + round((random() * 1000)::numeric, 2), status = 'customer', version = version + 1,
    updated_by = 'sales-app', updated_at = now()
WHERE id BETWEEN %s AND %s
"""


@dataclass(frozen=True)
class Round:
    """One round's databases, config and names."""

    name: str
    source_dsn: str
    target_dsn: str
    config: Path
    slot: str
    publication: str
    workdir: Path


# -- setting up -------------------------------------------------------------------------


def create_round(pg: ThrowawayPostgres, name: str, workdir: Path, detect: bool | None = None) -> Round:
    """Databases, tables and cdc config named after ``name``; with ``detect`` (True or False) the
    detection workload's columns and rules and ``[conflicts] detect = <detect>``."""
    source_db, target_db = f"bench_crm_{name}", f"bench_dwh_{name}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for db in (source_db, target_db):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    bench = Round(
        name,
        pg.dsn(source_db),
        pg.dsn(target_db),
        workdir / "cdc.toml",
        slot=f"bench_cdc_{name}",
        publication=f"bench_pub_{name}",
        workdir=workdir,
    )
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        if detect is not None:
            conn.execute(DETECTION_COLUMNS)
        conn.execute(f"ALTER TABLE {TABLE} REPLICA IDENTITY FULL")
    with psycopg.connect(bench.target_dsn, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        if detect is not None:
            conn.execute(DETECTION_COLUMNS)
    write_config(bench, detect)
    return bench


def write_config(bench: Round, detect: bool | None = None) -> None:
    benchlib.write_cdc_config(
        bench.config,
        bench.workdir / "state",
        source={
            "name": "crm",
            "kind": "postgres",
            "dsn": bench.source_dsn,
            "tables": [TABLE],
            "slot": bench.slot,
            "publication": bench.publication,
        },
        target={"name": "dwh", "kind": "postgres", "dsn": bench.target_dsn},
        tables=None if detect is None else [DETECTION_RULES],
        conflicts=None if detect is None else {"detect": detect},
    )


def setup_cdc(bench: Round) -> None:
    """``cdc setup``: cdc's publication and slot."""
    require_success("cdc setup", benchlib.run_cdc(bench.config, "setup", timeout=60))


def create_slots(bench: Round) -> None:
    setup_cdc(bench)
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (RAW_SLOT,))


def write_workload(bench: Round, rows: int, batch: int) -> str:
    """Insert ``rows`` rows, ``batch`` per transaction; the WAL position after the last commit."""
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        for first in range(1, rows + 1, batch):
            conn.execute(INSERT_BATCH, (first, min(first + batch - 1, rows)))
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def write_detection_workload(bench: Round, rows: int, batch: int) -> str:
    """Insert ``rows`` rows, ``batch`` per transaction, and update each once in a later transaction:
    after each insert batch the batch before it, at the end the last; the WAL position after the last commit."""
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        previous = None
        for first in range(1, rows + 1, batch):
            current = (first, min(first + batch - 1, rows))
            conn.execute(INSERT_BATCH, current)
            if previous is not None:
                conn.execute(UPDATE_BATCH, previous)
            previous = current
        conn.execute(UPDATE_BATCH, previous)
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def drop_round(bench: Round) -> None:
    """Drop the round's slots so they stop holding WAL."""
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN (%s, %s)",
            (bench.slot, RAW_SLOT),
        )


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
    argv = [
        pg_recvlogical(pg),
        "-d",
        bench.source_dsn,
        "--slot",
        RAW_SLOT,
        "--start",
        "--no-loop",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={bench.publication}",
        f"--endpos={end_lsn}",
        "-f",
        str(output),
    ]
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
        confirmed = conn.execute(
            "SELECT confirmed_flush_lsn::text, confirmed_flush_lsn >= %s::pg_lsn"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (end_lsn, RAW_SLOT),
        ).fetchone()
    if confirmed is None or not confirmed[1]:
        raise BenchError(
            f"pg_recvlogical exited before {end_lsn} (slot {RAW_SLOT} confirmed "
            f"{confirmed[0] if confirmed else 'nothing'})"
        )
    return Measurement("raw", rows, seconds)


def verify_target(bench: Round, rows: int) -> None:
    with psycopg.connect(bench.source_dsn) as src, psycopg.connect(bench.target_dsn) as dst:
        source = src.execute(CHECKSUM).fetchone()
        target = dst.execute(CHECKSUM).fetchone()
    benchlib.check_copy(rows, source, target)


def verify_detection(bench: Round, rows: int, detect: bool) -> None:
    """The target holds the source's rows, and cdc's state store every insert and update, no
    conflicts, and the natural key of every row if ``detect`` (else none: detection did not run)."""
    verify_target(bench, rows)
    state = sqlite3.connect(f"file:{bench.workdir / 'state' / 'state.db'}?mode=ro", uri=True)
    try:
        ops = dict(state.execute("SELECT op, count(*) FROM events GROUP BY op").fetchall())
        natural_keys = state.execute("SELECT count(*) FROM natural_key_rows").fetchone()[0]
        conflicts = state.execute("SELECT type, count(*) FROM conflicts GROUP BY type ORDER BY 2 DESC").fetchall()
    finally:
        state.close()
    if ops != {"insert": rows, "update": rows}:
        raise BenchError(f"cdc's event log holds {ops}, expected {rows} inserts and {rows} updates")
    if conflicts:
        raise BenchError(
            "detection found conflicts in a workload without any: "
            + ", ".join(f"{count} {kind}" for kind, count in conflicts)
        )
    if detect and natural_keys != rows:
        raise BenchError(
            f"with detection on, cdc noted {natural_keys} natural keys for {rows} rows; did detection run?"
        )
    if not detect and natural_keys:
        raise BenchError(f"with [conflicts] detect = false, cdc still noted {natural_keys} natural keys")


def run_detection_round(
    pg: ThrowawayPostgres, index: int, workdir: Path, rows: int, batch: int, timeout: float
) -> dict[str, Measurement]:
    """``cdc run --drain`` with detection on and off, each on fresh databases, slot and state."""

    def measure(reader: str) -> Measurement:
        detect = reader == "detect_on"
        subdir = workdir / reader
        subdir.mkdir()
        bench = create_round(pg, f"{index}_{'on' if detect else 'off'}", subdir, detect=detect)
        setup_cdc(bench)
        started = time.perf_counter()
        end_lsn = write_detection_workload(bench, rows, batch)
        progress(
            f"round {index}: {reader}: wrote {rows} rows and {rows} updates in"
            f" {time.perf_counter() - started:.1f}s (WAL end {end_lsn})"
        )
        result = benchlib.measure_cdc(
            bench.config, rows, timeout, lambda: verify_detection(bench, rows, detect), reader=reader
        )
        drop_round(bench)
        return result

    return benchlib.measure_readers(
        index, {reader: (lambda reader=reader: measure(reader)) for reader in DETECTION_READERS}, events=2 * rows
    )


def run_round(
    pg: ThrowawayPostgres, index: int, workdir: Path, rows: int, batch: int, timeout: float
) -> dict[str, Measurement]:
    bench = create_round(pg, str(index), workdir)
    create_slots(bench)
    started = time.perf_counter()
    end_lsn = write_workload(bench, rows, batch)
    progress(f"round {index}: wrote {rows} rows in {time.perf_counter() - started:.1f}s (WAL end {end_lsn})")
    results = benchlib.measure_readers(
        index,
        {
            "raw": lambda: measure_raw(pg, bench, rows, end_lsn, timeout),
            "cdc": lambda: benchlib.measure_cdc(bench.config, rows, timeout, lambda: verify_target(bench, rows)),
        },
    )
    drop_round(bench)
    return results


# -- reporting ----------------------------------------------------------------------------


def summarize(rounds: list[dict[str, Measurement]], rows: int, batch: int, server_version: str) -> dict:
    summary = benchlib.summarize(rounds, READERS, rows, batch, {"postgres": server_version})
    summary["ratio"] = summary["cdc"]["rows_per_second"] / summary["raw"]["rows_per_second"]
    return summary


def print_report(summary: dict) -> None:
    benchlib.print_table(summary, f"PostgreSQL {summary['postgres']}", LABELS)
    print(
        f"cdc reaches {summary['ratio']:.3f}x of pg_recvlogical's raw read rate"
        f" (the raw reader is {1 / summary['ratio']:.1f}x faster)"
    )


def summarize_detection(rounds: list[dict[str, Measurement]], rows: int, batch: int, server_version: str) -> dict:
    summary = benchlib.summarize(rounds, DETECTION_READERS, rows, batch, {"postgres": server_version}, events=2 * rows)
    summary = {"rows": rows, "updates": rows, **summary}
    on, off = summary["detect_on"], summary["detect_off"]
    summary["ratio"] = on["events_per_second"] / off["events_per_second"]
    summary["overhead_percent"] = (1 - summary["ratio"]) * 100
    summary["target_percent"] = DETECTION_TARGET_PERCENT
    summary["added_us_per_event"] = on["us_per_event"] - off["us_per_event"]
    return summary


def print_detection_report(summary: dict) -> None:
    benchlib.print_table(
        summary,
        f"PostgreSQL {summary['postgres']}",
        DETECTION_LABELS,
        workload=f"{summary['rows']:,} inserted rows, each updated once later ({summary['events']:,} events)",
    )
    print(
        f"with conflict detection cdc reaches {summary['ratio']:.3f}x of its rate without"
        f" ({summary['added_us_per_event']:+.1f} µs/event)"
    )
    print(
        f"detection costs {summary['overhead_percent']:.1f}% throughput;"
        f" the target is under {summary['target_percent']:g}%"
    )


def main(argv: list[str] | None = None) -> int:
    def options(parser) -> None:
        parser.add_argument(
            "--detection",
            action="store_true",
            help="instead of comparing with pg_recvlogical, time cdc with conflict detection"
            " on and off, on inserts plus one update of every row",
        )

    args = benchlib.parse_args(argv, __doc__, fresh="databases and slots", options=options)
    run, summarize_rounds, report = (
        (run_detection_round, summarize_detection, print_detection_report)
        if args.detection
        else (run_round, summarize, print_report)
    )

    def measure() -> tuple[str, list[dict[str, Measurement]]]:
        with tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp, ThrowawayPostgres() as pg:
            with psycopg.connect(pg.dsn()) as conn:
                server_version = conn.execute("SHOW server_version").fetchone()[0]
            rounds = [
                run(pg, index, workdir, args.rows, args.batch, args.timeout)
                for index, workdir in benchlib.round_workdirs(tmp, args.rounds)
            ]
        return server_version, rounds

    return benchlib.run_main(
        "bench_pg",
        args,
        measure,
        (BenchError, psycopg.Error, sqlite3.Error, RuntimeError, OSError),
        lambda measured: summarize_rounds(measured[1], args.rows, args.batch, measured[0]),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
