"""The ``cdc`` command line: the parser, and a table of the verbs' handlers.

Each verb's handler takes the settings and the parsed arguments and returns an exit code
(``cdc.errors.ExitCode``): 0 success; 1 ``check`` found problems; 2 bad configuration or
usage; 3 a fatal error that needs a person (missing slot, table without a primary key, ...);
4 a server stayed unreachable for every retry; 5 ``run --drain`` was stopped before the
sources' end position was reached. An error a handler raises becomes its exit code in
``cdc.cli.common.exit_code_of``, and its one line goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from cdc.config import Settings, config_path, load_settings
from cdc.errors import CdcError, ConfigError, ExitCode
from cdc.logs import one_line, setup_logging
from cdc.values import allow_deep_json

Handler = Callable[[Settings, argparse.Namespace], int]


def _handlers() -> dict[str, Handler]:
    """verb -> handler (imported when a verb runs, so that ``--help`` stays quick)."""
    from cdc.cli import conflicts, inspect, preflight, repair

    return {
        "check": preflight.check,
        "setup": preflight.setup,
        "run": inspect.run,
        "status": inspect.status,
        "events": inspect.events,
        "snapshot": repair.snapshot,
        "backfill": repair.backfill,
        "replay": repair.replay,
        "conflicts": conflicts.conflicts,
    }


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="configuration file (default: $CDC_CONFIG or /etc/cdc/cdc.toml)")
    reading = argparse.ArgumentParser(add_help=False)
    reading.add_argument("--json", action="store_true", help="machine-readable output")

    selecting = argparse.ArgumentParser(add_help=False)
    selecting.add_argument("--source")
    selecting.add_argument("--table", help="schema.table (or table)")
    selecting.add_argument("--key", action="append", default=[], metavar="COLUMN=VALUE")
    selecting.add_argument("--since", help="ISO-8601 commit time, inclusive")
    selecting.add_argument("--until", help="ISO-8601 commit time, exclusive")

    parser = argparse.ArgumentParser(prog="cdc", description="Change-data capture with conflict detection.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("check", parents=[common, reading], help="preflight: settings, privileges, tables")
    p = verbs.add_parser("setup", parents=[common], help="create publications and slots (idempotent)")
    p.add_argument("--print-sql", action="store_true", help="print the SQL instead of running it")
    p = verbs.add_parser("run", parents=[common], help="the daemon")
    p.add_argument("--drain", action="store_true", help="stop once the sources' current end is reached")
    verbs.add_parser("status", parents=[common, reading], help="positions, lag, retained WAL, events/s")
    p = verbs.add_parser("events", parents=[common, reading, selecting], help="query the event log")
    p.add_argument("--limit", type=int)
    p = verbs.add_parser(
        "snapshot", parents=[common, reading], help="load the tables into the targets; streaming starts where it ends"
    )
    p.add_argument("--source", help="the source (default: every source)")
    p.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="SCHEMA.TABLE",
        help="only this table of the source (repeatable; default: all its tables)",
    )
    p.add_argument("--chunk-rows", type=int, default=5000, help="rows read per chunk (default 5000)")
    p.add_argument("--dry-run", action="store_true", help="count the rows that would be read, read nothing")
    p = verbs.add_parser(
        "backfill",
        parents=[common, reading],
        help="re-read rows from a source while the daemon streams, to bring targets in line",
    )
    p.add_argument("--source", required=True, help="the source to read from")
    p.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="SCHEMA.TABLE",
        help="only this table (repeatable; default: all the source's tables)",
    )
    p.add_argument("--where", help='only the rows of this SQL condition, e.g. "id BETWEEN 100 AND 200"')
    p.add_argument("--target", help="only this target (default: every target)")
    p.add_argument("--chunk-rows", type=int, default=5000, help="rows read per chunk (default 5000)")
    p.add_argument("--dry-run", action="store_true", help="count the rows that would be read, store nothing")
    p = verbs.add_parser(
        "replay", parents=[common, reading, selecting], help="send events from the log again to one database target"
    )
    p.add_argument("--target", required=True, help="the target's name")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    p = verbs.add_parser("conflicts", help="the conflicts found and the review queue")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common, reading], help="conflicts, oldest first")
    listing.add_argument("--type")
    listing.add_argument("--table", help="schema.table")
    listing.add_argument("--status", choices=["auto_resolved", "pending", "resolved_by_hand"])
    listing.add_argument("--since", help="ISO-8601 commit time, inclusive")
    listing.add_argument("--limit", type=int)
    showing = actions.add_parser("show", parents=[common, reading], help="one conflict in full")
    showing.add_argument("id")
    resolving = actions.add_parser("resolve", parents=[common, reading], help="resolve a conflict by hand")
    resolving.add_argument("id")
    how = resolving.add_mutually_exclusive_group(required=True)
    how.add_argument("--keep", metavar="EVENT_ID", help="keep the row this event wrote")
    how.add_argument("--merge", action="store_true", help="three-way merge of the competing writes")
    how.add_argument("--row", metavar="JSON", help="the resolved row, as a JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    allow_deep_json()
    try:
        settings = load_settings(config_path(args.config))
    except ConfigError as exc:
        print(f"cdc: config error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.verb == "run":
        setup_logging(settings.log.level, settings.log.format)
    else:  # with --json, stdout holds only the JSON
        setup_logging(settings.log.level, "text", sys.stderr if getattr(args, "json", False) else None)
    from cdc.cli.common import exit_code_of

    try:
        return _handlers()[args.verb](settings, args)
    except CdcError as exc:
        print(f"cdc {args.verb}: {exc}", file=sys.stderr)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a defect of cdc itself: still one line, and the traceback only in a debug log
        logging.getLogger("cdc").debug("unexpected error in cdc %s", args.verb, exc_info=True)
        print(
            f"cdc {args.verb}: unexpected error: {type(exc).__name__}: {one_line(exc)}"
            ' (set [log] level = "debug" for the traceback)',
            file=sys.stderr,
        )
        return ExitCode.FATAL
