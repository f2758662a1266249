"""What the verbs share: the exit code of an error, the state store, the event selection
options, source connections retried a few times, and one way to print text or ``--json``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cdc import sources
from cdc.config import Settings, SourceSettings
from cdc.dsn import redact_dsn
from cdc.errors import (
    CdcError,
    CommandError,
    ConfigError,
    DsnError,
    ExitCode,
    ReplayError,
    ReviewError,
    SourceError,
)
from cdc.ops.replay import EventFilter
from cdc.retry import retry_call
from cdc.state.store import StateStore

__all__ = ["CommandError", "ExitCode", "connect_source", "event_filter", "exit_code_of", "open_store", "output", "utc"]

ONE_SHOT_ATTEMPTS = 3


def exit_code_of(exc: CdcError) -> ExitCode:
    """The one place where an error becomes an exit code."""
    if isinstance(exc, CommandError):
        return exc.exit_code
    if isinstance(exc, (ConfigError, DsnError, ReplayError)):
        return ExitCode.USAGE
    if isinstance(exc, ReviewError):
        return ExitCode.PROBLEMS
    return ExitCode.FATAL if exc.fatal else ExitCode.UNREACHABLE


def output(
    args: argparse.Namespace,
    document: Any,
    text: Callable[[], None],
    indent: int | None = None,
    ensure_ascii: bool = True,
) -> None:
    """Print ``document`` as JSON with ``--json``, else call ``text`` to print it for a person."""
    if getattr(args, "json", False):
        print(json.dumps(document, indent=indent, ensure_ascii=ensure_ascii, default=str))
    else:
        text()


def open_store(settings: Settings, readonly: bool = True) -> StateStore:
    return StateStore(settings.state_dir, readonly=readonly)


def connect_source(settings: Settings, source: SourceSettings) -> Any:
    """A control connection to a source, retried a few times (a verb is no daemon)."""
    kind = sources.kind_of(source)
    what = f"source {source.name} ({redact_dsn(source.dsn)})"
    return retry_call(
        settings.retry,
        what,
        lambda: kind.control_connection(source),
        lambda exc: isinstance(exc, SourceError) and not exc.fatal,
        attempts=min(settings.retry.attempts or ONE_SHOT_ATTEMPTS, ONE_SHOT_ATTEMPTS),
    )


def stored_position(settings: Settings, source: str) -> str | None:
    """Where the state store says the source resumes, if there is a store."""
    try:
        store = StateStore(settings.state_dir, readonly=True)
    except CdcError:
        return None
    try:
        state = store.source_state(source)
        return state.acked or state.complete_resume
    finally:
        store.close()


def event_filter(args: argparse.Namespace) -> EventFilter:
    """The events ``--source``, ``--table``, ``--key COLUMN=VALUE``, ``--since`` and ``--until`` select."""
    key = {}
    for item in args.key:
        column, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--key {item!r}: write it as COLUMN=VALUE", ExitCode.USAGE)
        key[column] = value
    for value, name in ((args.since, "--since"), (args.until, "--until")):
        if value:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise CommandError(
                    f"{name} {value!r}: not an ISO-8601 time (e.g. 2026-11-22T10:00:00+00:00)", ExitCode.USAGE
                ) from None
    return EventFilter(args.source, args.table, key, utc(args.since), utc(args.until))


def utc(value: str | None) -> str | None:
    """An ISO time in the event log's form (UTC), so that string comparison orders it."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
