"""Shared pieces of the throughput benchmarks ``scripts/bench_pg.py`` and ``scripts/bench_mysql.py``.

Both benchmarks work the same way: for each of ``--rounds`` rounds they set up fresh databases,
write a cdc config, write a workload and then time several readers of the same change stream,
one of which is always ``cdc run --drain`` as a subprocess; the summary uses the median time of
each reader and is printed as a text table or, with ``--json``, as JSON. (Their ``--latency``
mode lives in ``scripts/bench_latency.py``, their ``--detection`` mode's shared parts in
``scripts/bench_detection.py``.) This module holds what does not depend on the source database:

* ``BenchError`` and ``Measurement`` (one reader's time for one round, with optional ``detail``
  figures such as the native subscription's confirmation time);
* the workload names (``WORKLOADS``: ``bench``, the default, N inserts then N updates of a
  narrow table; ``customers``, N inserts of a wider CRM-like row) and ``workload_events``;
* writing a cdc config (``write_cdc_config``, optionally with ``[[tables]]`` rules, a
  ``[conflicts]`` and an ``[http]`` section) and running ``cdc`` subprocesses with it
  (``cdc_env``, ``run_cdc``, ``require_success``, ``measure_cdc``);
* checking that the target holds the source's rows (``check_copy``; ``row_digest`` and
  ``fetch_batches`` for a checksum computed client-side);
* timing the readers of a round in alternating order with progress on stderr (``measure_readers``);
* the summary, the text report's table and the command line (``summarize``, ``print_table``,
  ``parse_args``, ``run_main``); given the number of events (changes: an inserted or updated
  row each) a workload holds, the progress lines, summary and table give events/s and µs per
  event (``per_event``) instead of rows/s.

The benchmark scripts import it as ``benchlib``; they put ``scripts/`` on ``sys.path`` first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """The benchmark could not run or a reader produced a wrong result."""


@dataclass(frozen=True)
class Measurement:
    reader: str
    rows: int
    seconds: float
    detail: dict[str, float] = field(default_factory=dict)  # further seconds, e.g. "confirmed_seconds"

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# -- workloads ----------------------------------------------------------------------------

# bench: --rows inserts, then an update of every row (2 x --rows events); customers: --rows inserts
WORKLOADS = ("bench", "customers")


def workload_events(workload: str, rows: int) -> int:
    """The changes (events) a workload of ``rows`` rows writes."""
    return 2 * rows if workload == "bench" else rows


def workload_heading(workload: str, rows: int) -> str:
    """The report's words for the workload."""
    if workload == "bench":
        return f"table bench: {rows:,} inserts then {rows:,} updates ({2 * rows:,} events)"
    return f"table customers: {rows:,} inserted rows"


# -- cdc config and subprocesses ----------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` (str, int, list or dict of those) as a TOML value; strings as JSON strings."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value)


def write_cdc_config(
    config: Path,
    state_dir: Path,
    source: dict[str, Any],
    target: dict[str, Any],
    tables: list[dict[str, Any]] | None = None,
    conflicts: dict[str, Any] | None = None,
    http: dict[str, Any] | None = None,
) -> None:
    """Write a cdc config with one source and one target (their keys in the given order), log level warning;
    and, when given, a ``[[tables]]`` entry for each of ``tables``, a ``[conflicts]`` and an ``[http]`` section."""

    def table(fields: dict[str, Any]) -> str:
        return "".join(f"{key} = {toml_value(value)}\n" for key, value in fields.items())

    config.write_text(
        f"state_dir = {json.dumps(str(state_dir))}\n\n"
        f"[[sources]]\n{table(source)}\n"
        f"[[targets]]\n{table(target)}\n"
        + "".join(f"[[tables]]\n{table(entry)}\n" for entry in tables or ())
        + (f"[conflicts]\n{table(conflicts)}\n" if conflicts is not None else "")
        + (f"[http]\n{table(http)}\n" if http is not None else "")
        + '[log]\nlevel = "warning"\n',
        encoding="utf-8",
    )


def cdc_env(config: Path) -> dict[str, str]:
    """The environment for a cdc subprocess: no inherited ``CDC_*`` settings, ``config`` as its config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    env.update(CDC_CONFIG=str(config), PYTHONPATH=str(PROJECT))
    return env


def run_cdc(config: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "cdc", *args],
            env=cdc_env(config),
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"cdc {' '.join(args)} did not finish within {timeout:.0f}s") from None


def require_success(what: str, result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        output = (result.stdout[-3000:] + result.stderr[-3000:]).strip() or "(no output)"
        raise BenchError(f"{what} exited with code {result.returncode}:\n{output}")


def measure_cdc(
    config: Path, rows: int, timeout: float, verify: Callable[[], None], reader: str = "cdc"
) -> Measurement:
    """Time ``cdc run --drain`` from process start until it exits, then ``verify()`` the target."""
    started = time.perf_counter()
    result = run_cdc(config, "run", "--drain", timeout=timeout)
    seconds = time.perf_counter() - started
    require_success("cdc run --drain", result)
    verify()
    return Measurement(reader, rows, seconds)


def check_copy(rows: int, source: tuple[int, str], target: tuple[int, str], who: str = "cdc") -> None:
    """Fail unless the source holds ``rows`` rows and the target the same (count, checksum);
    ``who`` filled the target."""
    (source_count, source_sum), (target_count, target_sum) = source, target
    if source_count != rows:
        raise BenchError(f"the source holds {source_count} rows, expected {rows}")
    if target_count != source_count:
        raise BenchError(f"{who} left {target_count} rows in the target, the source holds {source_count}")
    if target_sum != source_sum:
        raise BenchError(f"{who} left rows in the target that differ from the source's (same count, other checksum)")


def row_digest(rows) -> tuple[int, str]:
    """Count and md5 of rows, each written as tab-separated values (NULL as \\N)."""
    digest, count = hashlib.md5(), 0
    for row in rows:
        count += 1
        digest.update(("\t".join("\\N" if v is None else str(v) for v in row) + "\n").encode("utf-8"))
    return count, digest.hexdigest()


def fetch_batches(cur, size: int = 5000):
    """Every row of a (server-side) cursor, fetched ``size`` at a time."""
    while chunk := cur.fetchmany(size):
        yield from chunk


# -- rounds -------------------------------------------------------------------------------


def round_workdirs(tmp: str | Path, rounds: int) -> Iterator[tuple[int, Path]]:
    """``(index, workdir)`` for rounds 1..``rounds``, each workdir created just before it is yielded."""
    for index in range(1, rounds + 1):
        workdir = Path(tmp) / f"round{index}"
        workdir.mkdir()
        yield index, workdir


def measure_readers(
    index: int, readers: dict[str, Callable[[], Measurement]], events: int | None = None
) -> dict[str, Measurement]:
    """Run each reader's measurement, in the given order in odd rounds and reversed in even ones.

    With ``events`` (the changes in the workload) the progress lines give events/s and µs/event.
    """
    width = max(len(reader) for reader in readers)
    order = tuple(readers) if index % 2 == 1 else tuple(reversed(readers))
    results: dict[str, Measurement] = {}
    for reader in order:
        results[reader] = m = readers[reader]()
        if events is None:
            progress(f"round {index}: {reader:{width}} {m.seconds:7.2f}s {m.rows_per_second:10,.0f} rows/s")
        else:
            rate = per_event(m.seconds, events)
            progress(
                f"round {index}: {reader:{width}} {m.seconds:7.2f}s {rate['events_per_second']:10,.0f} events/s"
                f" {rate['us_per_event']:8.1f} µs/event"
            )
    return results


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- reporting ----------------------------------------------------------------------------


def per_event(seconds: float, events: int) -> dict[str, float]:
    """``events_per_second`` and ``us_per_event`` (wall microseconds per event) of ``events`` in ``seconds``."""
    return {
        "events_per_second": events / seconds if seconds > 0 else float("inf"),
        "us_per_event": seconds * 1e6 / events,
    }


def summarize(
    rounds: list[dict[str, Measurement]],
    readers: tuple[str, ...],
    rows: int,
    batch: int,
    versions: dict[str, str],
    extras: list[dict] | None = None,
    events: int | None = None,
) -> dict:
    """Every round's measurements (each after its ``extras`` entry) and each reader's median; no ratios.

    With ``events`` (the changes in the workload) the summary holds it, and every measurement
    and median also gives ``per_event`` rates.
    """

    def rates(seconds: float) -> dict[str, float]:
        return per_event(seconds, events) if events is not None else {}

    summary: dict = {
        "rows": rows,
        **({"events": events} if events is not None else {}),
        "batch": batch,
        **versions,
        "rounds": [],
    }
    for i, results in enumerate(rounds):
        summary["rounds"].append(
            {
                **(extras[i] if extras else {}),
                **{
                    name: {**asdict(m), "rows_per_second": m.rows_per_second, **rates(m.seconds)}
                    for name, m in results.items()
                },
            }
        )
    for reader in readers:
        seconds = statistics.median(results[reader].seconds for results in rounds)
        summary[reader] = {"seconds": seconds, "rows_per_second": rows / seconds, **rates(seconds)}
        detail = {key: statistics.median(r[reader].detail[key] for r in rounds) for key in rounds[0][reader].detail}
        if detail:
            summary[reader]["detail"] = detail
    return summary


def print_table(summary: dict, servers: str, labels: dict[str, str], workload: str | None = None) -> None:
    """The report's heading line (``servers`` first, then ``workload``, by default "N inserted rows")
    and one table row per reader in ``labels``: rows and rows/s, or, when the summary holds
    ``events``, events, events/s and µs/event."""
    rounds = len(summary["rounds"])
    print(
        f"{servers}: {workload or format(summary['rows'], ',') + ' inserted rows'},"
        f" {summary['batch']:,} per transaction" + (f", median of {rounds} rounds" if rounds > 1 else "")
    )
    if "events" not in summary:
        print(f"{'reader':<16} {'rows':>10} {'seconds':>9} {'rows/s':>11}")
        for reader, label in labels.items():
            m = summary[reader]
            print(f"{label:<16} {summary['rows']:>10,} {m['seconds']:>9.2f} {m['rows_per_second']:>11,.0f}")
        return
    print(f"{'reader':<16} {'events':>10} {'seconds':>9} {'events/s':>11} {'µs/event':>9}")
    for reader, label in labels.items():
        m = summary[reader]
        print(
            f"{label:<16} {summary['events']:>10,} {m['seconds']:>9.2f} {m['events_per_second']:>11,.0f}"
            f" {m['us_per_event']:>9.1f}"
        )


# -- command line -------------------------------------------------------------------------


def parse_args(
    argv: list[str] | None, doc: str, fresh: str, options: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """The benchmarks' common options (workload, rounds, ``--latency`` and its rate), and any a
    benchmark adds with ``options(parser)``; ``fresh`` says what each round gets afresh."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--workload",
        choices=WORKLOADS,
        help="the throughput mode's workload: bench (default), --rows inserts into bench (id, a, b, c)"
        " then an update of every row; customers, --rows inserts of a CRM-like row",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows to insert (default 100000)")
    parser.add_argument("--batch", type=int, default=1_000, help="rows per source transaction (default 1000)")
    parser.add_argument(
        "--rounds", type=int, default=2, help=f"measure this often, fresh {fresh} each time (default 2)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds each reader may take (default 600)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="instead of throughput, time commit-to-target latency of single-row transactions"
        " while 'cdc run' streams (--rate, --seconds; --rows and --batch do not apply)",
    )
    parser.add_argument("--rate", type=float, default=500, help="--latency: transactions per second (default 500)")
    parser.add_argument("--seconds", type=float, default=20, help="--latency: seconds of writing (default 20)")
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--rows, --batch and --rounds must be at least 1")
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    detection = getattr(args, "detection", False)
    if args.latency and detection:
        parser.error("--latency and --detection are separate modes: choose one")
    if (args.latency or detection) and args.workload is not None:
        parser.error("--workload applies to the throughput mode; --latency and --detection have their own")
    args.workload = args.workload or "bench"
    return args


def run_main(
    name: str,
    args: argparse.Namespace,
    measure: Callable[[], Any],
    errors: tuple[type[BaseException], ...],
    summarize: Callable[[Any], dict],
    print_report: Callable[[dict], None],
) -> int:
    """Run ``measure()``, then print ``summarize(its result)`` as JSON or with ``print_report``.

    The exit status: 0, or 1 after any of ``errors`` (reported on stderr as ``name: FAILED: ...``),
    or 130 when interrupted.
    """
    try:
        measured = measure()
    except errors as exc:
        print(f"{name}: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    summary = summarize(measured)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_report(summary)
    return 0
