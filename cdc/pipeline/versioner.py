"""The versioner: turns a source's row changes into versioned events in the state store.

Each change gets the next version of its row (per source, table and key) and an event id
made of the source, the transaction's position and the change's sequence number, so that
re-reading the same transaction after a restart yields the same ids.
"""

from __future__ import annotations

from collections.abc import Callable

from cdc.config import EntitySettings, Settings
from cdc.conflicts.detector import Detector
from cdc.conflicts.model import Change, Conflict
from cdc.conflicts.resolution import merged_row
from cdc.model import (
    Event,
    RowChange,
    TableShape,
    TxnBegin,
    add_conflict_ids,
    changed_columns,
    make_event_id,
)
from cdc.pipeline.entities import EntitySync
from cdc.pipeline.plan import Plan
from cdc.pipeline.shapes import TableShapes, with_schema_change
from cdc.state.store import StateStore
from cdc.values import compact_json as _dump
from cdc.values import dumps_row, encode_value, json_names, json_value

_ECHO = ',"echo":true'  # cdc's own write into the source, come back on its stream


class Versioner:
    """Makes the events of one source's changes; call inside ``store.transaction()``."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        source: str,
        on_conflict: Callable[[dict], None] | None = None,
        sync: EntitySync | None = None,
    ) -> None:
        self._store = store
        self._source = source
        self._plan = Plan(settings, source)
        self._recorder = Detector(settings, store, source, on_conflict)
        self._detector = self._recorder if settings.conflicts.detect else None
        self._sync = sync or EntitySync(settings, store)
        self._txn: TxnBegin | None = None
        self._txn_parts = ("", "")
        self._tables_json: dict[tuple[str, str], str] = {}
        self._shapes = TableShapes(settings, store, source, self._recorder)

    def shape(self, shape: TableShape) -> None:
        """A source described a table's columns; a change of them goes with the table's next event."""
        self._shapes.described(shape)

    def version_all(self, txn: TxnBegin, changes: list[tuple[int, RowChange]], echo: bool = False) -> list[Event]:
        """Make and store (call inside ``store.transaction()``) the events of a batch of a transaction's
        changes (``(seq, change)``, in order), the versions of their rows read at once. Each is
        appended as it is made: it is the history of the next."""
        keys = [dumps_row(change.key) for _, change in changes]
        rows = [(change.schema, change.table, key) for (_, change), key in zip(changes, keys)]
        self._store.prefetch_rows(self._source, rows)
        if self._detector is not None:
            self._detector.read_ahead([row for row in rows if self._store.is_live(self._source, *row) is not None])
        events = []
        for (seq, change), key in zip(changes, keys):
            event = self.version(txn, seq, change, echo, key)
            self._store.append([event])
            events.append(event)
        return events

    def version(
        self, txn: TxnBegin, seq: int, change: RowChange, echo: bool = False, key_json: str | None = None
    ) -> Event:
        """The event for a change, its row's version counted in the state store; an ``echo`` (a row
        cdc itself wrote into this source) is stored, but never taken for a new change."""
        if key_json is None:
            key_json = dumps_row(change.key)
        event_id = make_event_id(self._source, txn.position, seq)
        was_live = None
        position = (txn.txn_key, seq)
        if change.op == "truncate":
            if self._detector is not None:
                self._detector.forget_table(change.schema, change.table)
            self._store.forget_rows(self._source, change.schema, change.table)
            version = 0
        elif (
            self._detector is not None
            and change.op == "insert"
            and self._store.first_version(self._source, change.schema, change.table, key_json, event_id)
        ):
            version = 1  # a row never seen (was_live None)
        else:
            if self._detector is not None:  # only an insert can meet a row that is still there
                was_live = (
                    self._store.is_live(self._source, change.schema, change.table, key_json)
                    if change.op == "insert"
                    else True
                )
            version = self._store.next_version(
                self._source, change.schema, change.table, key_json, event_id, live=change.op != "delete"
            )
            old_key = _old_key(change)
            if old_key is not None:
                self._row_gone(change, dumps_row(old_key))
        # before the rules: they must know of a schema change that this change is the first to follow
        record = self._shapes.record(txn, change, self._txn_texts(txn)[0]) if self._shapes.pending else None
        plan = self._plan.table(change.schema, change.table)
        changed = _changed(change)
        writer = _writer(change, plan.writer_column)
        commit_ts, txn_json = self._txn_texts(txn)
        before, after = dumps_row(change.before), dumps_row(change.after)
        doc = (
            f'{{"event_id":{_dump(event_id)},{self._table_json(change.schema, change.table)},"op":"{change.op}",'
            f'"key":{key_json},"version":{version},"before":{before},'
            f'"after":{after},"changed":{json_names(changed)},{txn_json},'
            f'"writer":{encode_value(writer)},"conflicts":[]{_ECHO if echo else ""}}}'
        )
        entity = plan.entity
        ids: list[str] = []
        noted = echo or change.op == "snapshot"  # history for the next change, never a new change itself
        if self._detector is not None and change.op != "truncate":
            conflicts = self._detector.check(
                change,
                event_id,
                key_json,
                before,
                after,
                txn.commit_ts,
                writer,
                txn.xid,
                changed,
                position,
                was_live,
                rules_apply=not noted,
            )
            if conflicts:
                ids = [self._detector.record(conflict, change.schema, change.table, position) for conflict in conflicts]
                if plan.repair_write:
                    self._write_repairs(conflicts, self._detector.last_change, key_json, version)
            if entity is not None and not noted:
                ids += self._observe_entity(entity, self._detector.last_change, change, position)
        elif entity is not None and not noted and change.op in ("insert", "update", "delete"):
            seen = Change.of_texts(
                event_id,
                self._source,
                plan.qualified,
                key_json,
                change.op,
                before,
                after,
                txn.commit_ts,
                json_value(writer),
                json_value(txn.xid),
                frozenset(changed),
                change.before,
                change.after,
            )  # what ``change_from_doc`` would read from ``doc``
            ids = self._observe_entity(entity, seen, change, position)
        if ids:
            doc = add_conflict_ids(doc, ids)
        if record is not None:
            doc = with_schema_change(doc, record)
        event = Event(
            self._source,
            txn.txn_key,
            seq,
            event_id,
            change.schema,
            change.table,
            change.op,
            key_json,
            commit_ts,
            doc,
            change.native_form(),
            change=change,
        )
        if record is not None:
            event.carry_schema_change(record)
        return event

    def _txn_texts(self, txn: TxnBegin) -> tuple[str, str]:
        """The transaction's commit time, and its part of an event document, made once per transaction."""
        if self._txn is not txn:
            commit_ts = txn.commit_ts.isoformat(timespec="microseconds")
            self._txn, self._txn_parts = (
                txn,
                (
                    commit_ts,
                    f'"txid":{_dump(txn.xid)},"commit_ts":"{commit_ts}","position":{_dump(txn.position)}',
                ),
            )
        return self._txn_parts

    def _table_json(self, schema: str, table: str) -> str:
        """The source, schema and table of an event document, made once per table."""
        found = self._tables_json.get((schema, table))
        if found is None:
            found = self._tables_json[(schema, table)] = (
                f'"source":{_dump(self._source)},"schema":{_dump(schema)},"table":{_dump(table)}'
            )
        return found

    def _row_gone(self, change: RowChange, old_key: str) -> None:
        """An update moved the row to another primary key: the old key's row is gone."""
        self._store.set_gone(self._source, change.schema, change.table, old_key)
        if self._detector is not None:
            self._detector.row_gone(change.schema, change.table, old_key)
        else:  # keys noted while detection was on must not outlive the row
            self._store.drop_natural_keys(self._source, change.schema, change.table, old_key)

    def _observe_entity(
        self, entity: EntitySettings, seen: Change | None, change: RowChange, position: tuple[str, int]
    ) -> list[str]:
        assert seen is not None
        return self._sync.observe(
            entity, seen, self._recorder.rules(change.schema, change.table), position, self._recorder.record
        )

    def _write_repairs(self, conflicts: list[Conflict], cause: Change | None, key_json: str, version: int) -> None:
        """With ``repair = "write"``, a lost update's merged row goes back into the source."""
        if cause is None:
            return
        for conflict in conflicts:
            row = merged_row(conflict) if conflict.type == "lost_update" and len(conflict.events) == 2 else None
            if row is not None:
                self._sync.repair(self._source, key_json, row, cause, version)


def _writer(change: RowChange, column: str | None) -> object:
    """The writer column's value in the row (its after image, else its before image)."""
    if column is None:
        return None
    image = change.after if change.after is not None else change.before
    return None if image is None else image.get(column)


def _changed(change: RowChange) -> list[str]:
    if change.native_before is not None and change.native_after is not None:
        return changed_columns(change.native_before, change.native_after)
    return changed_columns(change.before, change.after)


def _old_key(change: RowChange) -> dict | None:
    """The key the row had before an update that changed its primary key, else None."""
    if change.op != "update" or change.before is None:
        return None
    old = {column: change.before.get(column) for column in change.key}
    return old if old != change.key else None
