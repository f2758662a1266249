"""``cdc check`` and ``cdc setup``: what stands between a source and a stream, and making it so."""

from __future__ import annotations

import argparse
import os
from contextlib import closing

from cdc import sources
from cdc.cli.common import ExitCode, connect_source, open_store, output, stored_position
from cdc.config import Settings, SourceSettings
from cdc.pipeline.entities import written_tables
from cdc.targets import check_target


def check(settings: Settings, args: argparse.Namespace) -> int:
    report: list[dict[str, str]] = []
    for source in settings.sources:
        with closing(connect_source(settings, source)) as conn:
            problems = sources.kind_of(source).check(
                conn, source, stored_position(settings, source.name), written_tables(settings, source.name)
            )
        report += [{"source": source.name, "problem": p.what, "fix": p.fix, "severity": p.severity} for p in problems]
    report += _check_state_dir(settings)
    for target in settings.targets:
        report += [{"source": f"target {target.name}", "problem": p.what, "fix": p.fix} for p in check_target(target)]
    report += _check_http(settings)
    errors = [item for item in report if item.get("severity", "error") == "error"]

    def text() -> None:
        if not report:
            print("all checks passed")
            return
        for item in report:
            label = "WARNING" if item.get("severity") == "warning" else "PROBLEM"
            print(f"{label} [{item['source']}] {item['problem']}\n    fix: {item['fix']}")
        print(f"{len(errors)} problem(s), {len(report) - len(errors)} warning(s) found")

    output(args, {"ok": not errors, "problems": report}, text, indent=2)
    return ExitCode.PROBLEMS if errors else ExitCode.OK


def _check_state_dir(settings: Settings) -> list[dict[str, str]]:
    directory = settings.state_dir
    probe = directory if directory.exists() else directory.parent
    if os.access(probe, os.W_OK):
        return []
    return [
        {
            "source": "state_dir",
            "problem": f"{directory} is not writable by this user",
            "fix": f"mkdir -p {directory} && chown <cdc user> {directory}",
        }
    ]


def _check_http(settings: Settings) -> list[dict[str, str]]:
    from cdc.web.server import is_loopback

    if not settings.http.listen or is_loopback(settings.http.address[0]) or settings.http.token:
        return []
    return [
        {
            "source": "http",
            "problem": f"[http] listen = {settings.http.listen!r} is not a loopback address and"
            " no token is set: every request would be refused",
            "fix": "set [http] token (or CDC_HTTP__TOKEN), or listen on 127.0.0.1",
        }
    ]


def setup(settings: Settings, args: argparse.Namespace) -> int:
    for source in settings.sources:
        with closing(connect_source(settings, source)) as conn:
            sources.kind_of(source).setup(conn, source, settings.state_dir, args.print_sql, print)
        if not args.print_sql:
            _seed_natural_keys(settings, source)
    return ExitCode.OK


def _seed_natural_keys(settings: Settings, source: SourceSettings) -> None:
    """Read the natural keys of the rows already there (``cdc.ops.seed_keys``), right after the stream's start is made."""
    from cdc.ops.seed_keys import seed

    with closing(open_store(settings, readonly=False)) as store:
        read = seed(settings, store, source)
    if read:
        print(f"[{source.name}] natural keys of {read} existing row(s) read")
