"""The natural keys of rows that were in a table before cdc: read once, so that they count.

cdc knows a row's natural keys from the changes it streams; a customer that existed before
``cdc setup`` and never changed since would not be known, and an insert duplicating it would
go unnoticed. So, for each table with ``natural_keys`` whose keys were never read (or whose
``natural_keys`` changed since), ``seed`` reads the rows in one consistent read of the
source (``cdc setup``, and the daemon's start for a table never read), a primary-key chunk
at a time (the snapshot reader's), and keeps of each its key and natural keys, stored as
held by a row "existing" at that read.
Duplicates already there are reported once, as ``duplicate_key`` conflicts with the rule
``existing rows`` (their ids are made of the row and the natural key, so a later read
reports them no second time). ``cdc snapshot`` stores the keys of the rows it reads already:
``after_snapshot`` reports the duplicates among them and records the table as read.

The read happens at a position P of the source (``SnapshotReader.begin_read``: every change
committed after the read began is at or after P), while the stream may resume before P.
The rule: a change of a transaction before P is part of what the read saw, so its natural
keys are noted but a key another row holds is no conflict (the read reported that duplicate
as existing rows); a change from P on is checked as any new change. On MariaDB P is the
binlog position of the consistent snapshot, exactly; on PostgreSQL it is the WAL position
read just before the read's snapshot is taken, so only a duplicate committed in that instant
may be reported twice (as existing rows and by its insert), or not at all when its commit,
written before P, became visible only after the snapshot (a synchronous standby's wait). A
MySQL server offers no such read: there cdc knows the natural keys it streams, and says so
at start.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from cdc.config import Settings, SourceSettings
from cdc.conflicts.detector import Detector
from cdc.conflicts.natural_keys import existing_duplicate, existing_holder
from cdc.conflicts.rules import natural_key_of
from cdc.errors import SourceError
from cdc.sources import make_snapshot_reader
from cdc.sources.base import SnapshotReader
from cdc.state.store import StateStore
from cdc.values import dumps_row, json_value

log = logging.getLogger("cdc.ops.seed_keys")
CHUNK_ROWS = 5000
Table = tuple[str, str]


def seed(
    settings: Settings,
    store: StateStore,
    source: SourceSettings,
    on_conflict: Callable[[dict[str, Any]], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Read the natural keys of the existing rows of the source's tables that need it; the rows read."""
    wanted = wanted_natural_keys(settings, source)
    seeded = store.seeded_natural_keys(source.name)
    stale = [table for table, done in seeded.items() if done["natural_keys"] != wanted.get(table)]
    todo = [table for table, keys in wanted.items() if seeded.get(table, {}).get("natural_keys") != keys]
    if stale:
        with store.transaction():
            for schema, table in stale:
                store.set_seeded_natural_keys(source.name, schema, table, None)
    if not todo:
        return 0
    reader = make_snapshot_reader(source)
    try:
        try:
            position = reader.begin_read()
        except SourceError as exc:
            if not exc.fatal:
                raise
            # a source that offers no consistent read with its position (MySQL): streamed keys only
            log.warning("natural keys of existing rows not read: %s", exc, extra={"source": source.name})
            return 0
        read_at = int(time.time())
        detector = Detector(settings, store, source.name, on_conflict)
        read = 0
        for schema, table in todo:
            rows = _read_table(
                store, reader, source.name, (schema, table), wanted[(schema, table)], read_at, chunk_rows
            )
            _report_and_record(
                store, detector, source.name, (schema, table), wanted[(schema, table)], position, read_at
            )
            log.info(
                "%s.%s: natural keys of %d existing row(s) read",
                schema,
                table,
                rows,
                extra={"source": source.name, "position": position},
            )
            read += rows
        return read
    finally:
        reader.close()


def after_snapshot(
    settings: Settings,
    store: StateStore,
    source: SourceSettings,
    tables: list[Table],
    on_conflict: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """``cdc snapshot`` stored the natural keys of the tables' rows: report the duplicates among
    them, and record the tables as read (the stream starts after the snapshot: no change is before it)."""
    wanted = wanted_natural_keys(settings, source)
    detector = Detector(settings, store, source.name, on_conflict)
    for table in tables:
        if table in wanted:
            _report_and_record(store, detector, source.name, table, wanted[table], "", int(time.time()))


def wanted_natural_keys(settings: Settings, source: SourceSettings) -> dict[Table, list[list[str]]]:
    """(schema, table) -> its configured natural keys, for the source's tables that have some
    (none while conflict detection is off: nothing keeps natural keys then)."""
    if not settings.conflicts.detect:
        return {}
    found = {}
    for schema, table in source.qualified_tables:
        rules = settings.table_settings(source.name, schema, table)
        if rules is not None and rules.natural_keys:
            found[(schema, table)] = [list(names) for names in rules.natural_keys]
    return found


def _read_table(
    store: StateStore,
    reader: SnapshotReader,
    source: str,
    table: Table,
    natural_keys: list[list[str]],
    read_at: int,
    chunk_rows: int,
) -> int:
    """Store the natural keys of the table's rows in place of those held so far; the rows read."""
    holder = existing_holder(read_at)
    keys = [(tuple(names), json.dumps(names)) for names in natural_keys]
    with store.transaction():
        store.forget_natural_keys(source, *table)
    read = 0
    for changes, _ in reader.chunks(*table, None, chunk_rows):
        held = []
        for change in changes:
            key = dumps_row(change.key)
            for names, names_json in keys:
                values = natural_key_of(change.after or {}, names, json_value)
                if values is not None:
                    held.append((*table, names_json, json.dumps(values, default=str), key, holder))
        with store.transaction():
            store.write_natural_keys(source, [], held)
        read += len(changes)
    return read


def _report_and_record(
    store: StateStore,
    detector: Detector,
    source: str,
    table: Table,
    natural_keys: list[list[str]],
    position: str,
    read_at: int,
) -> None:
    """Report once each duplicate among the table's stored natural keys, and record the table as read."""
    holder = existing_holder(read_at)
    with store.transaction():
        for names_json, values_json, keys in store.natural_key_duplicates(source, *table):
            names, values = tuple(json.loads(names_json)), tuple(json.loads(values_json))
            owner, *others = sorted(keys, key=_key_order)
            for key in others:
                conflict = existing_duplicate(source, table, names, values, owner, key, holder)
                if not store.conflicts(conflict_id=f"{conflict.type}:{conflict.events[-1].event_id}"):
                    detector.record(conflict, *table, (position, 0), hold=False)
        store.set_seeded_natural_keys(
            source, *table, {"natural_keys": natural_keys, "position": position, "read_at": read_at}
        )


def _key_order(key: str) -> tuple[tuple[str, Any], ...]:
    """A row key (JSON) for ordering: by its values (numbers as numbers), the oldest row first as a rule."""
    return tuple((type(value).__name__, value) for value in json.loads(key).values())
