"""``cdc conflicts list|show|resolve``: the conflicts found and the review queue."""

from __future__ import annotations

import argparse
import functools
import json
from typing import Any

from cdc.cli.common import CommandError, ExitCode, open_store, output, utc
from cdc.config import Settings


def conflicts(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "resolve":
        return _resolve(settings, args)
    store = open_store(settings)
    if args.action == "show":
        found = store.conflicts(conflict_id=args.id)
        if not found:
            raise CommandError(f"no conflict {args.id!r} (see 'cdc conflicts list')", ExitCode.PROBLEMS)
        output(args, found[0], lambda: _print_conflict(found[0]), indent=2, ensure_ascii=False)
        return ExitCode.OK
    found = store.conflicts(
        type=args.type, table=args.table, status=args.status, since=utc(args.since), limit=args.limit
    )
    for record in found:
        output(args, record, functools.partial(_print_listed, record), ensure_ascii=False)
    return ExitCode.OK


def _print_listed(record: dict[str, Any]) -> None:
    print(f"{record['commit_ts']} {record['id']} {record['status']:14} {record['explanation']}")


def _print_conflict(record: dict[str, Any]) -> None:
    print(f"{record['id']}  {record['type']} ({record['severity']}, {record['status']})")
    print(f"  {record['explanation']}")
    print(f"  table {record['table']} key {record['key']} fields {', '.join(record['fields'])}")
    print(f"  rule: {record['rule']}")
    for event in record["events"]:
        print(
            f"  {event['commit_ts']} {event['event_id']} {event['op']} by {event['writer'] or event['source']}:"
            f" {json.dumps(event['before'], ensure_ascii=False)} -> {json.dumps(event['after'], ensure_ascii=False)}"
        )
    if record["resolution"]:
        print(f"  resolution: {json.dumps(record['resolution'], ensure_ascii=False, default=str)}")


def _resolve(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.conflicts.review import resolve

    row = None
    if args.row is not None:
        try:
            row = json.loads(args.row)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--row is not valid JSON: {exc}", ExitCode.USAGE) from None
        if not isinstance(row, dict):
            raise CommandError("--row must be a JSON object of column: value", ExitCode.USAGE)
    store = open_store(settings, readonly=False)
    try:
        resolution = resolve(store, args.id, keep=args.keep, merge=args.merge, row=row)
    finally:
        store.close()
    output(
        args,
        resolution,
        lambda: print(
            f"resolved {args.id}: the targets get {json.dumps(resolution['resolved_row'], ensure_ascii=False)}"
            " at the daemon's next checkpoint"
        ),
        ensure_ascii=False,
    )
    return ExitCode.OK
