"""The DBA's verbs that fill and repair targets: ``snapshot``, ``backfill`` and ``replay``.

Each has ``--dry-run`` (what would be read or sent, and how many rows) and shows progress
(``cdc.progress``); the work itself is in ``cdc.snapshot``, ``cdc.backfill`` and ``cdc.replay``.
"""

from __future__ import annotations

import argparse
import json

import psycopg
import pymysql

from cdc.commands import CommandError, event_filter, open_store
from cdc.config import ConfigError, Settings
from cdc.logs import one_line
from cdc.progress import Progress
from cdc.sources.base import SourceError
from cdc.targets import TargetError


def snapshot(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.snapshot import SnapshotError, plan, snapshot as take_snapshot

    try:
        sources = [settings.source(args.source)] if args.source else settings.sources
    except ConfigError as exc:
        raise CommandError(str(exc), 2) from None
    report = []
    for source in sources:
        if args.table and not args.source:
            tables = [t for t in source.qualified_tables if ".".join(t) in args.table]
        else:
            tables = _chosen_tables(source, args.table)
        if not tables:
            continue
        try:
            if args.dry_run:
                rows = plan(settings, source, tables)
                report.append({"source": source.name, "tables": rows})
                if not args.json:
                    print(f"would read {sum(rows.values())} row(s) from source {source.name}"
                          + "".join(f"\n  {table}: {count}" for table, count in rows.items()))
                continue
            store = open_store(settings, readonly=False)
            try:
                progress = Progress(f"snapshot of {source.name}", sum(plan(settings, source, tables).values()))
                read = take_snapshot(settings, store, source, tables, args.chunk_rows, progress)
                progress.finish()
            finally:
                store.close()
        except SnapshotError as exc:
            raise CommandError(str(exc), 3) from None
        except SourceError as exc:
            raise CommandError(str(exc), 3 if exc.fatal else 4) from None
        report.append({"source": source.name, "rows": read})
        if not args.json:
            print(f"source {source.name}: {read} row(s) read; the daemon applies them to the targets and streams on"
                  " from there")
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "sources": report}))
    return 0


def _chosen_tables(source, tables: list[str]) -> list[tuple[str, str]]:
    unknown = [t for t in tables if t not in source.tables]
    if unknown:
        raise CommandError(f"--table {unknown[0]}: not one of source {source.name}'s tables"
                           f" ({', '.join(source.tables)})", 2)
    return [t for t in source.qualified_tables if not tables or ".".join(t) in tables]


def backfill(settings: Settings, args: argparse.Namespace) -> int:
    from cdc import backfill as backfilling

    try:
        source = settings.source(args.source)
    except ConfigError as exc:
        raise CommandError(str(exc), 2) from None
    if args.target and args.target not in {t.name for t in settings.targets}:
        raise CommandError(f"no target named {args.target!r} in the configuration", 2)
    tables = _chosen_tables(source, args.table)
    try:
        if args.dry_run:
            rows = backfilling.plan(source, tables, args.where)
            if args.json:
                print(json.dumps({"dry_run": True, "source": source.name, "tables": rows}))
            else:
                print(f"would re-read {sum(rows.values())} row(s) from source {source.name}"
                      + "".join(f"\n  {table}: {count}" for table, count in rows.items()))
            return 0
        store = open_store(settings, readonly=False)
        try:
            progress = Progress(f"backfill of {source.name}", sum(backfilling.plan(source, tables, args.where).values()))
            read = backfilling.backfill(store, source, tables, args.where, args.target, args.chunk_rows, progress)
            progress.finish()
        finally:
            store.close()
    except SourceError as exc:
        raise CommandError(str(exc), 3 if exc.fatal else 4) from None
    except (psycopg.Error, pymysql.MySQLError) as exc:
        raise CommandError(f"source {source.name}: {one_line(exc)} (check --where)", 2) from None
    if args.json:
        print(json.dumps({"dry_run": False, "source": source.name, "rows": read}))
    else:
        print(f"source {source.name}: {read} row(s) re-read; the daemon applies them to"
              f" {'target ' + args.target if args.target else 'the targets'} at its next checkpoint")
    return 0


def replay(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.replay import ReplayError, replay as replay_events

    selection = event_filter(args)
    store = open_store(settings)
    try:
        progress = None if args.dry_run else Progress(f"replay to {args.target}",
                                                     sum(store.count_replayable(**selection.as_query()).values()))
        result = replay_events(settings, store, args.target, selection, dry_run=args.dry_run, progress=progress)
    except ReplayError as exc:
        raise CommandError(str(exc), 2) from None
    except TargetError as exc:
        raise CommandError(str(exc), 3 if exc.fatal else 4) from None
    finally:
        store.close()
    if progress is not None:
        progress.finish()
    total = sum(result.tables.values())
    if args.json:
        print(json.dumps({"target": args.target, "dry_run": args.dry_run, "events": total, "tables": result.tables,
                          "sent": result.sent, "failed": result.failed}))
    else:
        verb = "would send" if args.dry_run else "sent"
        print(f"{verb} {total if args.dry_run else result.sent} event(s) to target {args.target}"
              + "".join(f"\n  {table}: {count}" for table, count in result.tables.items()))
        for failure in result.failed:
            print(f"FAILED {failure['table']} {failure['key']} (event {failure['event_id']}): {failure['reason']}")
    return 1 if result.failed else 0
