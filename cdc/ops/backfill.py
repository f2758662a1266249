"""``cdc backfill``: re-read rows from a source while the daemon streams, and bring targets in line.

The rows (tables, narrowed by ``--where``) are read in one consistent read, in primary-key
chunks, and stored as events (``op = "snapshot"``) of the pseudo-source
``backfill:<source>``, each noting the position the read began at. The daemon applies them
to the targets at its checkpoints, after the source's own events, and drops a re-read row
whenever the state store holds a change of that row committed at or after that position:
the stream already gave the targets that row as new or newer (no watermark rows are
written to the source). Rows of a key held for review are left alone too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from cdc import event_doc
from cdc.config import SourceSettings
from cdc.model import Event, RowChange, backfill_source, make_event_id
from cdc.progress import Progress
from cdc.sources import make_snapshot_reader as make_reader
from cdc.state.store import StateStore
from cdc.values import compact_json, dumps_row

log = logging.getLogger("cdc.ops.backfill")


def plan(source: SourceSettings, tables: list[tuple[str, str]], where: str | None) -> dict[str, int]:
    """Rows each table would give ("schema.table" -> rows), for ``--dry-run``."""
    reader = make_reader(source)
    try:
        reader.begin_read()
        return {f"{schema}.{table}": reader.count(schema, table, where) for schema, table in tables}
    finally:
        reader.close()


def backfill(
    store: StateStore,
    source: SourceSettings,
    tables: list[tuple[str, str]],
    where: str | None = None,
    target: str | None = None,
    chunk_rows: int = 5000,
    progress: Progress | None = None,
) -> int:
    """Store the re-read rows for the daemon to apply (to ``target`` only, if given); how many."""
    pseudo = backfill_source(source.name)
    reader = make_reader(source)
    try:
        read_at = reader.begin_read()
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        extra = f',"backfill":{compact_json({"read_at": read_at, "target": target})}'
        number = int(store.last_txn(pseudo) or 0)
        read = 0
        for schema, table in tables:
            for changes, _ in reader.chunks(schema, table, None, chunk_rows, where):
                number += 1
                txn_key = f"{number:020d}"
                with store.transaction():
                    store.append(
                        [
                            _event(store, pseudo, source.name, txn_key, seq, change, now, extra)
                            for seq, change in enumerate(changes)
                        ]
                    )
                read += len(changes)
                if progress is not None:
                    progress.add(len(changes))
        return read
    finally:
        reader.close()


def _event(
    store: StateStore, pseudo: str, source: str, txn_key: str, seq: int, change: RowChange, now: str, extra: str
) -> Event:
    key = dumps_row(change.key)
    event_id = make_event_id(pseudo, txn_key, seq)
    doc = event_doc.render(
        event_id=event_id,
        source=source,
        schema=change.schema,
        table=change.table,
        op="snapshot",
        key=key,
        after=change.after,
        before=None,
        commit_ts=now,
        position=txn_key,
        version=store.row_version(source, change.schema, change.table, key),
        changed=list(change.after or ()),
        extra=extra,
    )
    return Event(
        pseudo,
        txn_key,
        seq,
        event_id,
        change.schema,
        change.table,
        "snapshot",
        key,
        now,
        doc,
        change.native_form(),
        origin=source,
    )
