"""The DBA's verbs that fill and repair targets: ``snapshot``, ``backfill`` and ``replay``.

Each has ``--dry-run`` (what would be read or sent, and how many rows) and shows progress
(``cdc.progress``); the work itself is in ``cdc.ops.snapshot``, ``cdc.ops.backfill`` and ``cdc.ops.replay``.
"""

from __future__ import annotations

import argparse
from typing import Any

import psycopg
import pymysql

from cdc.cli.common import CommandError, ExitCode, event_filter, open_store, output
from cdc.config import Settings
from cdc.logs import one_line
from cdc.progress import Progress


def snapshot(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.ops.seed_keys import after_snapshot
    from cdc.ops.snapshot import plan
    from cdc.ops.snapshot import snapshot as take_snapshot

    sources = [settings.source(args.source)] if args.source else settings.sources
    report: list[dict[str, Any]] = []
    lines: list[str] = []
    for source in sources:
        if args.table and not args.source:
            tables = [t for t in source.qualified_tables if ".".join(t) in args.table]
        else:
            tables = _chosen_tables(source, args.table)
        if not tables:
            continue
        if args.dry_run:
            rows = plan(settings, source, tables)
            report.append({"source": source.name, "tables": rows})
            lines.append(
                f"would read {sum(rows.values())} row(s) from source {source.name}"
                + "".join(f"\n  {table}: {count}" for table, count in rows.items())
            )
            continue
        store = open_store(settings, readonly=False)
        try:
            progress = Progress(f"snapshot of {source.name}", sum(plan(settings, source, tables).values()))
            read = take_snapshot(settings, store, source, tables, args.chunk_rows, progress)
            progress.finish()
            after_snapshot(settings, store, source, tables)
        finally:
            store.close()
        report.append({"source": source.name, "rows": read})
        lines.append(
            f"source {source.name}: {read} row(s) read; the daemon applies them to the targets and streams"
            " on from there"
        )
    output(args, {"dry_run": args.dry_run, "sources": report}, lambda: _print_lines(lines))
    return ExitCode.OK


def _chosen_tables(source, tables: list[str]) -> list[tuple[str, str]]:
    unknown = [t for t in tables if t not in source.tables]
    if unknown:
        raise CommandError(
            f"--table {unknown[0]}: not one of source {source.name}'s tables ({', '.join(source.tables)})",
            ExitCode.USAGE,
        )
    return [t for t in source.qualified_tables if not tables or ".".join(t) in tables]


def backfill(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.ops import backfill as backfilling

    source = settings.source(args.source)
    if args.target and args.target not in {t.name for t in settings.targets}:
        raise CommandError(f"no target named {args.target!r} in the configuration", ExitCode.USAGE)
    tables = _chosen_tables(source, args.table)
    try:
        if args.dry_run:
            rows = backfilling.plan(source, tables, args.where)
            output(
                args,
                {"dry_run": True, "source": source.name, "tables": rows},
                lambda: print(
                    f"would re-read {sum(rows.values())} row(s) from source {source.name}"
                    + "".join(f"\n  {table}: {count}" for table, count in rows.items())
                ),
            )
            return ExitCode.OK
        store = open_store(settings, readonly=False)
        try:
            progress = Progress(
                f"backfill of {source.name}", sum(backfilling.plan(source, tables, args.where).values())
            )
            read = backfilling.backfill(store, source, tables, args.where, args.target, args.chunk_rows, progress)
            progress.finish()
        finally:
            store.close()
    except (psycopg.Error, pymysql.MySQLError) as exc:
        if not args.where:
            raise CommandError(f"source {source.name}: {one_line(exc)}", ExitCode.FATAL) from None
        raise CommandError(f"source {source.name}: {one_line(exc)} (check --where)", ExitCode.USAGE) from None
    output(
        args,
        {"dry_run": False, "source": source.name, "rows": read},
        lambda: print(
            f"source {source.name}: {read} row(s) re-read; the daemon applies them to"
            f" {'target ' + args.target if args.target else 'the targets'} at its next checkpoint"
        ),
    )
    return ExitCode.OK


def replay(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.ops.replay import replay as replay_events

    selection = event_filter(args)
    store = open_store(settings)
    try:
        progress = (
            None
            if args.dry_run
            else Progress(f"replay to {args.target}", sum(store.count_replayable(**selection.as_query()).values()))
        )
        result = replay_events(settings, store, args.target, selection, dry_run=args.dry_run, progress=progress)
    finally:
        store.close()
    if progress is not None:
        progress.finish()
    total = sum(result.tables.values())

    def text() -> None:
        verb = "would send" if args.dry_run else "sent"
        print(
            f"{verb} {total if args.dry_run else result.sent} event(s) to target {args.target}"
            + "".join(f"\n  {table}: {count}" for table, count in result.tables.items())
        )
        for failure in result.failed:
            print(f"FAILED {failure['table']} {failure['key']} (event {failure['event_id']}): {failure['reason']}")

    output(
        args,
        {
            "target": args.target,
            "dry_run": args.dry_run,
            "events": total,
            "tables": result.tables,
            "sent": result.sent,
            "failed": result.failed,
        },
        text,
    )
    return ExitCode.PROBLEMS if result.failed else ExitCode.OK


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)
