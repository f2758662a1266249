"""The detector: runs the rules on each new event against the row's history in the state store.

It works inside the state store transaction that stores the event, so an event and the
conflicts it raised are stored together (and, after a crash, re-detected identically:
conflict ids are made of the type and the event id). Every conflict of severity warning
or higher is logged at once with its explanation.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, cast

from cdc.config import Settings
from cdc.conflicts.history import HISTORY_LIMIT, RowHistories, change_from_doc
from cdc.conflicts.model import Change, Conflict, TableRules
from cdc.conflicts.natural_keys import (
    HeldKey,
    NaturalKeyBatch,
    Owner,
    StoredHolder,
    existing_row_change,
    held_key,
    is_existing_holder,
)
from cdc.conflicts.resolution import Decision, decide, policy_for
from cdc.conflicts.rules import detect, duplicate_natural_key, natural_key_of
from cdc.model import RowChange
from cdc.state.store import StateStore
from cdc.values import json_value, key_text

log = logging.getLogger("cdc.conflicts")


class Detector:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        source: str,
        on_conflict: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._on_conflict = on_conflict
        self._settings = settings
        self._store = store
        self._source = source
        self._window = timedelta(seconds=settings.conflicts.window_seconds)
        self._rows = RowHistories(store, source)
        self._members: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        # rules, "schema.table" (one string for all its changes), and each natural key with its names' JSON
        self._tables: dict[tuple[str, str], tuple[TableRules, str, tuple[tuple[tuple[str, ...], str], ...]]] = {}
        self.last_change: Change | None = None  # the change the last ``check`` or ``observe`` saw
        self._batch = NaturalKeyBatch()
        self._batch_transaction = -1  # the state store transaction ``_batch`` belongs to
        # (schema, table) -> the position of the read of its rows that existed before cdc (see ``_reported``)
        self._seeded_at = {table: seeded["position"] for table, seeded in store.seeded_natural_keys(source).items()}
        # (schema, table) -> the columns its last schema change touched, and when it was committed
        self._reshaped = {
            table: (frozenset(shape.reshaped), datetime.fromisoformat(shape.reshaped_at))
            for table, shape in store.table_shapes(source).items()
            if shape.reshaped
        }

    def reshaped(self, schema: str, table: str, columns: frozenset[str], at: datetime) -> None:
        """A schema change of the table touched ``columns``: a row last seen before it is not
        compared on them (its recorded image predates the change)."""
        self._reshaped[(schema, table)] = (columns, at)

    def rules(self, schema: str, table: str) -> TableRules:
        return (self._tables.get((schema, table)) or self._table(schema, table))[0]

    def _table(self, schema: str, table: str) -> tuple[TableRules, str, tuple[tuple[tuple[str, ...], str], ...]]:
        """The table's rules, its "schema.table" name and its natural keys (see ``_tables``), kept."""
        t = self._settings.table_settings(self._source, schema, table)
        rules = (
            TableRules()
            if t is None
            else TableRules(
                version_column=t.version_column,
                writer_column=t.writer_column,
                ignore_columns=frozenset(t.ignore_columns),
                natural_keys=tuple(tuple(k) for k in t.natural_keys),
                status_column=t.status_column,
                status_order=tuple(t.status_order),
            )
        )
        found = self._tables[(schema, table)] = (
            rules,
            f"{schema}.{table}",
            tuple((names, json.dumps(list(names))) for names in rules.natural_keys),
        )
        return found

    def _entity_members(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        """The tables of the same entity in other sources (a natural key belongs to the entity,
        whichever source holds it)."""
        found = self._members.get((schema, table))
        if found is None:
            entity = self._settings.entity_of(self._source, schema, table)
            others = (
                []
                if entity is None
                else [(source, *member) for source, member in entity.member_tables.items() if source != self._source]
            )
            found = self._members[(schema, table)] = others
        return found

    def check(
        self,
        row: RowChange,
        event_id: str,
        key: str,
        before: str,
        after: str,
        commit_ts: datetime,
        writer: Any,
        txid: str | None,
        changed: list[str],
        position: tuple[str, int],
        was_live: bool | None = None,
        rules_apply: bool = True,
    ) -> list[Conflict]:
        """The conflicts a new event (not stored yet) raises, its natural keys noted.

        The event is given by the parts the versioner writes into its document, so that the
        rules see what the document says without parsing it again: ``key``, ``before`` and
        ``after`` as JSON text, ``commit_ts`` the transaction's, ``writer`` as the image holds it,
        ``position`` the event's; ``was_live`` whether the row existed before (None: never
        seen). Without ``rules_apply`` (an echo of cdc's own write, a snapshot row) the change
        is only noted: it is the history the next change is compared with.

        A natural key another row holds is found when the state store transaction is about
        to commit (``settle_natural_keys``): its ``duplicate_key`` conflict is recorded then,
        and added to the stored event.
        """
        if row.op not in ("insert", "update", "delete", "snapshot"):
            return []
        schema, table = row.schema, row.table
        rules, qualified, natural_keys = self._tables.get((schema, table)) or self._table(schema, table)
        previous = None if was_live is None else self._rows.last_change(qualified, schema, table, key)
        if previous is not None and before == previous.after_text:
            before = previous.after_text  # one string for both
            previous.after_is(row.before)  # the same image: read it where it is fresh
        writer = sys.intern(writer) if type(writer) is str else json_value(writer)  # few writers, many changes
        change = Change.of_texts(
            event_id,
            self._source,
            qualified,
            key,
            row.op,
            before,
            after,
            commit_ts,
            writer,
            txid if type(txid) is str else json_value(txid),
            _column_set(tuple(changed)),
            row.before,
            row.after,
        )
        self.last_change = change
        found = []
        if rules_apply and (previous is not None or row.op != "insert"):  # (a new row has nothing to compare with)
            recent = () if previous is None else (*previous.earlier, previous)
            reshaped = self._reshaped.get((schema, table)) if self._reshaped else None
            unseen = reshaped[0] if reshaped and previous is not None and previous.commit_ts < reshaped[1] else None
            found = detect(change, previous, recent, rules, self._window, live=bool(was_live), unseen=unseen)
        if natural_keys and (row.op != "update" or _natural_keys_touched(change, row, rules)):
            self._note_natural_keys(change, row, natural_keys, position, new_row=was_live is None, report=rules_apply)
        if previous is not None:
            previous.keep_texts_only()
            if previous.earlier or previous.op == "update":  # (else the row has no update to keep)
                change.earlier = self._still_read(change, previous)
        change.keep_texts_only()  # memory keeps few objects per change: they stay long, and scattered
        self._rows.remember(qualified, key, change)
        return found

    def _still_read(self, change: Change, previous: Change) -> tuple[Change, ...]:
        """The row's updates before ``change`` that rules may read with a later change: those
        within the window (at most ``HISTORY_LIMIT``, with the last change); rules read no other
        change than an update once a later one came."""
        earlier = (*previous.earlier, previous) if previous.op == "update" else previous.earlier
        since = change.commit_ts - self._window
        if earlier and (earlier[0].commit_ts < since or len(earlier) >= HISTORY_LIMIT):
            earlier = tuple([e for e in earlier if e.commit_ts >= since][-(HISTORY_LIMIT - 1) :])
        return earlier

    @property
    def changes_in_memory(self) -> int:
        """How many changes the rows' histories hold (bounded by the window and the cache)."""
        return self._rows.changes_in_memory

    def forget_table(self, schema: str, table: str) -> None:
        """The table is being truncated (call before its rows are forgotten in the state store)."""
        self.settle_natural_keys()
        self._rows.forget_table(f"{schema}.{table}")

    def read_ahead(self, rows: list[tuple[str, str, str]]) -> None:
        """Read at once the history of the rows of a batch ((schema, table, key), rows seen before)
        that memory does not hold, instead of one query per change."""
        self._rows.read_ahead(rows)

    def row_gone(self, schema: str, table: str, key: str) -> None:
        """The row left its key (an update changed its primary key): its natural keys go."""
        self._natural_key_batch().drop((schema, table), key)

    def _note_natural_keys(
        self,
        change: Change,
        row: RowChange,
        natural_keys: tuple[tuple[tuple[str, ...], str], ...],
        position: tuple[str, int],
        new_row: bool,
        report: bool,
    ) -> None:
        """The row's natural keys (each with its names' JSON) are now those of ``row.after`` (none after a delete)."""
        batch = self._natural_key_batch()
        schema, table, key, after = row.schema, row.table, change.key, row.after
        if not new_row:
            batch.drop((schema, table), key)
        if after is not None:
            for names, names_json in natural_keys:
                values = natural_key_of(after, names, json_value)
                if values is not None:
                    batch.hold(
                        held_key(
                            (
                                (schema, table, names_json, _values_json(values), key, change.event_id),
                                names,
                                values,
                                change,
                                position,
                                report,
                            )
                        )
                    )

    def _natural_key_batch(self) -> NaturalKeyBatch:
        """The natural keys noted in the open state store transaction, settled before it commits."""
        if self._batch_transaction != self._store.transaction_serial:
            self._batch, self._batch_transaction = NaturalKeyBatch(), self._store.transaction_serial
            self._store.before_commit(self.settle_natural_keys)
        return self._batch

    def settle_natural_keys(self) -> None:
        """Store the natural keys noted so far, and record a ``duplicate_key`` conflict for each
        that another live row of the entity holds (inside the transaction that stored the events)."""
        batch, self._batch = self._batch, NaturalKeyBatch()
        if not batch or self._batch_transaction != self._store.transaction_serial:
            return  # nothing noted, or only in a transaction rolled back
        stored = {}
        for ((schema, table), names), values in batch.lookups().items():
            for vals, holders in self._store.natural_key_holders(self._source, schema, table, names, values).items():
                stored[((schema, table), names, vals)] = [StoredHolder(*holder) for holder in holders]
        settled = batch.settle(stored)
        owned = [(held, self._owner_change(owner, held)) for held, owner in settled.owned if self._reported(held)]
        if self._settings.entities:
            owned += self._owners_in_other_sources([held for held in settled.unowned if self._reported(held)])
        added: dict[str, list[str]] = {}
        for held, owner in sorted(owned, key=lambda found: found[0].position):
            if owner is not None:
                conflict = duplicate_natural_key(held.change, owner, held.names, held.values)
                added.setdefault(held.change.event_id, []).append(self.record(conflict, *held.table, held.position))
        self._store.write_natural_keys(
            self._source, [(*table, key) for table, key in settled.dropped_rows], settled.kept
        )
        for event_id, conflict_ids in added.items():
            self._store.add_event_conflicts(event_id, conflict_ids)

    def _owners_in_other_sources(self, unowned: list[HeldKey]) -> list[tuple[HeldKey, Change | None]]:
        """For keys no other row of their table holds, the change of a row holding them in the
        entity's tables in other sources, if any."""
        found: list[tuple[HeldKey, Change | None]] = []
        for table, names in {(held.table, held.names_json) for held in unowned}:
            waiting = [held for held in unowned if held.table == table and held.names_json == names]
            for member in self._entity_members(*table):
                holders = self._store.natural_key_holders(*member, names, [held.values_json for held in waiting])
                still = []
                for held in waiting:
                    other = next((h for h in holders.get(held.values_json, ()) if h[0] != held.key), None)
                    owner = None if other is None else self._owner_change(StoredHolder(*other), held, member)
                    if owner is None:
                        still.append(held)
                    else:
                        found.append((held, owner))
                waiting = still
        return found

    def _reported(self, held: HeldKey) -> bool:
        """Whether a key another row holds is a conflict: not for changes only noted, nor for
        changes before the read of the table's existing rows (that read saw them, and reported
        the duplicates among them as existing rows)."""
        return held.report and held.position[0] >= self._seeded_at.get(held.table, "")

    def _owner_change(self, owner: Owner, held: HeldKey, member: tuple[str, str, str] | None = None) -> Change | None:
        """The change that gave the owner (of ``held``'s key, in ``member``, a table of another
        source, if given) its key (None: its event is gone from the log)."""
        if type(owner) is HeldKey:
            return owner.change
        stored = cast(StoredHolder, owner)
        if is_existing_holder(stored.event_id):
            source, schema, table = member or (self._source, *held.table)
            return existing_row_change(source, (schema, table), stored.key, held.names, held.values, stored.event_id)
        doc = self._store.event_doc(stored.event_id)
        if doc is None:
            return None
        owner_doc = json.loads(doc)
        return change_from_doc(owner_doc, key_text(owner_doc["key"]))

    def record(
        self,
        conflict: Conflict,
        schema: str,
        table: str,
        position: tuple[str, int],
        decision: Decision | None = None,
        hold: bool = True,
    ) -> str:
        """Store a conflict (inside the event's transaction), decide it by policy unless
        ``decision`` is given, log it; its id. Without ``hold`` its key is never held (no change waits on it)."""
        last = conflict.events[-1]
        conflict_id = f"{conflict.type}:{last.event_id}"
        if decision is None:
            settings = self._settings.table_settings(self._source, schema, table)
            policy = policy_for(
                conflict,
                settings.policy if settings else None,
                settings.field_policies if settings else {},
                self._settings.conflicts.policy,
            )
            decision = decide(conflict, policy, settings.repair if settings else "off")
        self._store.add_conflict(conflict_id, self._source, conflict, decision.status, decision.resolution)
        if decision.hold and hold:
            self._store.hold(self._source, schema, table, conflict.key, conflict_id, position)
        if conflict.severity != "info":
            log.warning(
                "%s conflict: %s",
                conflict.type,
                conflict.explanation,
                extra={
                    "conflict": conflict_id,
                    "source": self._source,
                    "severity": conflict.severity,
                    "status": decision.status,
                },
            )
        if self._on_conflict is not None:
            self._on_conflict(self._store.conflicts(conflict_id=conflict_id)[0])
        return conflict_id


def _natural_keys_touched(change: Change, row: RowChange, rules: TableRules) -> bool:
    """Whether an update may alter the row's natural keys (updates of other columns do not);
    the row's key columns count too (a moved row)."""
    if row.before is None or row.after is None:
        return True
    changed, present, key = change.changed, row.after.keys(), row.key.keys()
    return (
        not changed.isdisjoint(rules.natural_key_columns)
        or not changed.isdisjoint(key)
        or not (present >= rules.natural_key_columns and present >= key)
    )


_dumps_default_str = json.JSONEncoder(default=str).encode


@functools.lru_cache(maxsize=1024)
def _column_set(columns: tuple[str, ...]) -> frozenset[str]:
    """One shared set for each list of changed columns (there are few: fewer objects to keep)."""
    return frozenset(columns)


def _values_json(values: tuple[Any, ...]) -> str:
    """``json.dumps(values, default=str)``, the form the state store keeps natural key values in."""
    if len(values) == 1 and type(values[0]) is str:  # the usual case: the same text, without starting an encoder
        return f"[{encode_basestring_ascii(values[0])}]"
    return _dumps_default_str(values)
