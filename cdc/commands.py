"""The verbs of the command line; each takes the settings and the parsed arguments."""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from typing import Any

import psycopg

from cdc.config import Settings, config_path
from cdc.dsn import DsnError, connect_kwargs, redact_dsn
from cdc.logs import one_line
from cdc.retry import Unreachable, retry_call
from cdc.sources.base import SourceError, server_status
from cdc.pipeline.sync import written_tables
from cdc.replay import EventFilter
from cdc.state.store import StateStore, StateStoreError

ONE_SHOT_ATTEMPTS = 3


class CommandError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _connect_source(settings: Settings, source) -> psycopg.Connection:
    """A regular connection to a PostgreSQL source, retried a few times."""
    def connect() -> psycopg.Connection:
        try:
            return psycopg.connect(**connect_kwargs(source.dsn, source.password), autocommit=True)
        except DsnError as exc:
            raise CommandError(f"source {source.name}: {exc}", 2) from None
        except psycopg.OperationalError as exc:
            raise SourceError(f"cannot connect: {one_line(exc)}") from None

    what = f"source {source.name} ({redact_dsn(source.dsn)})"
    try:
        return retry_call(settings.retry, what, connect, lambda exc: isinstance(exc, SourceError),
                          attempts=min(settings.retry.attempts or ONE_SHOT_ATTEMPTS, ONE_SHOT_ATTEMPTS))
    except Unreachable as exc:
        raise CommandError(str(exc), 4) from None


def _connect_mysql(settings: Settings, source):
    """A control connection to a MySQL/MariaDB source, retried a few times."""
    from cdc.sources.mysql import MysqlSource

    what = f"source {source.name} ({redact_dsn(source.dsn)})"
    try:
        return retry_call(settings.retry, what, MysqlSource(source).control_connection, _retryable_source,
                          attempts=min(settings.retry.attempts or ONE_SHOT_ATTEMPTS, ONE_SHOT_ATTEMPTS))
    except Unreachable as exc:
        raise CommandError(str(exc), 4) from None
    except SourceError as exc:
        raise CommandError(str(exc), 3 if exc.fatal else 4) from None


def _retryable_source(exc: BaseException) -> bool:
    return isinstance(exc, SourceError) and not exc.fatal


def _stored_position(settings: Settings, source: str) -> str | None:
    try:
        store = StateStore(settings.state_dir, readonly=True)
    except StateStoreError:
        return None
    try:
        state = store.source_state(source)
        return state.acked or state.complete_resume
    finally:
        store.close()


# -- check / setup -----------------------------------------------------------------------

def check(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.sources import pg_admin

    report: list[dict[str, str]] = []
    for source in settings.sources:
        if source.kind == "mysql":
            from cdc.sources import mysql_admin

            conn = _connect_mysql(settings, source)
            try:
                problems = mysql_admin.check(conn, source, _stored_position(settings, source.name),
                                             written_tables(settings, source.name))
            finally:
                conn.close()
        else:
            with _connect_source(settings, source) as conn:
                problems = pg_admin.check(conn, source, written_tables(settings, source.name))
        report += [{"source": source.name, "problem": p.what, "fix": p.fix, "severity": p.severity}
                   for p in problems]
    report += _check_state_dir(settings)
    report += _check_targets(settings)
    report += _check_http(settings)
    errors = [item for item in report if item.get("severity", "error") == "error"]
    if args.json:
        print(json.dumps({"ok": not errors, "problems": report}, indent=2))
    elif report:
        for item in report:
            label = "WARNING" if item.get("severity") == "warning" else "PROBLEM"
            print(f"{label} [{item['source']}] {item['problem']}\n    fix: {item['fix']}")
        print(f"{len(errors)} problem(s), {len(report) - len(errors)} warning(s) found")
    else:
        print("all checks passed")
    return 1 if errors else 0


def _check_state_dir(settings: Settings) -> list[dict[str, str]]:
    directory = settings.state_dir
    probe = directory if directory.exists() else directory.parent
    if os.access(probe, os.W_OK):
        return []
    return [{"source": "state_dir", "problem": f"{directory} is not writable by this user",
             "fix": f"mkdir -p {directory} && chown <cdc user> {directory}"}]


def _check_http(settings: Settings) -> list[dict[str, str]]:
    from cdc.web.server import is_loopback

    if not settings.http.listen or is_loopback(settings.http.address[0]) or settings.http.token:
        return []
    return [{"source": "http", "problem": f"[http] listen = {settings.http.listen!r} is not a loopback address and"
             " no token is set: every request would be refused",
             "fix": "set [http] token (or CDC_HTTP__TOKEN), or listen on 127.0.0.1"}]


def _check_targets(settings: Settings) -> list[dict[str, str]]:
    problems = []
    for target in settings.targets:
        if target.kind == "postgres":
            try:
                psycopg.connect(**connect_kwargs(target.dsn, target.password)).close()
            except (psycopg.Error, DsnError) as exc:
                problems.append({"source": f"target {target.name}",
                                 "problem": f"cannot connect to {redact_dsn(target.dsn)}: {one_line(exc)}",
                                 "fix": "check the target's dsn, password and pg_hba.conf"})
        elif target.kind == "jsonl" and target.path is not None:
            folder = target.path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not os.access(folder, os.W_OK):
                problems.append({"source": f"target {target.name}", "problem": f"{target.path} is not writable",
                                 "fix": f"create {target.path.parent} writable by the cdc user"})
    return problems


def setup(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.sources import pg_admin

    for source in settings.sources:
        if source.kind == "mysql":
            _setup_mysql(settings, source)
            continue
        with _connect_source(settings, source) as conn:
            statements = pg_admin.setup_statements(conn, source)
            if args.print_sql:
                print(f"-- source {source.name} ({redact_dsn(source.dsn)})")
                for statement in statements:
                    print(statement.as_string(conn))
                if not statements:
                    print("-- nothing to do: publication and slot exist")
                continue
            for statement in statements:
                try:
                    conn.execute(statement)
                except psycopg.Error as exc:
                    raise CommandError(f"source {source.name}: {statement.as_string(conn)} failed: "
                                       f"{one_line(exc)}", 3) from None
                print(f"[{source.name}] {statement.as_string(conn)}")
            if not statements:
                print(f"[{source.name}] nothing to do: publication and slot exist")
    return 0


def _setup_mysql(settings: Settings, source) -> None:
    """A binlog has no slot: record where streaming starts, once, in the state store."""
    from cdc.sources.mysql import MysqlSource

    reader = MysqlSource(source)
    conn = _connect_mysql(settings, source)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            reader.is_mariadb = "mariadb" in cur.fetchone()[0].lower()
        current = reader.current_position(conn)
    finally:
        conn.close()
    store = StateStore(settings.state_dir)
    try:
        stored = store.source_state(source.name)
        if stored.acked or stored.complete_resume:
            print(f"[{source.name}] nothing to do: streaming resumes at {stored.acked or stored.complete_resume}")
        else:
            store.set_acked(source.name, current)
            print(f"[{source.name}] streaming will start at the binlog position {current or '(empty binlog)'}")
    finally:
        store.close()


# -- run ---------------------------------------------------------------------------------

def run(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.daemon import Daemon

    try:
        return Daemon(settings, config_path(args.config)).run(drain=args.drain)
    except StateStoreError as exc:
        raise CommandError(str(exc), 3) from None


# -- status / events ---------------------------------------------------------------------

def open_store(settings: Settings, readonly: bool = True) -> StateStore:
    try:
        return StateStore(settings.state_dir, readonly=readonly)
    except StateStoreError as exc:
        raise CommandError(str(exc), 3) from None


def status(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    now = time.time()
    counts = store.counts()
    oldest = store.oldest_event()
    counts["oldest_replayable"] = {"commit_ts": oldest[0], "event_id": oldest[1]} if oldest else None
    counts["retain_days"] = settings.event_log.retain_days
    report: dict[str, Any] = {"sources": [], "targets": [], "events": counts,
                              "events_per_second": round(store.events_recorded_since(now - 60) / 60, 2),
                              "open_conflicts": store.open_conflicts()}
    for source in settings.sources:
        state = store.source_state(source.name)
        entry: dict[str, Any] = {
            "name": source.name, "kind": source.kind, "acked": state.acked,
            "acked_age_seconds": round(now - state.acked_at, 1) if state.acked_at else None,
            "last_transaction": state.complete_position, "events": counts["events_by_source"].get(source.name, 0),
            "server": None}
        try:
            entry["server"] = server_status(source)
        except (psycopg.Error, DsnError, SourceError, OSError) as exc:
            entry["server_error"] = one_line(exc)
        report["sources"].append(entry)
    for target, source, txn_key, seq, updated_at in store.target_positions():
        report["targets"].append({"name": target, "source": source, "txn_key": txn_key, "seq": seq,
                                  "updated_age_seconds": round(now - updated_at, 1)})
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_status(report)
    return 0


def _print_status(report: dict[str, Any]) -> None:
    print(f"{'SOURCE':10} {'ACKED':24} {'SERVER AT':24} {'LAG':>10} {'RETAINED':>10} {'EVENTS':>8}")
    for s in report["sources"]:
        server = s["server"] or {}
        if s.get("server_error"):
            at, lag, retained = "unreachable", "-", "-"
        elif "current_wal_lsn" in server:
            at, lag, retained = (server["current_wal_lsn"], _bytes(server.get("lag_bytes")),
                                 _bytes(server.get("retained_wal_bytes")))
        else:
            at = server.get("gtid_position") or f"{server.get('file')}:{server.get('position')}"
            lag, retained = "-", _bytes(server.get("binlog_bytes"))
        print(f"{s['name']:10} {s['acked'] or '-':24} {at:24} {lag:>10} {retained:>10} {s['events']:>8}")
        if s.get("server_error"):
            print(f"    {s['name']}: {s['server_error']}")
    for t in report["targets"]:
        print(f"target {t['name']}: {t['source']} applied through {t['txn_key']}:{t['seq']}"
              f" ({t['updated_age_seconds']}s ago)")
    oldest = report["events"]["oldest_replayable"]
    print(f"events/s (last minute): {report['events_per_second']}; oldest replayable event: "
          + (f"{oldest['event_id']} at {oldest['commit_ts']}" if oldest else "-")
          + f" (kept {report['events']['retain_days']:g} days)")
    pending = report["open_conflicts"]
    print(f"open conflicts: {sum(pending.values())}"
          + (f" ({', '.join(f'{n} {kind}' for kind, n in sorted(pending.items()))}; see cdc conflicts list)"
             if pending else ""))


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def event_filter(args: argparse.Namespace) -> EventFilter:
    """The events ``--source``, ``--table``, ``--key COLUMN=VALUE``, ``--since`` and ``--until`` select."""
    key = {}
    for item in args.key:
        column, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--key {item!r}: write it as COLUMN=VALUE", 2)
        key[column] = value
    for value, name in ((args.since, "--since"), (args.until, "--until")):
        if value:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise CommandError(f"{name} {value!r}: not an ISO-8601 time (e.g. 2026-11-22T10:00:00+00:00)", 2)
    return EventFilter(args.source, args.table, key, _utc(args.since), _utc(args.until))


def events(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    for doc in store.query_events(**event_filter(args).as_query(), limit=args.limit):
        if args.json:
            print(doc)
        else:
            event = json.loads(doc)
            print(f"{event['commit_ts']} {event['event_id']} {event['op']:8} {event['schema']}.{event['table']}"
                  f" {json.dumps(event['key'])} v{event['version']} changed={','.join(event['changed'])}")
    return 0


def _utc(value: str | None) -> str | None:
    """An ISO time in the event log's form (UTC), so that string comparison orders it."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


# -- conflicts ---------------------------------------------------------------------------

def conflicts(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "resolve":
        return _resolve(settings, args)
    store = open_store(settings)
    if args.action == "show":
        found = store.conflicts(conflict_id=args.id)
        if not found:
            raise CommandError(f"no conflict {args.id!r} (see 'cdc conflicts list')", 1)
        record = found[0]
        if args.json:
            print(json.dumps(record, indent=2, ensure_ascii=False, default=str))
            return 0
        print(f"{record['id']}  {record['type']} ({record['severity']}, {record['status']})")
        print(f"  {record['explanation']}")
        print(f"  table {record['table']} key {record['key']} fields {', '.join(record['fields'])}")
        print(f"  rule: {record['rule']}")
        for event in record["events"]:
            print(f"  {event['commit_ts']} {event['event_id']} {event['op']} by {event['writer'] or event['source']}:"
                  f" {json.dumps(event['before'], ensure_ascii=False)} -> {json.dumps(event['after'], ensure_ascii=False)}")
        if record["resolution"]:
            print(f"  resolution: {json.dumps(record['resolution'], ensure_ascii=False, default=str)}")
        return 0
    found = store.conflicts(type=args.type, table=args.table, status=args.status, since=_utc(args.since),
                            limit=args.limit)
    for record in found:
        if args.json:
            print(json.dumps(record, ensure_ascii=False, default=str))
        else:
            print(f"{record['commit_ts']} {record['id']} {record['status']:14} {record['explanation']}")
    return 0


def _resolve(settings: Settings, args: argparse.Namespace) -> int:
    from cdc.conflicts.review import ReviewError, resolve

    row = None
    if args.row is not None:
        try:
            row = json.loads(args.row)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--row is not valid JSON: {exc}", 2) from None
        if not isinstance(row, dict):
            raise CommandError("--row must be a JSON object of column: value", 2)
    try:
        store = StateStore(settings.state_dir)
    except StateStoreError as exc:
        raise CommandError(str(exc), 3) from None
    try:
        resolution = resolve(store, args.id, keep=args.keep, merge=args.merge, row=row)
    except ReviewError as exc:
        raise CommandError(str(exc), 1) from None
    finally:
        store.close()
    if args.json:
        print(json.dumps(resolution, ensure_ascii=False, default=str))
    else:
        print(f"resolved {args.id}: the targets get {json.dumps(resolution['resolved_row'], ensure_ascii=False)}"
              " at the daemon's next checkpoint")
    return 0
