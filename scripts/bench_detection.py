"""What the ``--detection`` mode of ``scripts/bench_pg.py`` and ``scripts/bench_mysql.py`` shares: the
rules, the check of cdc's state store afterwards, the summary and the report.

The mode times ``cdc run --drain`` twice on the same workload, ``detect_on`` with ``[conflicts]
detect = true`` and ``detect_off`` with ``detect = false``, each on fresh databases, cdc state
and (PostgreSQL) slot, the workload written just before it is measured. The workload is its own,
not ``--workload``'s: the CRM-like ``customers`` table with three more columns, ``status``
('lead' on insert), ``version`` (1 on insert) and ``updated_by`` ('import' on insert); ``--rows``
INSERTs, ``--batch`` per transaction, and in later transactions an UPDATE of every row once
(after each insert batch the rows of the batch before it, at the end the last batch) by another
writer (``updated_by = 'sales-app'``) that changes balance and status (lead -> customer) and
advances version and updated_at: 2 x ``--rows`` events, none of them a conflict. The cdc config
gets a ``[[tables]]`` entry (``rules``) with writer, version, ignored, natural-key and status
columns, so that every rule runs on every change.

``verify_state`` checks cdc's state store afterwards: every insert and update in the event log,
no conflicts, and the natural key of every row with detection on (none with it off). The report
gives µs/event and events/s of each, their ratio (on / off) and detection's overhead, ``(1 -
ratio)`` in percent, against the target (at most 10%).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import benchlib
from benchlib import BenchError, Measurement

READERS = ("detect_on", "detect_off")
LABELS = {"detect_on": "cdc, detect on", "detect_off": "cdc, detect off"}
TARGET_PERCENT = 10.0  # the throughput detection may cost


def rules(table: str) -> dict:
    """The ``[[tables]]`` entry for ``table`` ("schema.table" as cdc names it)."""
    return {
        "match": table,
        "writer_column": "updated_by",
        "version_column": "version",
        "ignore_columns": ["updated_at"],
        "natural_keys": [["email"]],
        "status_column": "status",
        "status_order": ["lead", "prospect", "customer"],
    }


def verify_state(state_dir: Path, rows: int, detect: bool) -> None:
    """cdc's state store holds every insert and update, no conflicts, and the natural key of every
    row if ``detect`` (else none: detection did not run)."""
    state = sqlite3.connect(f"file:{state_dir / 'state.db'}?mode=ro", uri=True)
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


def add_option(parser) -> None:
    """The ``--detection`` option of both benchmark scripts."""
    parser.add_argument(
        "--detection",
        action="store_true",
        help="instead of the anchors, time cdc with conflict detection on and off, on its own"
        " workload (customers: inserts plus one update of every row)",
    )


def summarize(rounds: list[dict[str, Measurement]], rows: int, batch: int, versions: dict[str, str]) -> dict:
    summary = benchlib.summarize(rounds, READERS, rows, batch, versions, events=2 * rows)
    summary = {"mode": "detection", "rows": rows, "updates": rows, **summary}
    on, off = summary["detect_on"], summary["detect_off"]
    summary["ratio"] = on["events_per_second"] / off["events_per_second"]
    summary["overhead_percent"] = (1 - summary["ratio"]) * 100
    summary["target_percent"] = TARGET_PERCENT
    summary["added_us_per_event"] = on["us_per_event"] - off["us_per_event"]
    return summary


def print_report(summary: dict, servers: str) -> None:
    benchlib.print_table(
        summary,
        servers,
        LABELS,
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
