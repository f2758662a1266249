"""Commit-to-target latency of a streaming cdc daemon: the ``--latency`` mode of ``scripts/bench_pg.py``
and ``scripts/bench_mysql.py``.

The benchmark script sets up a round (source database with an empty ``bench`` table, a postgres
target with the same table, cdc's config with ``[http] listen`` on a free loopback port, ``cdc
setup``) and hands ``measure_latency`` a function that commits one row into the source. Then:

1. ``cdc run`` (the daemon, not ``--drain``) starts as a subprocess; it is up once ``/healthz``
   answers 200, and streaming once a probe row (id 0) written into the source has appeared in
   the target ("streaming after" in the report: process start to probe row seen);
2. a watcher thread with its own connection to the target polls ``SELECT id FROM <table> WHERE
   id > <highest id below which every id has appeared>`` every ~2 ms and notes ``time.time()``
   when the query returns an id for the first time;
3. the main thread writes ``--rate`` single-row transactions per second for ``--seconds``:
   transaction i inserts row i (ids 1 .. rate x seconds) and is due at start + (i - 1) / rate
   (open loop: a transaction that falls behind is sent at once, none is skipped; the report gives
   the rate achieved); ``time.time()`` right after its commit returned is noted per id;
4. once every id has appeared (at most ``--timeout`` seconds after the last commit), cdc gets
   SIGTERM and must exit 0 (``cdc run`` applies and acknowledges what is in flight, then exits);
   a missing id, or another exit code, fails the benchmark.

A transaction's latency is the time its row appeared in the target minus its client-side commit
time, both from this process's clock. It includes the watcher's poll interval (up to ~2 ms plus
a query) and what the noisy machine adds; the commit time is taken after the client saw the
commit, so a transaction's own network return trip is not counted. The summary gives min, p50,
p90, p99 (nearest rank), max and mean in ms for each round and for all rounds pooled, with the
the targets: p50 <= 30 ms and p99 <= 100 ms ("met" or "not met" is a reading, not a check).
"""

from __future__ import annotations

import math
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

import benchlib
from benchlib import BenchError, progress

POLL_SECONDS = 0.002  # the watcher's pause between polls of the target
PROBE_ID = 0
START_TIMEOUT = 60.0  # seconds until cdc must be streaming
STOP_TIMEOUT = 60.0  # seconds cdc may take to exit after SIGTERM
TARGET_MS = {"p50": 30.0, "p99": 100.0}
QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


class Daemon:
    """``cdc run`` as a subprocess, its output in ``workdir/cdc-run.log``."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.log = workdir / "cdc-run.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cdc", "run"],
                env=benchlib.cdc_env(config),
                cwd=benchlib.PROJECT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it
            )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:].strip() or "(no output)"

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"cdc run exited with code {code} while it should stream:\n{self.output()}")

    def wait_healthy(self, port: int, deadline: float) -> None:
        """Until ``/healthz`` on ``port`` answers 200."""
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503
            if time.monotonic() > deadline:
                raise BenchError(f"cdc's /healthz on port {port} did not answer 200 in time:\n{self.output()}")
            time.sleep(0.05)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took to exit."""
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(f"cdc run did not exit within {STOP_TIMEOUT:.0f}s of SIGTERM:\n{self.output()}") from None
        return code, time.perf_counter() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Watcher(threading.Thread):
    """Polls the target for new ids and notes when each first appeared."""

    def __init__(self, dsn: str, table: str) -> None:
        super().__init__(name="watcher", daemon=True)
        self.dsn = dsn
        self.query = sql.SQL("SELECT id FROM {} WHERE id > %s ORDER BY id").format(sql.Identifier(*table.split(".", 1)))
        self.appeared: dict[int, float] = {}
        self.polls = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                low = PROBE_ID  # every id up to this one has appeared
                while not self.done.is_set():
                    ids = conn.execute(self.query, (low,), prepare=True).fetchall()
                    now = time.time()
                    for (row_id,) in ids:
                        self.appeared.setdefault(row_id, now)
                    while low + 1 in self.appeared:
                        low += 1
                    self.polls += 1
                    self.done.wait(POLL_SECONDS)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise BenchError(f"the watcher failed: {self.error}")


def wait_for_row(dsn: str, table: str, row_id: int, deadline: float, daemon: Daemon) -> None:
    query = sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(sql.Identifier(*table.split(".", 1)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        while conn.execute(query, (row_id,)).fetchone() is None:
            daemon.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the probe row (id {row_id}) did not reach the target in time:\n{daemon.output()}")
            time.sleep(0.01)


def write_steady(write_row: Callable[[int], None], rate: float, seconds: float) -> tuple[dict[int, float], float]:
    """Commit rows 1..rate*seconds at ``rate`` per second; each id's commit time and the seconds taken."""
    count = max(1, round(rate * seconds))
    committed: dict[int, float] = {}
    started = time.perf_counter()
    for row_id in range(1, count + 1):
        delay = started + (row_id - 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        write_row(row_id)
        committed[row_id] = time.time()
    return committed, time.perf_counter() - started


def nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def figures(latencies_ms: list[float]) -> dict[str, float]:
    """min, p50, p90, p99, max and mean of latencies (ms)."""
    ordered = sorted(latencies_ms)
    return {
        "min": ordered[0],
        **{name: nearest_rank(ordered, q) for name, q in QUANTILES.items()},
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def measure_latency(
    config: Path,
    http_port: int,
    workdir: Path,
    write_row: Callable[[int], None],
    target_dsn: str,
    table: str,
    rate: float,
    seconds: float,
    timeout: float,
) -> dict:
    """One round of the latency mode (see the module's docstring); its figures, and the latencies (ms)."""
    daemon = Daemon(config, workdir)
    started = time.monotonic()
    watcher = Watcher(target_dsn, table)
    try:
        deadline = started + START_TIMEOUT
        daemon.wait_healthy(http_port, deadline)
        write_row(PROBE_ID)
        wait_for_row(target_dsn, table, PROBE_ID, deadline, daemon)
        streaming_after = time.monotonic() - started
        progress(f"cdc run is streaming ({streaming_after:.2f}s after start); writing {rate:g} rows/s for {seconds:g}s")
        watcher.start()
        committed, wrote = write_steady(write_row, rate, seconds)
        deadline = time.monotonic() + timeout
        while any(row_id not in watcher.appeared for row_id in committed):
            watcher.check()
            daemon.check_alive()
            if time.monotonic() > deadline:
                missing = [row_id for row_id in committed if row_id not in watcher.appeared]
                raise BenchError(
                    f"{len(missing)} of {len(committed)} rows did not reach the target within {timeout:.0f}s"
                    f" (first missing id {missing[0]})"
                )
            time.sleep(0.01)
        watcher.done.set()
        watcher.join()
        watcher.check()
        code, stop_seconds = daemon.terminate()
    finally:
        watcher.done.set()
        daemon.kill()
    if code != 0:
        raise BenchError(f"cdc run exited with code {code} after SIGTERM, expected 0:\n{daemon.output()}")
    latencies = [(watcher.appeared[row_id] - at) * 1000 for row_id, at in committed.items()]
    result = {
        "transactions": len(committed),
        "write_seconds": wrote,
        "achieved_rate": len(committed) / wrote if wrote > 0 else float("inf"),
        "streaming_after_seconds": streaming_after,
        "polls": watcher.polls,
        "cdc_exit_code": code,
        "cdc_stop_seconds": stop_seconds,
        "latency_ms": figures(latencies),
    }
    progress(
        f"{len(committed)} rows at {result['achieved_rate']:.0f}/s: p50 {result['latency_ms']['p50']:.1f} ms,"
        f" p99 {result['latency_ms']['p99']:.1f} ms, max {result['latency_ms']['max']:.1f} ms;"
        f" cdc exited {code} {stop_seconds:.2f}s after SIGTERM"
    )
    return {**result, "latencies_ms": latencies}


# -- reporting ----------------------------------------------------------------------------


def summarize(rounds: list[dict], rate: float, seconds: float, versions: dict[str, str]) -> dict:
    """Each round's figures, and the pooled figures of every round's latencies."""
    pooled = [ms for r in rounds for ms in r["latencies_ms"]]
    latency = figures(pooled)
    return {
        "mode": "latency",
        "rate": rate,
        "seconds": seconds,
        **versions,
        "rounds": [{key: value for key, value in r.items() if key != "latencies_ms"} for r in rounds],
        "transactions": len(pooled),
        "achieved_rate": statistics.median(r["achieved_rate"] for r in rounds),
        "latency_ms": latency,
        "target_ms": TARGET_MS,
        "targets_met": {name: latency[name] <= limit for name, limit in TARGET_MS.items()},
    }


def print_report(summary: dict, servers: str) -> None:
    rounds = summary["rounds"]
    print(
        f"{servers}: commit-to-target latency of single-row inserts, {summary['rate']:g}/s for"
        f" {summary['seconds']:g}s" + (f", {len(rounds)} rounds pooled" if len(rounds) > 1 else "")
    )
    print(f"{'':<10} {'rows':>7} {'rows/s':>7} {'min':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8} {'mean':>7}")
    lines = [(f"round {i}", r["transactions"], r["achieved_rate"], r["latency_ms"]) for i, r in enumerate(rounds, 1)]
    if len(rounds) > 1:
        lines.append(("all", summary["transactions"], summary["achieved_rate"], summary["latency_ms"]))
    for label, count, achieved, ms in lines:
        print(
            f"{label:<10} {count:>7,} {achieved:>7.0f} {ms['min']:>7.1f} {ms['p50']:>7.1f} {ms['p90']:>7.1f}"
            f" {ms['p99']:>7.1f} {ms['max']:>8.1f} {ms['mean']:>7.1f}"
        )
    print("(latencies in ms: the row visible in the target minus the client's commit time)")
    print(
        "targets: "
        + ", ".join(
            f"{name} <= {limit:g} ms ({'met' if summary['targets_met'][name] else 'not met'})"
            for name, limit in summary["target_ms"].items()
        )
    )
    for i, r in enumerate(rounds, 1):
        print(
            f"round {i}: cdc was streaming {r['streaming_after_seconds']:.2f}s after start; after SIGTERM it"
            f" exited with code {r['cdc_exit_code']} in {r['cdc_stop_seconds']:.2f}s"
        )
