"""``cdc status``, ``cdc events`` and ``cdc run``: what cdc holds and where it stands, and the daemon."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import psycopg
import pymysql

from cdc.cli.common import ExitCode, event_filter, open_store, output
from cdc.config import Settings, config_path
from cdc.errors import CdcError
from cdc.logs import one_line
from cdc.sources import server_status


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.daemon import Daemon

    return Daemon(settings, config_path(args.config)).run(drain=args.drain)


def status(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    now = time.time()
    counts = store.counts()
    oldest = store.oldest_event()
    counts["oldest_replayable"] = {"commit_ts": oldest[0], "event_id": oldest[1]} if oldest else None
    counts["retain_days"] = settings.event_log.retain_days
    report: dict[str, Any] = {
        "sources": [],
        "targets": [],
        "events": counts,
        "events_per_second": round(store.events_recorded_since(now - 60) / 60, 2),
        "open_conflicts": store.open_conflicts(),
    }
    for source in settings.sources:
        state = store.source_state(source.name)
        entry: dict[str, Any] = {
            "name": source.name,
            "kind": source.kind,
            "acked": state.acked,
            "acked_age_seconds": round(now - state.acked_at, 1) if state.acked_at else None,
            "last_transaction": state.complete_position,
            "events": counts["events_by_source"].get(source.name, 0),
            "server": None,
        }
        try:
            entry["server"] = server_status(source)
        except (psycopg.Error, pymysql.MySQLError, CdcError, OSError) as exc:
            entry["server_error"] = one_line(exc)
        report["sources"].append(entry)
    for target, target_source, txn_key, seq, updated_at in store.target_positions():
        report["targets"].append(
            {
                "name": target,
                "source": target_source,
                "txn_key": txn_key,
                "seq": seq,
                "updated_age_seconds": round(now - updated_at, 1),
            }
        )
    output(args, report, lambda: _print_status(report), indent=2)
    return ExitCode.OK


def _print_status(report: dict[str, Any]) -> None:
    print(f"{'SOURCE':10} {'ACKED':24} {'SERVER AT':24} {'LAG':>10} {'RETAINED':>10} {'EVENTS':>8}")
    for s in report["sources"]:
        server = s["server"] or {}
        if s.get("server_error"):
            at, lag, retained = "unreachable", "-", "-"
        elif "current_wal_lsn" in server:
            at, lag, retained = (
                server["current_wal_lsn"],
                _bytes(server.get("lag_bytes")),
                _bytes(server.get("retained_wal_bytes")),
            )
        else:
            at = server.get("gtid_position") or f"{server.get('file')}:{server.get('position')}"
            lag, retained = "-", _bytes(server.get("binlog_bytes"))
        print(f"{s['name']:10} {s['acked'] or '-':24} {at:24} {lag:>10} {retained:>10} {s['events']:>8}")
        if s.get("server_error"):
            print(f"    {s['name']}: {s['server_error']}")
    for t in report["targets"]:
        print(
            f"target {t['name']}: {t['source']} applied through {t['txn_key']}:{t['seq']}"
            f" ({t['updated_age_seconds']}s ago)"
        )
    oldest = report["events"]["oldest_replayable"]
    print(
        f"events/s (last minute): {report['events_per_second']}; oldest replayable event: "
        + (f"{oldest['event_id']} at {oldest['commit_ts']}" if oldest else "-")
        + f" (kept {report['events']['retain_days']:g} days)"
    )
    pending = report["open_conflicts"]
    print(
        f"open conflicts: {sum(pending.values())}"
        + (
            f" ({', '.join(f'{n} {kind}' for kind, n in sorted(pending.items()))}; see cdc conflicts list)"
            if pending
            else ""
        )
    )


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def events(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    for doc in store.query_events(**event_filter(args).as_query(), limit=args.limit):
        if args.json:
            print(doc)
        else:
            event = json.loads(doc)
            print(
                f"{event['commit_ts']} {event['event_id']} {event['op']:8} {event['schema']}.{event['table']}"
                f" {json.dumps(event['key'])} v{event['version']} changed={','.join(event['changed'])}"
            )
    return ExitCode.OK
