"""Re-reading a table whose DDL changed its existing rows (``[pipeline] backfill_after_ddl``).

When a schema change left existing rows with values no row event gave (``ADD COLUMN ...
DEFAULT``, ``ALTER COLUMN TYPE ... USING``), the versioner asks for the table to be read
again: the state store's meta key ``reread:<source>:<schema>.<table>`` (``cdc.pipeline.shapes``).
The ``Rereader`` runs those requests through the backfill path (``cdc.ops.backfill``, the
code of ``cdc backfill``): the rows are stored as events of ``backfill:<source>``, which the
daemon's checkpoints apply to every target. A request is deleted only when its re-read is
wholly stored, and only if no newer DDL replaced it meanwhile; after a crash or a stop the
next start reads the table again, which is harmless (the rows the stream changed since the
read began are dropped, as for every backfill).

While the daemon streams, a thread with its own state store connection looks for requests
every ``POLL_SECONDS``, so the main loop never waits for a re-read. ``cdc run --drain`` runs
them in line instead (``reread_all``), between drains, so that it ends with the targets equal
to the source. A lost source connection is retried with the ``[retry]`` settings; the request
stays in the store whatever happens. While a re-read runs, a marker
(``rereading:<source>:<schema>.<table>``: the daemon's pid, the start, the rows read so far)
lets ``cdc status`` tell a running re-read from a waiting one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pymysql

from cdc.config import Settings, SourceSettings
from cdc.errors import CdcError, SourceError, Unreachable
from cdc.logs import one_line
from cdc.ops.backfill import backfill
from cdc.pipeline.shapes import REREAD_PREFIX
from cdc.progress import Progress
from cdc.retry import retry_call
from cdc.state.store import StateStore

log = logging.getLogger("cdc.ops.reread")

POLL_SECONDS = 1.0
PROGRESS_SECONDS = 30.0  # a long re-read logs how far it is this often
RUNNING_PREFIX = "rereading:"  # meta key prefix of a re-read under way: rereading:<source>:<schema>.<table>
_CONNECTION_ERRORS = (psycopg.OperationalError, pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError)


@dataclass(frozen=True)
class RereadRequest:
    """One table waiting to be read again, as the state store holds it."""

    key: str  # the meta key
    value: str  # the meta value as stored: the request is done only if it is still this one
    source: str
    schema: str
    table: str
    position: str
    commit_ts: str | None
    columns: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def reason(self) -> str:
        columns = f" (columns {', '.join(self.columns)})" if self.columns else ""
        return f"its DDL at {self.position} changed existing rows{columns}"

    @property
    def marker(self) -> str:
        return RUNNING_PREFIX + self.key.removeprefix(REREAD_PREFIX)


def requests(store: StateStore) -> list[RereadRequest]:
    """The re-reads the state store asks for, in the order of their keys."""
    found = []
    for key, value in store.meta_items(REREAD_PREFIX).items():
        source, _, qualified = key.removeprefix(REREAD_PREFIX).partition(":")
        schema, _, table = qualified.partition(".")
        try:
            doc = json.loads(value)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            doc = {}
        columns = doc.get("columns")
        found.append(
            RereadRequest(
                key,
                value,
                source,
                schema,
                table,
                str(doc.get("position") or "?"),
                doc.get("commit_ts"),
                tuple(str(c) for c in columns) if isinstance(columns, list) else (),
            )
        )
    return found


def status(store: StateStore) -> list[dict[str, Any]]:
    """Each re-read waiting or running, for ``cdc status``."""
    markers = store.meta_items(RUNNING_PREFIX)
    report = []
    for request in requests(store):
        entry: dict[str, Any] = {
            "source": request.source,
            "table": request.qualified,
            "state": "waiting",
            "since_position": request.position,
            "since_commit_ts": request.commit_ts,
            "columns": list(request.columns),
            "why": request.reason,
        }
        running = _marker_doc(markers.get(request.marker))
        if running is not None and _alive(running.get("pid")):
            entry.update(state="running", started_at=running.get("started_at"), rows_read=running.get("rows_read"))
        report.append(entry)
    return report


class Rereader:
    """Runs the state store's re-read requests: in its own thread while the daemon streams
    (``start``/``close``), or in line (``reread_all``) for ``cdc run --drain``."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self._stop = stop
        self._thread: threading.Thread | None = None
        self._refused: dict[str, str] = {}  # meta key -> the value that cannot be re-read (until it changes)
        self._not_before: dict[str, float] = {}  # meta key -> when to try again after giving up

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="reread", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Wait for the thread, which ends after the chunk it reads once ``stop`` is set."""
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def reread_all(self, store: StateStore) -> bool:
        """Run every request now (``--drain``); whether any table was read again. A failure is
        raised (fatal, or ``Unreachable`` once the retries give up); the request stays."""
        done = False
        for request in requests(store):
            if self._stop.is_set():
                break
            source = self._source_of(request)
            if source is not None:
                try:
                    done = self._reread(store, source, request) or done
                except Unreachable:
                    raise
                except Exception as exc:
                    if self._stop.is_set():  # the retries were cut short: the request waits
                        break
                    raise SourceError(_failure(request, exc), fatal=True) from exc
        return done

    def _watch(self) -> None:
        try:
            store = StateStore(self.settings.state_dir)
        except CdcError as exc:
            log.error("re-reads after DDL are off until the next start: %s", exc)
            return
        try:
            for marker in store.meta_items(RUNNING_PREFIX):  # left by a daemon that was killed
                store.delete_meta(marker)
            while not self._stop.wait(POLL_SECONDS):
                for request in requests(store):
                    if self._stop.is_set():
                        break
                    self._try(store, request)
        except Exception as exc:  # the stream goes on; the requests wait for the next start
            log.error("re-reads after DDL are off until the next start: %s", one_line(exc))
        finally:
            store.close()

    def _try(self, store: StateStore, request: RereadRequest) -> None:
        """Re-read one request in the thread, unless it failed before in a way that waits."""
        if self._refused.get(request.key) == request.value or time.monotonic() < self._not_before.get(request.key, 0):
            return
        source = self._source_of(request)
        if source is None:
            self._refused[request.key] = request.value
            return
        try:
            self._reread(store, source, request)
        except Unreachable as exc:
            log.error("%s; trying again in %gs", exc, self.settings.retry.max_seconds)
            self._not_before[request.key] = time.monotonic() + self.settings.retry.max_seconds
        except Exception as exc:
            if not self._stop.is_set():  # (else the retries were cut short: the request waits)
                log.error("%s", _failure(request, exc))
                self._refused[request.key] = request.value

    def _source_of(self, request: RereadRequest) -> SourceSettings | None:
        source = next((s for s in self.settings.sources if s.name == request.source), None)
        if source is not None and (request.schema, request.table) in source.qualified_tables:
            return source
        if self._refused.get(request.key) != request.value:
            log.warning(
                "%s of source %s waits for a re-read, but it is not a configured table of a configured source",
                request.qualified,
                request.source,
            )
            self._refused[request.key] = request.value
        return None

    def _reread(self, store: StateStore, source: SourceSettings, request: RereadRequest) -> bool:
        """Read the table again through the backfill path; whether it was wholly stored."""
        about = {"source": request.source, "position": request.position}
        log.info("re-reading %s of source %s: %s", request.qualified, request.source, request.reason, extra=about)
        started_at, started = datetime.now(UTC).isoformat(timespec="seconds"), time.monotonic()
        complete = False
        try:

            def attempt() -> int:
                progress = _Running(store, request, started_at)
                return backfill(store, source, [(request.schema, request.table)], progress=progress, stop=self._stop)

            what = f"re-reading {request.qualified} of source {request.source}"
            read = retry_call(self.settings.retry, what, attempt, _retryable, stop=self._stop)
            complete = not self._stop.is_set()  # (a stop may have cut the read short)
            if complete:
                with store.transaction():
                    replaced = store.get_meta(request.key) != request.value
                    if not replaced:
                        store.delete_meta(request.key)
                    store.delete_meta(request.marker)
                log.info(
                    "re-read %s of source %s: %d rows in %.1fs%s",
                    request.qualified,
                    request.source,
                    read,
                    time.monotonic() - started,
                    "; a newer DDL asks for it to be read again" if replaced else "",
                    extra={**about, "rows": read},
                )
            else:
                log.info(
                    "re-read of %s of source %s stopped: it is read again at the next start",
                    request.qualified,
                    request.source,
                    extra=about,
                )
            return complete
        finally:
            if not complete:
                store.delete_meta(request.marker)


class _Running(Progress):
    """A re-read's progress: logged every ``PROGRESS_SECONDS``, and kept in its marker for
    ``cdc status``."""

    def __init__(self, store: StateStore, request: RereadRequest, started_at: str) -> None:
        what = f"re-read of {request.qualified} of source {request.source}"
        super().__init__(what, None, stream=io.StringIO(), interval=PROGRESS_SECONDS)  # a daemon logs, draws no bar
        self._store, self._request, self._started_at = store, request, started_at
        self._mark()

    def add(self, count: int) -> None:
        super().add(count)
        self._mark()

    def _mark(self) -> None:
        doc = {"pid": os.getpid(), "started_at": self._started_at, "rows_read": self.done}
        self._store.set_meta(self._request.marker, json.dumps(doc))


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, CdcError):
        return isinstance(exc, SourceError) and not exc.fatal
    return isinstance(exc, _CONNECTION_ERRORS)


def _failure(request: RereadRequest, exc: BaseException) -> str:
    return (
        f"source {request.source}: cannot re-read {request.qualified} after its DDL: {one_line(exc)};"
        " the request waits in the state store: fix this and start 'cdc run' again"
    )


def _marker_doc(value: str | None) -> dict[str, Any] | None:
    try:
        doc = json.loads(value) if value else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
