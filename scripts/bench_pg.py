#!/usr/bin/env python3
"""Throughput of cdc's PostgreSQL path beside PostgreSQL's own logical replication subscription and its
raw logical-decoding reader; or (``--latency``) cdc's commit-to-target latency; or (``--detection``)
cdc with conflict detection on compared with off.

The throughput mode (the default), on a throwaway PostgreSQL server (``devtools.servers``):

1. creates a source database, a target database for cdc and a subscriber database for the
   native subscription, each with the workload's table (REPLICA IDENTITY FULL in the source,
   as cdc requires); ``--workload bench`` (the default): ``public.bench (id bigint primary key,
   a int, b text, c timestamptz)``; ``--workload customers``: a CRM-like ``public.customers``;
2. writes a cdc config (one postgres source, one ``postgres`` target) and runs ``cdc setup``
   (cdc's publication and pgoutput slot); then sets up the anchors (``scripts/bench_pg_anchors.py``):
   a pgoutput slot ``bench_raw``; a publication ``bench_sub_pub``, a pgoutput slot ``bench_sub``
   made with ``pg_create_logical_replication_slot`` and, in the subscriber database, a disabled
   subscription on them (``create_slot = false, copy_data = false, enabled = false``). Every
   slot starts before the workload;
3. writes the workload, ``--batch`` rows per transaction: ``bench``: ``--rows`` INSERTs, then an
   UPDATE of every row (a, b and c change), 2 x ``--rows`` events (changed rows); ``customers``:
   ``--rows`` INSERTs, ``--rows`` events;
4. with the whole workload already in the WAL, times three readers of that same WAL (in this
   order in odd rounds, reversed in even ones):

   * ``raw``: ``pg_recvlogical --start`` on ``bench_raw`` with cdc's pgoutput options up to the
     workload's end LSN, to a file: decoding and shipping only, the ceiling of any pgoutput
     consumer on this server.
   * ``sub``: PostgreSQL's own logical replication into the subscriber database: from ``ALTER
     SUBSCRIPTION bench_sub ENABLE`` until the subscriber's copy of the workload's last changed
     row equals the source's (polled every ~5 ms; transactions are applied whole and in order,
     so then all are). Afterwards the subscriber table's count and checksum must equal the
     source's. Beside it the report gives when the slot's ``confirmed_flush_lsn`` reached the
     end LSN ("confirmed"), which is not used in the ratio: the subscription commits
     asynchronously and reports its flush position only now and then (up to about a second).
     The server runs with ``wal_retrieve_retry_interval = 10ms``, or the launcher would hold
     back the apply worker for up to 5 s in every round after the first.
   * ``cdc``: ``cdc run --drain`` as a subprocess, from process start until it exits: WAL to
     rows committed (durably) in the postgres target, including cdc's state store and Python's
     start-up. Afterwards the target must hold exactly the source's rows (count and a checksum
     over every row), or the benchmark fails.

Each of ``--rounds N`` rounds (default 2) uses fresh databases, slots and cdc state; the summary
uses each reader's median time.

Reading the report: one line per reader with events, seconds, events/s (changed rows per
second) and µs/event (wall time / events); then the ratios of cdc's rate to the subscription's
("cdc / native subscription", the target is >= 0.5x) and to the raw reader's ("cdc /
pg_recvlogical": how much of what the server can merely decode and send cdc keeps up with). All
times include connecting and starting; cdc's also includes starting Python, so small ``--rows``
understate cdc.

``--latency`` (see ``scripts/bench_latency.py``) starts ``cdc run`` (the daemon, with ``[http]
listen`` on a free port) against an empty ``public.bench`` and a postgres target, waits for
``/healthz`` and a probe row, writes single-row INSERT transactions at ``--rate`` per second
(default 500) for ``--seconds`` (default 20) while a watcher polls the target every ~2 ms, and
reports p50, p90, p99 and max of commit-to-target latency (targets: p50 <= 30 ms, p99 <= 100
ms); every row must arrive and cdc must exit 0 on SIGTERM. ``--rows`` and ``--batch`` do not
apply; each round is a fresh run, the summary pools them.

``--detection`` (see ``scripts/bench_detection.py``) times ``cdc run --drain`` with ``[conflicts]
detect`` on and off, each on its own fresh databases and workload; it keeps its own workload
(``customers`` with writer, version and status columns, ``--rows`` inserts and an update of
every row by another writer, 2 x ``--rows`` events) and reports detection's overhead in percent
(target: under 15%). ``--workload`` applies to the throughput mode only.

Usage, from the project root::

    .venv/bin/python scripts/bench_pg.py [--workload bench|customers] [--rows 100000] [--batch 1000]
        [--rounds 2] [--json]
    .venv/bin/python scripts/bench_pg.py --latency [--rate 500] [--seconds 20] [--rounds 1]
    .venv/bin/python scripts/bench_pg.py --detection [--rows 100000] [--batch 1000]

Exit status 0 on success, 1 on any failure (with the reason on stderr).
"""

from __future__ import annotations

import sqlite3
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

import bench_detection  # noqa: E402
import bench_latency  # noqa: E402
import bench_pg_anchors as anchors  # noqa: E402
import benchlib  # noqa: E402
from benchlib import BenchError, Measurement, progress, require_success  # noqa: E402
from devtools.servers import ThrowawayPostgres, free_port  # noqa: E402

READERS = ("raw", "sub", "cdc")
LABELS = {"raw": "pg_recvlogical", "sub": "subscription", "cdc": "cdc run --drain"}
TARGET_RATIO = {"cdc/subscription": 0.5}


@dataclass(frozen=True)
class Workload:
    table: str
    ddl: str
    insert: str  # parameters: first and last id of the batch
    update: str | None  # the same; None: inserts only


BENCH = Workload(
    "public.bench",
    "CREATE TABLE public.bench (id bigint PRIMARY KEY, a int, b text, c timestamptz)",
    "INSERT INTO public.bench (id, a, b, c) SELECT i, (i %% 1000)::int, md5(i::text), now()"
    " FROM generate_series(%s::bigint, %s::bigint) AS i",
    "UPDATE public.bench SET a = a + 1, b = md5(b), c = c + interval '1 second' WHERE id BETWEEN %s AND %s",
)
CUSTOMERS = Workload(
    "public.customers",
    """
CREATE TABLE public.customers (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    email text,
    phone text,
    balance numeric(14, 2),
    updated_at timestamptz NOT NULL,
    notes text
);
""",
    """
INSERT INTO public.customers (id, name, email, phone, balance, updated_at, notes)
SELECT i, 'Customer ' || i, 'customer' || i || '@example.com', '+1-555-' || lpad((i %% 10000000)::text, 7, '0'),
       round((random() * 100000)::numeric, 2), now() - random() * interval '365 days',
       repeat(md5(i::text), 3)
FROM generate_series(%s::bigint, %s::bigint) AS i
""",
    None,
)
WORKLOADS = {"bench": BENCH, "customers": CUSTOMERS}
LATENCY_INSERT = "INSERT INTO public.bench (id, a, b, c) VALUES (%s, 0, 'latency', now())"

# --detection: customers with writer, version and status columns; inserts, then an update of each row
DETECTION_COLUMNS = """
ALTER TABLE public.customers
    ADD COLUMN status text NOT NULL DEFAULT 'lead',
    ADD COLUMN version integer NOT NULL DEFAULT 1,
    ADD COLUMN updated_by text NOT NULL DEFAULT 'import'
"""
DETECTION_UPDATE = """
UPDATE public.customers
SET balance = balance + round((random() * 1000)::numeric, 2), status = 'customer', version = version + 1,
    updated_by = 'sales-app', updated_at = now()
WHERE id BETWEEN %s AND %s
"""


def checksum(table: str) -> sql.Composed:
    return sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM {} t").format(
        sql.Identifier(*table.split("."))
    )


@dataclass(frozen=True)
class Round:
    """One round's databases, config and names."""

    name: str
    workload: Workload
    source_dsn: str
    target_dsn: str
    sub_dsn: str
    config: Path
    slot: str
    publication: str
    workdir: Path


# -- setting up -------------------------------------------------------------------------


def create_round(
    pg: ThrowawayPostgres,
    name: str,
    workdir: Path,
    workload: Workload,
    detect: bool | None = None,
    http_port: int | None = None,
) -> Round:
    """Databases, tables and cdc config named after ``name``; with ``detect`` (True or False) the
    detection workload's columns and rules and ``[conflicts] detect = <detect>``; with
    ``http_port`` cdc's ``[http] listen`` on it."""
    dbs = (f"bench_crm_{name}", f"bench_dwh_{name}", f"bench_sub_{name}")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for db in dbs:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    bench = Round(
        name,
        workload,
        *(pg.dsn(db) for db in dbs),
        config=workdir / "cdc.toml",
        slot=f"bench_cdc_{name}",
        publication=f"bench_pub_{name}",
        workdir=workdir,
    )
    for dsn in (bench.source_dsn, bench.target_dsn, bench.sub_dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(workload.ddl)
            if detect is not None:
                conn.execute(DETECTION_COLUMNS)
            if dsn == bench.source_dsn:
                conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(anchors.ident(workload.table)))
    benchlib.write_cdc_config(
        bench.config,
        workdir / "state",
        source={
            "name": "crm",
            "kind": "postgres",
            "dsn": bench.source_dsn,
            "tables": [workload.table],
            "slot": bench.slot,
            "publication": bench.publication,
        },
        target={"name": "dwh", "kind": "postgres", "dsn": bench.target_dsn},
        tables=None if detect is None else [bench_detection.rules(workload.table)],
        conflicts=None if detect is None else {"detect": detect},
        http=None if http_port is None else {"listen": f"127.0.0.1:{http_port}"},
    )
    return bench


def setup_cdc(bench: Round) -> None:
    """``cdc setup``: cdc's publication and slot."""
    require_success("cdc setup", benchlib.run_cdc(bench.config, "setup", timeout=60))


def write_workload(bench: Round, rows: int, batch: int) -> str:
    """The workload's inserts, then its updates, ``batch`` rows per transaction; the WAL position after the last commit."""
    batches = [(first, min(first + batch - 1, rows)) for first in range(1, rows + 1, batch)]
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        for statement in (bench.workload.insert, bench.workload.update):
            for first_last in batches if statement else ():
                conn.execute(statement, first_last)
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def write_detection_workload(bench: Round, rows: int, batch: int) -> str:
    """Insert ``rows`` rows, ``batch`` per transaction, and update each once in a later transaction:
    after each insert batch the batch before it, at the end the last; the WAL position after the last commit."""
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        previous = None
        for first in range(1, rows + 1, batch):
            current = (first, min(first + batch - 1, rows))
            conn.execute(bench.workload.insert, current)
            if previous is not None:
                conn.execute(DETECTION_UPDATE, previous)
            previous = current
        conn.execute(DETECTION_UPDATE, previous)
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def drop_round(bench: Round) -> None:
    """Drop the round's slots so they stop holding WAL (waiting a little for their readers to let go)."""
    slots = [bench.slot, *anchors.SLOTS]
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        for _ in range(100):
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = ANY(%s) AND NOT active",
                (slots,),
            )
            if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = ANY(%s)", (slots,)).fetchone():
                return
            time.sleep(0.1)


# -- measuring ----------------------------------------------------------------------------


def verify_copy(bench: Round, target_dsn: str, rows: int, who: str = "cdc") -> None:
    with psycopg.connect(bench.source_dsn) as src, psycopg.connect(target_dsn) as dst:
        source = src.execute(checksum(bench.workload.table)).fetchone()
        target = dst.execute(checksum(bench.workload.table)).fetchone()
    benchlib.check_copy(rows, source, target, who)


def run_round(pg: ThrowawayPostgres, index: int, workdir: Path, args) -> dict[str, Measurement]:
    rows, timeout = args.rows, args.timeout
    bench = create_round(pg, str(index), workdir, WORKLOADS[args.workload])
    setup_cdc(bench)
    anchors.create_anchors(bench.source_dsn, bench.sub_dsn, bench.workload.table)
    started = time.perf_counter()
    end_lsn = write_workload(bench, rows, args.batch)
    progress(f"round {index}: wrote the workload in {time.perf_counter() - started:.1f}s (WAL end {end_lsn})")
    results = benchlib.measure_readers(
        index,
        {
            "raw": lambda: anchors.measure_raw(
                pg, bench.source_dsn, bench.publication, workdir, rows, end_lsn, timeout
            ),
            "sub": lambda: anchors.measure_sub(
                pg,
                bench.source_dsn,
                bench.sub_dsn,
                bench.workload.table,
                rows,
                end_lsn,
                timeout,
                lambda: verify_copy(bench, bench.sub_dsn, rows, "the subscription"),
            ),
            "cdc": lambda: benchlib.measure_cdc(
                bench.config, rows, timeout, lambda: verify_copy(bench, bench.target_dsn, rows)
            ),
        },
        events=benchlib.workload_events(args.workload, rows),
    )
    drop_round(bench)
    return results


def run_detection_round(pg: ThrowawayPostgres, index: int, workdir: Path, args) -> dict[str, Measurement]:
    """``cdc run --drain`` with detection on and off, each on fresh databases, slot and state."""
    rows = args.rows

    def measure(reader: str) -> Measurement:
        detect = reader == "detect_on"
        subdir = workdir / reader
        subdir.mkdir()
        bench = create_round(pg, f"{index}_{'on' if detect else 'off'}", subdir, CUSTOMERS, detect=detect)
        setup_cdc(bench)
        started = time.perf_counter()
        end_lsn = write_detection_workload(bench, rows, args.batch)
        progress(
            f"round {index}: {reader}: wrote {rows} rows and {rows} updates in"
            f" {time.perf_counter() - started:.1f}s (WAL end {end_lsn})"
        )

        def verify() -> None:
            verify_copy(bench, bench.target_dsn, rows)
            bench_detection.verify_state(subdir / "state", rows, detect)

        result = benchlib.measure_cdc(bench.config, rows, args.timeout, verify, reader=reader)
        drop_round(bench)
        return result

    return benchlib.measure_readers(
        index, {reader: (lambda reader=reader: measure(reader)) for reader in bench_detection.READERS}, events=2 * rows
    )


def run_latency_round(pg: ThrowawayPostgres, index: int, workdir: Path, args) -> dict:
    """``cdc run`` streaming single-row inserts into ``public.bench`` (see ``bench_latency``)."""
    port = free_port()
    bench = create_round(pg, f"latency_{index}", workdir, BENCH, http_port=port)
    setup_cdc(bench)
    with psycopg.connect(bench.source_dsn, autocommit=True) as conn:
        result = bench_latency.measure_latency(
            bench.config,
            port,
            workdir,
            lambda row_id: conn.execute(LATENCY_INSERT, (row_id,), prepare=True),
            bench.target_dsn,
            BENCH.table,
            args.rate,
            args.seconds,
            args.timeout,
        )
    verify_copy(bench, bench.target_dsn, result["transactions"] + 1)  # and the probe row
    drop_round(bench)
    return result


# -- reporting ----------------------------------------------------------------------------


def summarize(rounds: list[dict[str, Measurement]], args, server_version: str) -> dict:
    events = benchlib.workload_events(args.workload, args.rows)
    summary = benchlib.summarize(rounds, READERS, args.rows, args.batch, {"postgres": server_version}, events=events)
    summary = {"mode": "throughput", "workload": args.workload, **summary}
    cdc = summary["cdc"]["events_per_second"]
    summary["ratio"] = {
        "cdc/subscription": cdc / summary["sub"]["events_per_second"],
        "cdc/pg_recvlogical": cdc / summary["raw"]["events_per_second"],
    }
    summary["target_ratio"] = TARGET_RATIO
    return summary


def print_report(summary: dict) -> None:
    heading = benchlib.workload_heading(summary["workload"], summary["rows"])
    benchlib.print_table(summary, f"PostgreSQL {summary['postgres']}", LABELS, workload=heading)
    print(
        f"(subscription: from ENABLE until its last row was applied; its slot confirmed the workload's end"
        f" {summary['sub']['detail']['confirmed_seconds']:.2f}s after ENABLE)"
    )
    ratio, target = summary["ratio"], summary["target_ratio"]["cdc/subscription"]
    print(
        f"cdc / native subscription: {ratio['cdc/subscription']:.3f}x"
        f" (target >= {target:g}x: {'met' if ratio['cdc/subscription'] >= target else 'not met'})"
    )
    print(f"cdc / pg_recvlogical:      {ratio['cdc/pg_recvlogical']:.3f}x")


def main(argv: list[str] | None = None) -> int:
    args = benchlib.parse_args(argv, __doc__, fresh="databases and slots", options=bench_detection.add_option)

    def summarize_rounds(versions: dict[str, str], rounds: list) -> dict:
        if args.latency:
            return bench_latency.summarize(rounds, args.rate, args.seconds, versions)
        if args.detection:
            return bench_detection.summarize(rounds, args.rows, args.batch, versions)
        return summarize(rounds, args, versions["postgres"])

    def report(summary: dict) -> None:
        if args.latency:
            bench_latency.print_report(summary, f"PostgreSQL {summary['postgres']} -> cdc -> PostgreSQL")
        elif args.detection:
            bench_detection.print_report(summary, f"PostgreSQL {summary['postgres']}")
        else:
            print_report(summary)

    run = run_latency_round if args.latency else run_detection_round if args.detection else run_round

    def measure() -> tuple[dict[str, str], list]:
        with (
            tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp,
            ThrowawayPostgres(settings=anchors.SERVER_SETTINGS) as pg,
        ):
            with psycopg.connect(pg.dsn()) as conn:
                versions = {"postgres": conn.execute("SHOW server_version").fetchone()[0]}
            rounds = [run(pg, index, workdir, args) for index, workdir in benchlib.round_workdirs(tmp, args.rounds)]
        return versions, rounds

    return benchlib.run_main(
        "bench_pg",
        args,
        measure,
        (BenchError, psycopg.Error, sqlite3.Error, RuntimeError, OSError),
        lambda measured: summarize_rounds(*measured),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
