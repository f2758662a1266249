"""The MariaDB side of ``scripts/bench_mysql.py``: connections, binlog positions, ``cdc setup`` (which
records the binlog's GTID position as the start of streaming, checked against ``@@gtid_binlog_pos``),
and the two anchors timed beside ``cdc run --drain`` on the same binlog range.

* ``mariadb-binlog`` (``measure_mariadb_binlog``): ``mariadb-binlog --read-from-remote-server``
  (or ``mysqlbinlog``) from the start file/pos to the end file/pos, output to /dev/null. It
  fetches every event from the server and prints it (row events as base64 ``BINLOG``
  statements, rows not decoded): the ceiling for any client of the replication protocol.
* ``bare`` (``measure_bare``): a minimal ``pymysqlreplication.BinLogStreamReader`` loop
  (``is_mariadb=True``, ``auto_position`` = the GTID position before the workload,
  ``only_events=[WriteRowsEvent, UpdateRowsEvent, XidEvent]``, its own ``server_id``) that decodes
  every row and counts them (an update's before and after image count once), and stops at the
  commit that ends at the workload's end file/pos; the count must equal the workload's events.
  It runs as a subprocess of the same Python, like cdc, so both times include starting Python
  and importing the library: the difference between ``bare`` and ``cdc`` is what cdc does with
  the rows, not start-up. It streams with ``blocking=True`` (as cdc does) and watches for the
  end itself because ``blocking=False`` does not work here: MariaDB 10.11 resets a non-blocking
  binlog dump of a few MB before a Python client has read it all, and the library then silently
  reconnects from ``auto_position`` and replays the range forever.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

from benchlib import PROJECT, BenchError, Measurement, require_success, run_cdc
from devtools.servers import ThrowawayMariaDB

# The bare reader, run as `python -c BARE_READER <json settings>`; prints the row count. It stops
# at the first commit (Xid) that ends at or after the workload's end (binlog file number, pos).
BARE_READER = """
import json, sys
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import XidEvent
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

settings = json.loads(sys.argv[1])
end = tuple(settings["end"])
stream = BinLogStreamReader(
    connection_settings=settings["connection"], server_id=settings["server_id"], blocking=True,
    is_mariadb=True, auto_position=settings["auto_position"],
    only_events=[WriteRowsEvent, UpdateRowsEvent, XidEvent],
    only_schemas=[settings["schema"]], only_tables=[settings["table"]], enable_logging=False)
rows = 0
try:
    for event in stream:
        kind = type(event)
        if kind is WriteRowsEvent or kind is UpdateRowsEvent:
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


def binlog_point(mdb: ThrowawayMariaDB) -> BinlogPoint:
    with mysql_connect(mdb) as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
        if row is None:
            raise BenchError("SHOW MASTER STATUS returned nothing: the binlog is off")
        cur.execute("SELECT @@gtid_binlog_pos")
        gtid = cur.fetchone()[0] or ""
    return BinlogPoint(row[0], int(row[1]), gtid)


def setup_cdc(mdb: ThrowawayMariaDB, config: Path) -> BinlogPoint:
    """``cdc setup`` (records where streaming starts); the binlog point it recorded."""
    result = run_cdc(config, "setup", timeout=60)
    require_success("cdc setup", result)
    start = binlog_point(mdb)
    recorded = re.search(r"binlog position (\S+)", result.stdout)
    if recorded is None or recorded.group(1) != (start.gtid or "(empty"):
        raise BenchError(
            f"cdc setup did not record the binlog's GTID position {start.gtid!r}: "
            f"{result.stdout.strip() or '(no output)'}"
        )
    return start


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


def mariadb_binlog() -> str:
    for name in ("mariadb-binlog", "mysqlbinlog"):
        found = shutil.which(name)
        if found:
            return found
    raise BenchError("neither mariadb-binlog nor mysqlbinlog is on PATH (apt-get install mariadb-client)")


def measure_mariadb_binlog(
    mdb: ThrowawayMariaDB, rows: int, start: BinlogPoint, end: BinlogPoint, timeout: float
) -> Measurement:
    argv = [mariadb_binlog(), "--no-defaults", "--read-from-remote-server", "--protocol=TCP"]
    argv += [f"--host={mdb.host}", f"--port={mdb.port}", "--user=root"]
    argv += [f"--start-position={start.pos}", f"--stop-position={end.pos}", *binlog_files(mdb, start, end)]
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
    mdb: ThrowawayMariaDB,
    server_id: int,
    schema: str,
    table: str,
    rows: int,
    events: int,
    start: BinlogPoint,
    end: BinlogPoint,
    timeout: float,
) -> Measurement:
    """The bare reader from ``start`` to ``end``; it must count ``events`` changed rows."""
    settings = {
        "connection": {"host": mdb.host, "port": mdb.port, "user": "root", "password": ""},
        "server_id": server_id,
        "auto_position": start.gtid,
        "end": [int(end.file.rpartition(".")[2]), end.pos],
        "schema": schema,
        "table": table,
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
    if counted != str(events):
        raise BenchError(f"the bare reader counted {counted} changed rows, expected {events}")
    return Measurement("bare", rows, seconds)
