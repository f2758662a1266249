#!/usr/bin/env python3
"""Throughput of cdc's MariaDB binlog path compared with a bare binlog reader and mariadb-binlog.

What it does, on a throwaway MariaDB server and a throwaway PostgreSQL server
(``devtools.servers.ThrowawayMariaDB`` and ``ThrowawayPostgres``):

1. creates a source database on MariaDB with a CRM-like ``customers`` table and a target
   database on PostgreSQL with the same table (``public.customers``, matching types);
2. writes a cdc config (one ``mysql`` source with its own ``server_id``, one ``postgres`` target
   whose ``table_map`` sends the table to ``public.customers``) and runs ``cdc setup``, which
   records the binlog's current GTID position in cdc's state store as the start of streaming;
   the binlog file/pos and ``@@gtid_binlog_pos`` are recorded at the same moment;
3. writes the workload: ``--rows`` INSERTs into the source, ``--batch`` rows per transaction
   (inserts only: every change is a new row, so the target's row count checks completeness),
   then records the binlog end (``SHOW MASTER STATUS`` file/pos and ``@@gtid_binlog_pos``);
4. with the whole workload already in the binlog, times three readers of that same range:

   * ``mariadb-binlog``: ``mariadb-binlog --read-from-remote-server`` (or ``mysqlbinlog``) from
     the start file/pos to the end file/pos, output to /dev/null. It fetches every event from
     the server and prints it (row events as base64 ``BINLOG`` statements, rows not decoded):
     the ceiling for any client that reads this binlog over the replication protocol.
   * ``bare``: a minimal ``pymysqlreplication.BinLogStreamReader`` loop (``is_mariadb=True``,
     ``auto_position`` = the GTID position before the workload, ``only_events=[WriteRowsEvent,
     XidEvent]``, its own ``server_id``) that decodes every row and counts them, and stops at
     the commit that ends at the workload's end file/pos; the count must equal ``--rows``. It
     runs as a subprocess of the same Python, like cdc, so both times include starting Python
     and importing the library: the difference between ``bare`` and ``cdc`` is what cdc does
     with the rows, not start-up. It streams with ``blocking=True`` (as cdc does) and watches
     for the end itself because ``blocking=False`` does not work here: MariaDB 10.11 resets a
     non-blocking binlog dump of a few MB before a Python client has read it all, and the
     library then silently reconnects from ``auto_position`` and replays the range forever.
   * ``cdc``: ``cdc run --drain`` as a subprocess, from process start until it exits, i.e.
     binlog to rows committed in the postgres target, including cdc's state store (event log
     and row versions). Afterwards the target must hold exactly the source's rows (count and
     an md5 over every row's values, computed client-side from both databases), or the
     benchmark fails.

Each of ``--rounds N`` rounds (default 2) uses fresh source and target databases and fresh cdc
state on the same two servers; the order of the readers alternates (mariadb-binlog, bare, cdc
in odd rounds, the reverse in even ones); the summary uses the median time of each reader.

Reading the report: ``rows/s`` is rows / wall seconds for each reader; each ratio is cdc's rate
divided by the other reader's, e.g. "cdc reaches 0.25x of the bare reader's rate" means that
cdc, doing everything it does per change, keeps up with about a quarter of the rate at which
the same Python library can merely fetch and decode this binlog; the ratio against
mariadb-binlog compares with a C client that does not even decode rows. All times include
connecting; cdc's and the bare reader's include starting Python, so small ``--rows``
understate both.

Usage, from the project root::

    .venv/bin/python scripts/bench_mysql.py [--rows 100000] [--batch 1000] [--rounds 2] [--json]

Exit status 0 on success, 1 on any failure (with the reason on stderr).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
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

import benchlib  # noqa: E402
from benchlib import BenchError, Measurement, progress, require_success  # noqa: E402
from devtools.servers import ThrowawayMariaDB, ThrowawayPostgres  # noqa: E402

TABLE = "customers"
TARGET_TABLE = "public.customers"
READERS = ("mariadb-binlog", "bare", "cdc")
LABELS = {"mariadb-binlog": "mariadb-binlog", "bare": "bare reader", "cdc": "cdc run --drain"}
SOURCE_DDL = """
CREATE TABLE customers (
    id BIGINT PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    email VARCHAR(255),
    phone VARCHAR(32),
    balance DECIMAL(12, 2),
    updated_at DATETIME(6) NOT NULL,
    notes TEXT
) ENGINE=InnoDB
"""
TARGET_DDL = """
CREATE TABLE public.customers (
    id bigint PRIMARY KEY,
    name varchar(100) NOT NULL,
    email varchar(255),
    phone varchar(32),
    balance numeric(12, 2),
    updated_at timestamp(6) NOT NULL,
    notes text
);
"""
# seq_<first>_to_<last> is MariaDB's Sequence engine, built into the server.
INSERT_BATCH = """
INSERT INTO customers (id, name, email, phone, balance, updated_at, notes)
SELECT seq, CONCAT('Customer ', seq), CONCAT('customer', seq, '@example.com'),
       CONCAT('+1-555-', LPAD(seq MOD 10000000, 7, '0')), ROUND(RAND() * 100000, 2),
       NOW(6) - INTERVAL FLOOR(RAND() * 365 * 86400 * 1000000) MICROSECOND, REPEAT(MD5(seq), 3)
FROM seq_{first}_to_{last}
"""
COLUMNS = "id, name, email, phone, balance, updated_at, notes"
# The bare reader, run as `python -c BARE_READER <json settings>`; prints the row count. It stops
# at the first commit (Xid) that ends at or after the workload's end (binlog file number, pos).
BARE_READER = """
import json, sys
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import XidEvent
from pymysqlreplication.row_event import WriteRowsEvent

settings = json.loads(sys.argv[1])
end = tuple(settings["end"])
stream = BinLogStreamReader(
    connection_settings=settings["connection"], server_id=settings["server_id"], blocking=True,
    is_mariadb=True, auto_position=settings["auto_position"], only_events=[WriteRowsEvent, XidEvent],
    only_schemas=[settings["schema"]], only_tables=[settings["table"]], enable_logging=False)
rows = 0
try:
    for event in stream:
        if type(event) is WriteRowsEvent:
            rows += len(event.rows)
        elif (int(stream.log_file.rpartition(".")[2]), stream.log_pos) >= end:
            break
finally:
    stream.close()
print(rows)
"""


@dataclass(frozen=True)
class BinlogPoint:
    """A place in the binlog: file/pos and the GTID position of the last transaction before it."""

    file: str
    pos: int
    gtid: str


@dataclass(frozen=True)
class Round:
    """One round's databases, config and names."""

    index: int
    source_db: str
    source_dsn: str
    target_dsn: str
    config: Path
    server_id: int
    workdir: Path


# -- setting up -------------------------------------------------------------------------


def mysql_connect(mdb: ThrowawayMariaDB, database: str | None = None, **extra) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=mdb.host,
        port=mdb.port,
        user="root",
        password="",
        database=database,
        charset="utf8mb4",
        autocommit=True,
        **extra,
    )


def create_round(mdb: ThrowawayMariaDB, pg: ThrowawayPostgres, index: int, workdir: Path) -> Round:
    source_db, target_db = f"bench_crm_{index}", f"bench_dwh_{index}"
    with mysql_connect(mdb) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{source_db}`")
        cur.execute(f"USE `{source_db}`")
        cur.execute(SOURCE_DDL)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target_db)))
    bench = Round(
        index,
        source_db,
        mdb.dsn(source_db),
        pg.dsn(target_db),
        workdir / "cdc.toml",
        server_id=1000 + index,
        workdir=workdir,
    )
    with psycopg.connect(bench.target_dsn, autocommit=True) as conn:
        conn.execute(TARGET_DDL)
    write_config(bench)
    return bench


def write_config(bench: Round) -> None:
    qualified = f"{bench.source_db}.{TABLE}"
    benchlib.write_cdc_config(
        bench.config,
        bench.workdir / "state",
        source={
            "name": "crm",
            "kind": "mysql",
            "dsn": bench.source_dsn,
            "server_id": bench.server_id,
            "tables": [qualified],
        },
        target={"name": "dwh", "kind": "postgres", "dsn": bench.target_dsn, "table_map": {qualified: TARGET_TABLE}},
    )


def binlog_point(mdb: ThrowawayMariaDB) -> BinlogPoint:
    with mysql_connect(mdb) as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
        if row is None:
            raise BenchError("SHOW MASTER STATUS returned nothing: the binlog is off")
        cur.execute("SELECT @@gtid_binlog_pos")
        gtid = cur.fetchone()[0] or ""
    return BinlogPoint(row[0], int(row[1]), gtid)


def setup_cdc(mdb: ThrowawayMariaDB, bench: Round) -> BinlogPoint:
    """``cdc setup`` (records where streaming starts); the binlog point it recorded."""
    result = benchlib.run_cdc(bench.config, "setup", timeout=60)
    require_success("cdc setup", result)
    start = binlog_point(mdb)
    recorded = re.search(r"binlog position (\S+)", result.stdout)
    if recorded is None or recorded.group(1) != (start.gtid or "(empty"):
        raise BenchError(
            f"cdc setup did not record the binlog's GTID position {start.gtid!r}: "
            f"{result.stdout.strip() or '(no output)'}"
        )
    return start


def write_workload(mdb: ThrowawayMariaDB, bench: Round, rows: int, batch: int) -> BinlogPoint:
    """Insert ``rows`` rows, ``batch`` per transaction; the binlog point after the last commit."""
    with mysql_connect(mdb, bench.source_db) as conn, conn.cursor() as cur:
        for first in range(1, rows + 1, batch):
            cur.execute("BEGIN")
            cur.execute(INSERT_BATCH.format(first=first, last=min(first + batch - 1, rows)))
            cur.execute("COMMIT")
    return binlog_point(mdb)


def binlog_files(mdb: ThrowawayMariaDB, start: BinlogPoint, end: BinlogPoint) -> list[str]:
    """The binlog files from ``start``'s to ``end``'s, in order."""
    with mysql_connect(mdb) as conn, conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        names = [row[0] for row in cur.fetchall()]
    if start.file not in names or end.file not in names:
        raise BenchError(f"binlog files {start.file}..{end.file} are not all on the server ({', '.join(names)})")
    return names[names.index(start.file) : names.index(end.file) + 1]


def range_bytes(mdb: ThrowawayMariaDB, start: BinlogPoint, end: BinlogPoint) -> int:
    """Bytes of binlog between ``start`` and ``end``."""
    files = binlog_files(mdb, start, end)
    if len(files) == 1:
        return end.pos - start.pos
    with mysql_connect(mdb) as conn, conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        sizes = {row[0]: int(row[1]) for row in cur.fetchall()}
    return sizes[start.file] - start.pos + sum(sizes[f] for f in files[1:-1]) + end.pos


# -- measuring ----------------------------------------------------------------------------


def mariadb_binlog() -> str:
    for name in ("mariadb-binlog", "mysqlbinlog"):
        found = shutil.which(name)
        if found:
            return found
    raise BenchError("neither mariadb-binlog nor mysqlbinlog is on PATH (apt-get install mariadb-client)")


def measure_mariadb_binlog(
    mdb: ThrowawayMariaDB, rows: int, start: BinlogPoint, end: BinlogPoint, timeout: float
) -> Measurement:
    argv = [
        mariadb_binlog(),
        "--no-defaults",
        "--read-from-remote-server",
        "--protocol=TCP",
        f"--host={mdb.host}",
        f"--port={mdb.port}",
        "--user=root",
        f"--start-position={start.pos}",
        f"--stop-position={end.pos}",
        *binlog_files(mdb, start, end),
    ]
    started = time.perf_counter()
    try:
        result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"mariadb-binlog did not reach {end.file}:{end.pos} within {timeout:.0f}s") from None
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(
            f"mariadb-binlog exited with code {result.returncode}:\n{result.stderr[-3000:].strip() or '(no output)'}"
        )
    return Measurement("mariadb-binlog", rows, seconds)


def measure_bare(
    mdb: ThrowawayMariaDB, bench: Round, rows: int, start: BinlogPoint, end: BinlogPoint, timeout: float
) -> Measurement:
    settings = {
        "connection": {"host": mdb.host, "port": mdb.port, "user": "root", "password": ""},
        "server_id": 2000 + bench.index,
        "auto_position": start.gtid,
        "end": [int(end.file.rpartition(".")[2]), end.pos],
        "schema": bench.source_db,
        "table": TABLE,
    }
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [sys.executable, "-c", BARE_READER, json.dumps(settings)],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"the bare reader did not reach the binlog's end within {timeout:.0f}s") from None
    seconds = time.perf_counter() - started
    require_success("the bare reader", result)
    counted = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "(nothing)"
    if counted != str(rows):
        raise BenchError(f"the bare reader counted {counted} rows, expected {rows}")
    return Measurement("bare", rows, seconds)


def row_digest(rows) -> tuple[int, str]:
    """Count and md5 of rows, each written as tab-separated values (NULL as \\N)."""
    digest, count = hashlib.md5(), 0
    for row in rows:
        count += 1
        digest.update(("\t".join("\\N" if v is None else str(v) for v in row) + "\n").encode("utf-8"))
    return count, digest.hexdigest()


def _batches(cur, size: int = 5000):
    while chunk := cur.fetchmany(size):
        yield from chunk


def verify_target(mdb: ThrowawayMariaDB, bench: Round, rows: int) -> None:
    query = f"SELECT {COLUMNS} FROM {{}} ORDER BY id"
    with mysql_connect(mdb, bench.source_db, cursorclass=pymysql.cursors.SSCursor) as conn, conn.cursor() as cur:
        cur.execute(query.format(TABLE))
        source = row_digest(_batches(cur))
    with psycopg.connect(bench.target_dsn) as conn, conn.cursor(name="bench_rows") as cur:
        cur.execute(query.format(TARGET_TABLE))
        target = row_digest(_batches(cur))
    benchlib.check_copy(rows, source, target)


def run_round(
    mdb: ThrowawayMariaDB, pg: ThrowawayPostgres, index: int, workdir: Path, rows: int, batch: int, timeout: float
) -> tuple[dict[str, Measurement], dict]:
    bench = create_round(mdb, pg, index, workdir)
    start = setup_cdc(mdb, bench)
    started = time.perf_counter()
    end = write_workload(mdb, bench, rows, batch)
    size = range_bytes(mdb, start, end)
    progress(
        f"round {index}: wrote {rows} rows in {time.perf_counter() - started:.1f}s, {size / 1e6:.1f} MB of"
        f" binlog ({start.file}:{start.pos} .. {end.file}:{end.pos}, GTID {start.gtid} .. {end.gtid})"
    )
    results = benchlib.measure_readers(
        index,
        {
            "mariadb-binlog": lambda: measure_mariadb_binlog(mdb, rows, start, end, timeout),
            "bare": lambda: measure_bare(mdb, bench, rows, start, end, timeout),
            "cdc": lambda: benchlib.measure_cdc(bench.config, rows, timeout, lambda: verify_target(mdb, bench, rows)),
        },
    )
    binlog = {"start": asdict(start), "end": asdict(end), "bytes": size}
    return results, binlog


# -- reporting ----------------------------------------------------------------------------


def summarize(
    rounds: list[tuple[dict[str, Measurement], dict]], rows: int, batch: int, versions: dict[str, str]
) -> dict:
    summary = benchlib.summarize(
        [results for results, _ in rounds],
        READERS,
        rows,
        batch,
        versions,
        extras=[{"binlog": binlog} for _, binlog in rounds],
    )
    cdc_rate = summary["cdc"]["rows_per_second"]
    summary["ratio"] = {
        "cdc/bare": cdc_rate / summary["bare"]["rows_per_second"],
        "cdc/mariadb-binlog": cdc_rate / summary["mariadb-binlog"]["rows_per_second"],
    }
    return summary


def print_report(summary: dict) -> None:
    benchlib.print_table(summary, f"MariaDB {summary['mariadb']} -> PostgreSQL {summary['postgres']}", LABELS)
    for other, what in (
        ("bare", "the bare pymysqlreplication reader's rate"),
        ("mariadb-binlog", "mariadb-binlog's raw read rate"),
    ):
        ratio = summary["ratio"][f"cdc/{other}"]
        print(f"cdc reaches {ratio:.3f}x of {what} (it is {1 / ratio:.1f}x faster than cdc)")


def server_versions(mdb: ThrowawayMariaDB, pg: ThrowawayPostgres) -> dict[str, str]:
    with mysql_connect(mdb) as conn, conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        mariadb = cur.fetchone()[0]
    with psycopg.connect(pg.dsn()) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    return {"mariadb": mariadb, "postgres": postgres}


def main(argv: list[str] | None = None) -> int:
    args = benchlib.parse_args(argv, __doc__, fresh="databases and cdc state")

    def measure() -> tuple[dict[str, str], list[tuple[dict[str, Measurement], dict]]]:
        mariadb_binlog()
        with (
            tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp,
            ThrowawayMariaDB() as mdb,
            ThrowawayPostgres() as pg,
        ):
            versions = server_versions(mdb, pg)
            rounds = [
                run_round(mdb, pg, index, workdir, args.rows, args.batch, args.timeout)
                for index, workdir in benchlib.round_workdirs(tmp, args.rounds)
            ]
        return versions, rounds

    return benchlib.run_main(
        "bench_mysql",
        args,
        measure,
        (BenchError, psycopg.Error, pymysql.Error, RuntimeError, OSError),
        lambda measured: summarize(measured[1], args.rows, args.batch, measured[0]),
        print_report,
    )


if __name__ == "__main__":
    sys.exit(main())
