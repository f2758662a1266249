#!/usr/bin/env python3
"""Throughput of cdc's MariaDB binlog path compared with a bare binlog reader and mariadb-binlog; or
(``--latency``) cdc's commit-to-target latency; or (``--detection``) conflict detection on against off.

The throughput mode (the default), on a throwaway MariaDB server and a throwaway PostgreSQL
server (``devtools.servers.ThrowawayMariaDB`` and ``ThrowawayPostgres``):

1. creates a source database on MariaDB and a target database on PostgreSQL with the workload's
   table: ``--workload bench`` (the default): ``bench (id BIGINT PRIMARY KEY, a INT, b TEXT, c
   DATETIME(6))``, in the target ``public.bench (id bigint primary key, a int, b text, c
   timestamp(6))``; ``--workload customers``: a CRM-like ``customers`` with matching types;
2. writes a cdc config (one ``mysql`` source with its own ``server_id``, one ``postgres`` target
   whose ``table_map`` sends the table to ``public.<table>``) and runs ``cdc setup``, which
   records the binlog's current GTID position in cdc's state store as the start of streaming;
   the binlog file/pos and ``@@gtid_binlog_pos`` are recorded at the same moment;
3. writes the workload, ``--batch`` rows per transaction: ``bench``: ``--rows`` INSERTs, then an
   UPDATE of every row (a, b and c change), 2 x ``--rows`` events (changed rows); ``customers``:
   ``--rows`` INSERTs; then records the binlog end (``SHOW MASTER STATUS``, ``@@gtid_binlog_pos``);
4. with the whole workload already in the binlog, times three readers of that same range (in
   this order in odd rounds, reversed in even ones; see ``scripts/bench_binlog.py``):

   * ``mariadb-binlog``: ``mariadb-binlog --read-from-remote-server`` over the range to
     /dev/null: fetching without decoding rows, the ceiling of any replication client.
   * ``bare``: a minimal ``pymysqlreplication.BinLogStreamReader`` loop in a Python subprocess
     that decodes and counts every inserted and updated row (it must count every event) and
     stops at the workload's end: what the library cdc uses costs by itself.
   * ``cdc``: ``cdc run --drain`` as a subprocess, from process start until it exits, i.e.
     binlog to rows committed in the postgres target, including cdc's state store (event log
     and row versions). Afterwards the target must hold exactly the source's rows (count and
     an md5 over every row's values, computed client-side from both databases), or the
     benchmark fails.

Each of ``--rounds N`` rounds (default 2) uses fresh source and target databases and fresh cdc
state on the same two servers; the summary uses the median time of each reader.

Reading the report: one line per reader with events, seconds, events/s (changed rows per
second) and µs/event; then cdc's rate divided by the others'. The main ratio is "cdc / bare
reader" (the target is >= 0.8x): how much of the rate at which the same Python library
can merely fetch and decode this binlog cdc keeps up with, doing everything it does per change.
"cdc / mariadb-binlog" compares with a C client that does not even decode rows. All times
include connecting; cdc's and the bare reader's include starting Python, so small ``--rows``
understate both.

``--latency`` and ``--detection`` work as in ``scripts/bench_pg.py`` (see
``scripts/bench_latency.py`` and ``scripts/bench_detection.py``), with MariaDB as the source:
``--latency`` streams single-row INSERTs into ``bench`` at ``--rate`` per second (default 500)
for ``--seconds`` (default 20) through ``cdc run`` and reports p50, p90, p99 and max of
commit-to-target latency (targets: p50 <= 30 ms, p99 <= 100 ms); ``--detection`` times ``cdc
run --drain`` with ``[conflicts] detect`` on and off on its own workload (``customers`` with
``status``, ``version`` and ``updated_by`` columns, ``--rows`` inserts and an update of every
row, 2 x ``--rows`` events) and reports detection's overhead (target: under 15%).
``--workload`` applies to the throughput mode only.

Usage, from the project root::

    .venv/bin/python scripts/bench_mysql.py [--workload bench|customers] [--rows 100000] [--batch 1000]
        [--rounds 2] [--json]
    .venv/bin/python scripts/bench_mysql.py --latency [--rate 500] [--seconds 20] [--rounds 1]
    .venv/bin/python scripts/bench_mysql.py --detection [--rows 100000] [--batch 1000]

Exit status 0 on success, 1 on any failure (with the reason on stderr).
"""

from __future__ import annotations

import itertools
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
PROJECT = SCRIPTS.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(SCRIPTS))

import psycopg  # noqa: E402
import pymysql  # noqa: E402
from psycopg import sql  # noqa: E402

import bench_binlog as binlog  # noqa: E402
import bench_detection  # noqa: E402
import bench_latency  # noqa: E402
import benchlib  # noqa: E402
from bench_binlog import BinlogPoint, mysql_connect  # noqa: E402
from benchlib import BenchError, Measurement, progress  # noqa: E402
from devtools.servers import ThrowawayMariaDB, ThrowawayPostgres, free_port  # noqa: E402

READERS = ("mariadb-binlog", "bare", "cdc")
LABELS = {"mariadb-binlog": "mariadb-binlog", "bare": "bare reader", "cdc": "cdc run --drain"}
TARGET_RATIO = {"cdc/bare": 0.8}
SERVER_IDS = itertools.count(1001)  # cdc's server_id, one per round; the bare reader's is 1000 more


@dataclass(frozen=True)
class Workload:
    table: str
    source_ddl: str
    target_ddl: str
    columns: str  # the digest's columns, in order
    insert: str  # formatted with first and last id
    update: str | None  # the same; None: inserts only


BENCH = Workload(
    "bench",
    "CREATE TABLE bench (id BIGINT PRIMARY KEY, a INT, b TEXT, c DATETIME(6)) ENGINE=InnoDB",
    "CREATE TABLE public.bench (id bigint PRIMARY KEY, a int, b text, c timestamp(6))",
    "id, a, b, c",
    # seq_<first>_to_<last> is MariaDB's Sequence engine, built into the server.
    "INSERT INTO bench (id, a, b, c) SELECT seq, seq MOD 1000, MD5(seq), NOW(6) FROM seq_{first}_to_{last}",
    "UPDATE bench SET a = a + 1, b = MD5(b), c = c + INTERVAL 1 SECOND WHERE id BETWEEN {first} AND {last}",
)
CUSTOMERS = Workload(
    "customers",
    """
CREATE TABLE customers (
    id BIGINT PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    email VARCHAR(255),
    phone VARCHAR(32),
    balance DECIMAL(12, 2),
    updated_at DATETIME(6) NOT NULL,
    notes TEXT
) ENGINE=InnoDB
""",
    """
CREATE TABLE public.customers (
    id bigint PRIMARY KEY,
    name varchar(100) NOT NULL,
    email varchar(255),
    phone varchar(32),
    balance numeric(12, 2),
    updated_at timestamp(6) NOT NULL,
    notes text
);
""",
    "id, name, email, phone, balance, updated_at, notes",
    """
INSERT INTO customers (id, name, email, phone, balance, updated_at, notes)
SELECT seq, CONCAT('Customer ', seq), CONCAT('customer', seq, '@example.com'),
       CONCAT('+1-555-', LPAD(seq MOD 10000000, 7, '0')), ROUND(RAND() * 100000, 2),
       NOW(6) - INTERVAL FLOOR(RAND() * 365 * 86400 * 1000000) MICROSECOND, REPEAT(MD5(seq), 3)
FROM seq_{first}_to_{last}
""",
    None,
)
WORKLOADS = {"bench": BENCH, "customers": CUSTOMERS}
LATENCY_INSERT = "INSERT INTO bench (id, a, b, c) VALUES (%s, 0, 'latency', NOW(6))"
# --detection: customers with writer, version and status columns; inserts, then an update of each row
DETECTION = Workload(
    "customers",
    CUSTOMERS.source_ddl,
    CUSTOMERS.target_ddl,
    CUSTOMERS.columns + ", status, version, updated_by",
    CUSTOMERS.insert,
    "UPDATE customers SET balance = balance + ROUND(RAND() * 1000, 2), status = 'customer',"
    " version = version + 1, updated_by = 'sales-app', updated_at = NOW(6) WHERE id BETWEEN {first} AND {last}",
)
DETECTION_COLUMNS = (
    "ALTER TABLE customers ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'lead',"
    " ADD COLUMN version INT NOT NULL DEFAULT 1, ADD COLUMN updated_by VARCHAR(40) NOT NULL DEFAULT 'import'",
    "ALTER TABLE public.customers ADD COLUMN status text NOT NULL DEFAULT 'lead',"
    " ADD COLUMN version integer NOT NULL DEFAULT 1, ADD COLUMN updated_by text NOT NULL DEFAULT 'import'",
)


@dataclass(frozen=True)
class Round:
    """One round's databases, config and names."""

    workload: Workload
    source_db: str
    source_dsn: str
    target_dsn: str
    config: Path
    server_id: int
    workdir: Path


# -- setting up -------------------------------------------------------------------------


def create_round(
    mdb: ThrowawayMariaDB,
    pg: ThrowawayPostgres,
    name: str,
    workdir: Path,
    workload: Workload,
    detect: bool | None = None,
    http_port: int | None = None,
) -> Round:
    """Databases, tables and cdc config named after ``name``; with ``detect`` (True or False) the
    detection columns and rules and ``[conflicts] detect = <detect>``; with ``http_port`` cdc's
    ``[http] listen`` on it."""
    source_db, target_db = f"bench_crm_{name}", f"bench_dwh_{name}"
    with mysql_connect(mdb) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{source_db}`")
        cur.execute(f"USE `{source_db}`")
        cur.execute(workload.source_ddl)
        if detect is not None:
            cur.execute(DETECTION_COLUMNS[0])
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target_db)))
    bench = Round(
        workload, source_db, mdb.dsn(source_db), pg.dsn(target_db), workdir / "cdc.toml", next(SERVER_IDS), workdir
    )
    with psycopg.connect(bench.target_dsn, autocommit=True) as conn:
        conn.execute(workload.target_ddl)
        if detect is not None:
            conn.execute(DETECTION_COLUMNS[1])
    qualified = f"{source_db}.{workload.table}"
    benchlib.write_cdc_config(
        bench.config,
        workdir / "state",
        source={
            "name": "crm",
            "kind": "mysql",
            "dsn": bench.source_dsn,
            "server_id": bench.server_id,
            "tables": [qualified],
        },
        target={
            "name": "dwh",
            "kind": "postgres",
            "dsn": bench.target_dsn,
            "table_map": {qualified: f"public.{workload.table}"},
        },
        tables=None if detect is None else [bench_detection.rules(qualified)],
        conflicts=None if detect is None else {"detect": detect},
        http=None if http_port is None else {"listen": f"127.0.0.1:{http_port}"},
    )
    return bench


def write_workload(
    mdb: ThrowawayMariaDB, bench: Round, rows: int, batch: int, interleaved: bool = False
) -> BinlogPoint:
    """The workload's inserts, then its updates, ``batch`` rows per transaction (``interleaved``:
    after each insert batch an update of the batch before it, at the end of the last batch); the
    binlog point after the last commit."""
    batches = [(first, min(first + batch - 1, rows)) for first in range(1, rows + 1, batch)]
    insert, update = bench.workload.insert, bench.workload.update
    if update is None:
        statements = [(insert, b) for b in batches]
    elif interleaved:
        statements = [(insert, batches[0])]
        for previous, current in zip(batches, batches[1:]):
            statements += [(insert, current), (update, previous)]
        statements.append((update, batches[-1]))
    else:
        statements = [(insert, b) for b in batches] + [(update, b) for b in batches]
    with mysql_connect(mdb, bench.source_db) as conn, conn.cursor() as cur:
        for statement, (first, last) in statements:
            cur.execute("BEGIN")
            cur.execute(statement.format(first=first, last=last))
            cur.execute("COMMIT")
    return binlog.binlog_point(mdb)


# -- measuring ----------------------------------------------------------------------------


def verify_target(mdb: ThrowawayMariaDB, bench: Round, rows: int) -> None:
    query = f"SELECT {bench.workload.columns} FROM {{}} ORDER BY id"
    with mysql_connect(mdb, bench.source_db, cursorclass=pymysql.cursors.SSCursor) as conn, conn.cursor() as cur:
        cur.execute(query.format(bench.workload.table))
        source = benchlib.row_digest(benchlib.fetch_batches(cur))
    with psycopg.connect(bench.target_dsn) as conn, conn.cursor(name="bench_rows") as cur:
        cur.execute(query.format(f"public.{bench.workload.table}"))
        target = benchlib.row_digest(benchlib.fetch_batches(cur))
    benchlib.check_copy(rows, source, target)


def run_round(mdb: ThrowawayMariaDB, pg: ThrowawayPostgres, index: int, workdir: Path, args) -> tuple[dict, dict]:
    rows, timeout = args.rows, args.timeout
    events = benchlib.workload_events(args.workload, rows)
    bench = create_round(mdb, pg, str(index), workdir, WORKLOADS[args.workload])
    start = binlog.setup_cdc(mdb, bench.config)
    started = time.perf_counter()
    end = write_workload(mdb, bench, rows, args.batch)
    size = binlog.range_bytes(mdb, start, end)
    progress(
        f"round {index}: wrote {events} changes in {time.perf_counter() - started:.1f}s, {size / 1e6:.1f} MB of"
        f" binlog ({start.file}:{start.pos} .. {end.file}:{end.pos}, GTID {start.gtid} .. {end.gtid})"
    )
    table = bench.workload.table
    results = benchlib.measure_readers(
        index,
        {
            "mariadb-binlog": lambda: binlog.measure_mariadb_binlog(mdb, rows, start, end, timeout),
            "bare": lambda: binlog.measure_bare(
                mdb, bench.server_id + 1000, bench.source_db, table, rows, events, start, end, timeout
            ),
            "cdc": lambda: benchlib.measure_cdc(bench.config, rows, timeout, lambda: verify_target(mdb, bench, rows)),
        },
        events=events,
    )
    return results, {"start": asdict(start), "end": asdict(end), "bytes": size}


def run_detection_round(
    mdb: ThrowawayMariaDB, pg: ThrowawayPostgres, index: int, workdir: Path, args
) -> dict[str, Measurement]:
    """``cdc run --drain`` with detection on and off, each on fresh databases and state."""
    rows = args.rows

    def measure(reader: str) -> Measurement:
        detect = reader == "detect_on"
        subdir = workdir / reader
        subdir.mkdir()
        bench = create_round(mdb, pg, f"{index}_{'on' if detect else 'off'}", subdir, DETECTION, detect=detect)
        binlog.setup_cdc(mdb, bench.config)
        started = time.perf_counter()
        write_workload(mdb, bench, rows, args.batch, interleaved=True)
        progress(
            f"round {index}: {reader}: wrote {rows} rows and {rows} updates in {time.perf_counter() - started:.1f}s"
        )

        def verify() -> None:
            verify_target(mdb, bench, rows)
            bench_detection.verify_state(subdir / "state", rows, detect)

        return benchlib.measure_cdc(bench.config, rows, args.timeout, verify, reader=reader)

    return benchlib.measure_readers(
        index, {reader: (lambda reader=reader: measure(reader)) for reader in bench_detection.READERS}, events=2 * rows
    )


def run_latency_round(mdb: ThrowawayMariaDB, pg: ThrowawayPostgres, index: int, workdir: Path, args) -> dict:
    """``cdc run`` streaming single-row inserts into ``bench`` (see ``bench_latency``)."""
    port = free_port()
    bench = create_round(mdb, pg, f"latency_{index}", workdir, BENCH, http_port=port)
    binlog.setup_cdc(mdb, bench.config)
    with mysql_connect(mdb, bench.source_db) as conn, conn.cursor() as cur:
        result = bench_latency.measure_latency(
            bench.config,
            port,
            workdir,
            lambda row_id: cur.execute(LATENCY_INSERT, (row_id,)),
            bench.target_dsn,
            f"public.{BENCH.table}",
            args.rate,
            args.seconds,
            args.timeout,
        )
    verify_target(mdb, bench, result["transactions"] + 1)  # and the probe row
    return result


# -- reporting ----------------------------------------------------------------------------


def summarize(rounds: list[tuple[dict[str, Measurement], dict]], args, versions: dict[str, str]) -> dict:
    summary = benchlib.summarize(
        [results for results, _ in rounds],
        READERS,
        args.rows,
        args.batch,
        versions,
        extras=[{"binlog": binlog} for _, binlog in rounds],
        events=benchlib.workload_events(args.workload, args.rows),
    )
    summary = {"mode": "throughput", "workload": args.workload, **summary}
    cdc_rate = summary["cdc"]["events_per_second"]
    summary["ratio"] = {
        "cdc/bare": cdc_rate / summary["bare"]["events_per_second"],
        "cdc/mariadb-binlog": cdc_rate / summary["mariadb-binlog"]["events_per_second"],
    }
    summary["target_ratio"] = TARGET_RATIO
    return summary


def print_report(summary: dict) -> None:
    heading = benchlib.workload_heading(summary["workload"], summary["rows"])
    benchlib.print_table(summary, servers(summary), LABELS, workload=heading)
    ratio, target = summary["ratio"], summary["target_ratio"]["cdc/bare"]
    print(
        f"cdc / bare reader:    {ratio['cdc/bare']:.3f}x (target >= {target:g}x:"
        f" {'met' if ratio['cdc/bare'] >= target else 'not met'})"
    )
    print(f"cdc / mariadb-binlog: {ratio['cdc/mariadb-binlog']:.3f}x")


def servers(summary: dict) -> str:
    return f"MariaDB {summary['mariadb']} -> PostgreSQL {summary['postgres']}"


def server_versions(mdb: ThrowawayMariaDB, pg: ThrowawayPostgres) -> dict[str, str]:
    with mysql_connect(mdb) as conn, conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        mariadb = cur.fetchone()[0]
    with psycopg.connect(pg.dsn()) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    return {"mariadb": mariadb, "postgres": postgres}


def main(argv: list[str] | None = None) -> int:
    args = benchlib.parse_args(argv, __doc__, fresh="databases and cdc state", options=bench_detection.add_option)
    run = run_latency_round if args.latency else run_detection_round if args.detection else run_round

    def summarize_rounds(versions: dict[str, str], rounds: list) -> dict:
        if args.latency:
            return bench_latency.summarize(rounds, args.rate, args.seconds, versions)
        if args.detection:
            return bench_detection.summarize(rounds, args.rows, args.batch, versions)
        return summarize(rounds, args, versions)

    def report(summary: dict) -> None:
        if args.latency:
            bench_latency.print_report(summary, servers(summary).replace(" -> ", " -> cdc -> "))
        elif args.detection:
            bench_detection.print_report(summary, servers(summary))
        else:
            print_report(summary)

    def measure() -> tuple[dict[str, str], list]:
        if not args.latency and not args.detection:
            binlog.mariadb_binlog()
        with (
            tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp,
            ThrowawayMariaDB() as mdb,
            ThrowawayPostgres() as pg,
        ):
            versions = server_versions(mdb, pg)
            rounds = [
                run(mdb, pg, index, workdir, args) for index, workdir in benchlib.round_workdirs(tmp, args.rounds)
            ]
        return versions, rounds

    return benchlib.run_main(
        "bench_mysql",
        args,
        measure,
        (BenchError, psycopg.Error, pymysql.Error, sqlite3.Error, RuntimeError, OSError),
        lambda measured: summarize_rounds(*measured),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
