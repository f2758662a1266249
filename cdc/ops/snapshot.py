"""``cdc snapshot``: load a source's tables into the state store, so that the targets get them and
the stream starts exactly where the snapshot ends.

The source's reader (``cdc.sources.postgres.snapshot``, ``cdc.sources.mysql.snapshot``) gives the
position matching its consistent read and the tables' rows in primary-key chunks. Each chunk
becomes events (``op = "snapshot"``) of one pseudo-transaction placed just before that
position, stored together with the table's progress (its last key), so an interrupted
snapshot resumes after the last finished chunk and memory holds one chunk at a time. When
every table is read the transaction is marked complete with the stream's start position:
the daemon's next checkpoint applies the rows to the targets and streaming resumes there.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from cdc.config import Settings, SourceSettings
from cdc.errors import SnapshotError
from cdc.model import TxnBegin
from cdc.pipeline.versioner import Versioner
from cdc.progress import Progress
from cdc.sources import make_snapshot_reader as make_reader
from cdc.sources.base import SnapshotReader
from cdc.state.store import StateStore

log = logging.getLogger("cdc.ops.snapshot")
CHUNK_ROWS = 5000


def plan(settings: Settings, source: SourceSettings, tables: list[tuple[str, str]]) -> dict[str, int]:
    """Rows each table holds now ("schema.table" -> rows), for ``--dry-run``."""
    reader = make_reader(source)
    try:
        reader.begin_read()
        return {f"{schema}.{table}": reader.count(schema, table) for schema, table in tables}
    finally:
        reader.close()


def snapshot(
    settings: Settings,
    store: StateStore,
    source: SourceSettings,
    tables: list[tuple[str, str]],
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> int:
    """Read the tables into the event log (resuming an interrupted snapshot); the rows read."""
    meta_key = f"snapshot:{source.name}"
    stored = store.get_meta(meta_key)
    started = json.loads(stored) if stored else None
    if started is None:
        state = store.source_state(source.name)
        if state.complete_txn:  # (a position alone, recorded by 'cdc setup', is no stream yet)
            raise SnapshotError(
                f"source {source.name} already streams (events up to {state.complete_position}):"
                " re-read its tables with 'cdc backfill' instead"
            )
    elif [tuple(t) for t in started["tables"]] != tables:
        raise SnapshotError(
            f"an interrupted snapshot of source {source.name} read other tables"
            f" ({', '.join('.'.join(t) for t in started['tables'])}): run it again with those"
        )
    reader = make_reader(source)
    try:
        start = reader.begin(started)
        if started is None:
            started = {**start, "tables": [list(t) for t in tables], "seq": 0}
            with store.transaction():
                store.set_meta(meta_key, json.dumps(started))
                for schema, table in tables:
                    store.set_snapshot_table(source.name, schema, table, None, 0, False)
        else:
            log.info(
                "resuming the snapshot of %s after its last finished chunk", source.name, extra={"source": source.name}
            )
        read = _read_tables(
            store, Versioner(settings, store, source.name), reader, source.name, started, tables, chunk_rows, progress
        )
        with store.transaction():
            store.mark_complete(source.name, started["txn_key"], started["position"], started["resume"])
            store.set_acked(source.name, started["resume"])  # where the stream starts, whatever was before
            store.forget_snapshot(source.name)
        return read
    finally:
        reader.close()


def _read_tables(
    store: StateStore,
    versioner: Versioner,
    reader: SnapshotReader,
    source: str,
    started: dict[str, Any],
    tables: list[tuple[str, str]],
    chunk_rows: int,
    progress: Progress | None,
) -> int:
    txn = TxnBegin(started["txn_key"], started["position"], None, datetime.now(UTC))
    progress_by_table = store.snapshot_tables(source)
    seq, read = started["seq"], 0
    for schema, table in tables:
        after, rows_read, done = progress_by_table.get((schema, table), (None, 0, False))
        if done:
            continue
        if after is not None:
            log.info(
                "%s.%s: %d rows were read; going on after key %s",
                schema,
                table,
                rows_read,
                after,
                extra={"source": source},
            )
        for changes, last_key in reader.chunks(schema, table, after, chunk_rows):
            with store.transaction():
                versioner.version_all(txn, list(enumerate(changes, seq)))
                seq += len(changes)
                rows_read += len(changes)
                store.set_snapshot_table(source, schema, table, last_key, rows_read, False)
                started["seq"] = seq
                store.set_meta(f"snapshot:{source}", json.dumps(started))
                store.set_stored(source, started["txn_key"], seq - 1)
            read += len(changes)
            if progress is not None:
                progress.add(len(changes))
        with store.transaction():
            store.set_snapshot_table(source, schema, table, None, rows_read, True)
    return read
