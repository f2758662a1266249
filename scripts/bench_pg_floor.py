#!/usr/bin/env python3
"""The floor of any Python pipeline with cdc's contract on PostgreSQL, stage by stage, beside
PostgreSQL's own subscription: how fast could cdc be at best on this machine?

On a throwaway server and the throughput workload of ``scripts/bench_pg.py`` (``public.bench``,
``--rows`` inserts then an update of every row, ``--batch`` rows per transaction), after timing
the native subscription on it, this times the least work each stage of a change-data-capture
pipeline must do in Python, one stage after another over the whole workload, each in the
leanest form that is still correct for this one table (no conflict detection, no event
objects, no configuration, no error handling, no Python start-up):

* ``read``: the pgoutput stream over a replication connection (psycopg's ``PGconn``), every
  CopyData message kept as bytes;
* ``decode``: each Insert and Update message into a tuple of column texts;
* ``document``: each change's JSON event document (``json.dumps`` of each text value);
* ``state``: the events and each row's version into SQLite (WAL, synchronous=NORMAL), one
  transaction and two ``executemany`` per source transaction;
* ``copy text``: the COPY input of each source transaction (the target's share in Python);
* ``apply``: COPY into a temporary staging table and one ``INSERT ... SELECT ... ON CONFLICT DO
  UPDATE`` per source transaction, then commit (mostly the target server's work).

The report gives each stage's seconds and µs/event, their sum (the serial floor), and the
two-core bound: the sum halved, as if every stage ran in parallel on both cores with no
hand-over cost. That bound is optimistic (a stage where Python and a server both work, such as
reading, takes more CPU than its wall time), so a ratio to the subscription above it is out of
reach of any Python design with an event log on this machine.

Usage, from the project root::

    .venv/bin/python scripts/bench_pg_floor.py [--rows 100000] [--batch 1000] [--rounds 2] [--json]

Exit status 0 on success, 1 on any failure (with the reason on stderr).
"""

from __future__ import annotations

import json
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
PROJECT = SCRIPTS.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(SCRIPTS))

import psycopg  # noqa: E402
from psycopg import pq  # noqa: E402

import bench_pg  # noqa: E402
import bench_pg_anchors as anchors  # noqa: E402
import benchlib  # noqa: E402
from benchlib import BenchError, progress  # noqa: E402
from cdc.dsn import conninfo  # noqa: E402
from cdc.sources.postgres.protocol import parse_lsn  # noqa: E402
from devtools.servers import ThrowawayPostgres  # noqa: E402

STAGES = ("read", "decode", "document", "state", "copy text", "apply")
COLUMNS = ("id", "a", "b", "c")
_INT16 = struct.Struct(">h").unpack_from
_INT32 = struct.Struct(">i").unpack_from
_LSN = struct.Struct(">Q").unpack_from
_HEADER = 25  # XLogData: 'w', start, end, send time


def read_stream(dsn: str, slot: str, publication: str, end_lsn: int) -> list[bytes]:
    info = conninfo(dsn, None, replication="database", client_encoding="UTF8")
    conn = pq.PGconn.connect(info.encode())
    try:
        command = (
            f"START_REPLICATION SLOT \"{slot}\" LOGICAL 0/0 (proto_version '1', publication_names '\"{publication}\"')"
        )
        if conn.exec_(command.encode()).status != pq.ExecStatus.COPY_BOTH:
            raise BenchError(f"START_REPLICATION failed: {conn.get_error_message()!r}")
        messages, position = [], 0
        while position < end_lsn:
            size, data = conn.get_copy_data(0)
            if size <= 0:
                raise BenchError("the replication stream ended early")
            if data[0] == 0x77:  # 'w'
                messages.append(bytes(data))
                position = max(position, _LSN(data, 1)[0])
        return messages
    finally:
        conn.finish()


def _tuple(message: bytes, at: int) -> tuple[list[str | None], int]:
    values: list[str | None] = []
    for _ in range(_INT16(message, at)[0]):
        kind = message[at + 2]
        at += 1
        if kind == 0x74:  # 't'
            size = _INT32(message, at + 2)[0]
            values.append(message[at + 6 : at + 6 + size].decode())
            at += 4 + size
        else:
            values.append(None)
    return values, at + 2


def decode(messages: list[bytes]) -> list[tuple[str, list | None, list]]:
    changes = []
    for message in messages:
        kind = message[_HEADER]
        if kind == 0x49:  # 'I', relid, 'N', tuple
            changes.append(("insert", None, _tuple(message, _HEADER + 6)[0]))
        elif kind == 0x55:  # 'U', relid, ['O' old tuple], 'N', tuple
            at, old = _HEADER + 5, None
            if message[at] in (0x4F, 0x4B):
                old, at = _tuple(message, at + 1)
            changes.append(("update", old, _tuple(message, at + 1)[0]))
    return changes


def documents(changes: list) -> list[tuple[str, str, str]]:
    dumps, rows = json.dumps, []
    for number, (op, before, after) in enumerate(changes):
        after_json = "{" + ",".join(f'"{c}":{dumps(v)}' for c, v in zip(COLUMNS, after)) + "}"
        before_json = (
            "null" if before is None else "{" + ",".join(f'"{c}":{dumps(v)}' for c, v in zip(COLUMNS, before)) + "}"
        )
        key = f"[{after[0]}]"
        event_id = f"crm:{number}"
        rows.append(
            (
                event_id,
                key,
                f'{{"event_id":"{event_id}","op":"{op}","key":{key},"before":{before_json},"after":{after_json}}}',
            )
        )
    return rows


def store(path: Path, rows: list[tuple[str, str, str]], batch: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE events (event_id TEXT PRIMARY KEY, key TEXT, doc TEXT)")
    db.execute("CREATE TABLE versions (key TEXT PRIMARY KEY, version INTEGER)")
    versions: dict[str, int] = {}
    for first in range(0, len(rows), batch):
        chunk = rows[first : first + batch]
        db.execute("BEGIN")
        db.executemany("INSERT INTO events VALUES (?, ?, ?)", chunk)
        changed = []
        for _, key, _ in chunk:
            versions[key] = version = versions.get(key, 0) + 1
            changed.append((key, version))
        db.executemany(
            "INSERT INTO versions VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET version = excluded.version", changed
        )
        db.execute("COMMIT")
    db.close()


def copy_texts(changes: list, batch: int) -> list[str]:
    return [
        "".join("\t".join(after) + "\n" for _, _, after in changes[first : first + batch])
        for first in range(0, len(changes), batch)
    ]


def apply(dsn: str, texts: list[str]) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMPORARY TABLE stage (LIKE public.bench) ON COMMIT DELETE ROWS")
        conn.commit()
        for text in texts:
            with conn.cursor() as cur:
                with cur.copy("COPY stage FROM STDIN") as copy:
                    copy.write(text)
                cur.execute(
                    "INSERT INTO public.bench SELECT * FROM stage ON CONFLICT (id) DO UPDATE"
                    " SET a = excluded.a, b = excluded.b, c = excluded.c"
                )
            conn.commit()


def run_round(pg: ThrowawayPostgres, index: int, workdir: Path, args) -> dict:
    bench = bench_pg.create_round(pg, f"floor_{index}", workdir, bench_pg.BENCH)
    bench_pg.setup_cdc(bench)
    anchors.create_anchors(bench.source_dsn, bench.sub_dsn, bench.workload.table)
    end_lsn = bench_pg.write_workload(bench, args.rows, args.batch)
    sub = anchors.measure_sub(
        pg,
        bench.source_dsn,
        bench.sub_dsn,
        bench.workload.table,
        args.rows,
        end_lsn,
        args.timeout,
        lambda: bench_pg.verify_copy(bench, bench.sub_dsn, args.rows, "the subscription"),
    )
    seconds: dict[str, float] = {}

    def timed(stage: str, work):
        started = time.perf_counter()
        result = work()
        seconds[stage] = time.perf_counter() - started
        return result

    messages = timed("read", lambda: read_stream(bench.source_dsn, bench.slot, bench.publication, parse_lsn(end_lsn)))
    changes = timed("decode", lambda: decode(messages))
    if len(changes) != 2 * args.rows:
        raise BenchError(f"decoded {len(changes)} changes, expected {2 * args.rows}")
    rows = timed("document", lambda: documents(changes))
    timed("state", lambda: store(workdir / "floor.db", rows, args.batch))
    texts = timed("copy text", lambda: copy_texts(changes, args.batch))
    timed("apply", lambda: apply(bench.target_dsn, texts))
    bench_pg.verify_copy(bench, bench.target_dsn, args.rows, "the floor pipeline")
    bench_pg.drop_round(bench)
    events = len(changes)
    serial = sum(seconds.values())
    result = {
        "events": events,
        "subscription_seconds": sub.seconds,
        "stages": {stage: {"seconds": s, "us_per_event": s / events * 1e6} for stage, s in seconds.items()},
        "serial_seconds": serial,
        "two_core_bound_seconds": serial / 2,
        "ratio": {"serial/subscription": sub.seconds / serial, "two_core_bound/subscription": 2 * sub.seconds / serial},
    }
    progress(
        f"round {index}: subscription {sub.seconds:.2f}s; floor serial {serial:.2f}s"
        f" ({result['ratio']['serial/subscription']:.3f}x), two-core bound"
        f" {serial / 2:.2f}s ({result['ratio']['two_core_bound/subscription']:.3f}x)"
    )
    return result


def print_report(rounds: list[dict], version: str) -> None:
    print(f"PostgreSQL {version}: the floor of a Python pipeline, {rounds[0]['events']:,} events, per round")
    print(f"{'stage':<12}" + "".join(f"{'round ' + str(i + 1):>22}" for i in range(len(rounds))))
    for stage in STAGES:
        cells = (
            f"{r['stages'][stage]['seconds']:>9.2f}s {r['stages'][stage]['us_per_event']:>6.2f} µs/ev" for r in rounds
        )
        print(f"{stage:<12}" + "".join(f"{cell:>22}" for cell in cells))
    print(f"{'serial':<12}" + "".join(f"{r['serial_seconds']:>21.2f}s" for r in rounds))
    print(f"{'subscription':<12}" + "".join(f"{r['subscription_seconds']:>21.2f}s" for r in rounds))
    for name in ("serial/subscription", "two_core_bound/subscription"):
        print(f"{name:<28}" + "  ".join(f"{r['ratio'][name]:.3f}x" for r in rounds))


def main(argv: list[str] | None = None) -> int:
    args = benchlib.parse_args(argv, __doc__, fresh="databases and slots")
    results: list[dict] = []
    version = ""

    def measure() -> None:
        nonlocal version
        with (
            tempfile.TemporaryDirectory(prefix="cdc-floor-") as tmp,
            ThrowawayPostgres(settings=anchors.SERVER_SETTINGS) as pg,
        ):
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
            for index, workdir in benchlib.round_workdirs(tmp, args.rounds):
                results.append(run_round(pg, index, workdir, args))

    def report(_: dict) -> None:
        print_report(results, version)

    return benchlib.run_main(
        "bench_pg_floor", args, measure, (BenchError, psycopg.Error, OSError), lambda _: {"rounds": results}, report
    )


if __name__ == "__main__":
    sys.exit(main())
