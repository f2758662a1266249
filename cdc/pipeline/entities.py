"""Entities held by several sources (``[[entities]]``): version vectors, divergence, write-back.

Runs in the pipeline's thread, inside the state store transaction of the event it looks at.
A member's new change updates the key's version vector (``cdc.conflicts.vectors``); when it
was made without having seen another member's change, the two versions are a
``divergence`` (a ``duplicate_key`` when both inserted the key), resolved by the entity's
policy. Without ``sync``, another process copies rows between the members, and what a
member has seen is read from the rows' contents instead. With ``sync = true`` the agreed row is then written into the other members (and,
after a divergence, into every member) by one sync target per member source: the rows to
write are the events of the pseudo-source ``sync:<member>``.

Those writes come back on the member's stream as a transaction that starts with a
``WriteBack`` marker: its rows are echoes, stored as the member's events (``"echo": true``)
but never synced again. The marker tells which synced rows the member now holds; if a
member's last synced row is older than the agreed row (a change of its own came in
between), the agreed row is sent to it again, so that every member ends equal.

A sync target's positions (``cdc.sync_positions`` in the member) carry the state store's
identity like every target's: after cdc is set up again with a new state directory, whose
``sync:`` transactions count from 1 again, the earlier installation's positions are taken
as absent (``cdc.targets.base``), and its markers, re-read on a member's stream, mark nothing.

The same sync target writes a single source's repaired rows (a lost update's merged row,
``repair = "write"``) back into it, unless the row changed again in the meantime.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from cdc import event_doc
from cdc.config import EntitySettings, Settings, TargetSettings
from cdc.conflicts.history import change_from_doc
from cdc.conflicts.model import Change, Conflict, TableRules
from cdc.conflicts.resolution import Decision
from cdc.conflicts.rules import SEVERITY
from cdc.conflicts.vectors import EntityRow, Side, differing_fields, observe, resolve
from cdc.model import (
    REVIEW_SOURCE,
    SYNC_POSITION_TABLE,
    Event,
    WriteBack,
    make_event_id,
    sync_source,
)
from cdc.pipeline.plan import Plan, entity_members
from cdc.state.store import NOWHERE, Position, StateStore
from cdc.values import compact_json as _dump
from cdc.values import dumps_row

log = logging.getLogger("cdc.sync")

# (conflict, schema, table, position, decision) -> the stored conflict's id
RecordConflict = Callable[[Conflict, str, str, tuple[str, int], Decision], str]


def written_tables(settings: Settings, source: str) -> list[tuple[str, str]]:
    """The tables of a source that cdc writes into: synced entity members, ``repair = "write"``."""
    found = [
        entity.member_tables[source] for entity in settings.entities if entity.sync and source in entity.member_tables
    ]
    plan = Plan(settings, source)
    found += [
        (schema, table)
        for schema, table in settings.source(source).qualified_tables
        if plan.table(schema, table).repair_write and (schema, table) not in found
    ]
    return found


def sync_targets(settings: Settings) -> dict[str, TargetSettings]:
    """Source name -> the settings of the target that writes synced (or repaired) rows into it."""
    found = {}
    for source in settings.sources:
        if written_tables(settings, source.name):
            found[source.name] = TargetSettings(
                name=source.sync_target_name,
                kind=source.kind,
                dsn=source.dsn,
                password=source.password,
                position_table=SYNC_POSITION_TABLE,
            )
    return found


class EntitySync:
    def __init__(self, settings: Settings, store: StateStore) -> None:
        self._settings = settings
        self._store = store
        self._entities = {entity.name: entity for entity in settings.entities}
        self._members = entity_members(settings)
        self._next_txn: dict[str, int] = {}

    def entity_of(self, source: str, schema: str, table: str) -> EntitySettings | None:
        return self._members.get((source, schema, table))

    # -- a member's own change -------------------------------------------------------

    def observe(
        self,
        entity: EntitySettings,
        change: Change,
        rules: TableRules,
        position: tuple[str, int],
        record: RecordConflict,
    ) -> list[str]:
        """A member's new change (not an echo): the ids of the conflicts it raised."""
        state = EntityRow.from_json(self._store.entity_row(entity.name, change.key))
        if not entity.sync and self._copied(state, change, rules):
            self._store.set_entity_row(entity.name, change.key, state.to_json())
            return []
        outcome = observe(state, change.source)
        state.vector, state.seen[change.source] = outcome.vector, outcome.mine
        if not outcome.concurrent:
            self._agree(state, change.after, change, change.commit_ts.isoformat())
            if entity.sync:
                for member in entity.member_tables:
                    if member != change.source:
                        self._send(entity, member, change.key, state, change)
            self._store.set_entity_row(entity.name, change.key, state.to_json())
            return []
        ids = self._diverged(entity, state, change, rules, outcome.unseen, position, record)
        self._store.set_entity_row(entity.name, change.key, state.to_json())
        return ids

    @staticmethod
    def _copied(state: EntityRow, change: Change, rules: TableRules) -> bool:
        """Without ``sync``, another process copies rows between the members, and their contents
        say what a member has seen: a change that makes the member's row equal to the agreed
        row is that copy (True: nothing new), and one made on a row equal to it was ordered."""
        if state.row is None:
            return False
        if not differing_fields(change.after, state.row, rules.bookkeeping) and change.after is not None:
            state.seen[change.source] = dict(state.vector)
            return change.source != state.row_source
        if change.before is not None and not differing_fields(change.before, state.row, rules.bookkeeping):
            state.seen[change.source] = dict(state.vector)
        return False

    def _diverged(
        self,
        entity: EntitySettings,
        state: EntityRow,
        change: Change,
        rules: TableRules,
        unseen: tuple[str, ...],
        position: tuple[str, int],
        record: RecordConflict,
    ) -> list[str]:
        schema, table = change.table.split(".", 1)
        theirs = Side(state.row_source or unseen[0], state.row, state.row_ts or change.commit_ts.isoformat())
        mine = Side(change.source, change.after, change.commit_ts.isoformat(), base=change.before)
        fields = differing_fields(mine.row, theirs.row, rules.bookkeeping)
        table_settings = self._settings.table_settings(change.source, schema, table)
        policy = entity.policy or (table_settings.policy if table_settings else None) or self._settings.conflicts.policy
        ids: list[str] = []
        if fields:
            earlier = self._event_change(state.row_event)
            kind = "duplicate_key" if change.op == "insert" and state.row is not None else "divergence"
            if policy == "manual":
                decision = Decision("pending", True, {"policy": "manual"})
            else:
                resolved, winner = resolve(policy, mine, theirs, entity.source_priority, entity.owners)
                decision = Decision(
                    "auto_resolved",
                    False,
                    {
                        "policy": policy,
                        "winner": _winner_event(winner, change, earlier),
                        "resolved_row": resolved,
                        "written_to": sorted(entity.member_tables) if entity.sync else [],
                    },
                )
            conflict = Conflict(
                kind,
                SEVERITY[kind],
                change.table,
                change.key,
                tuple(fields),
                (earlier, change) if earlier is not None else (change,),
                "version vectors concurrent: a member changed the entity without having seen another's change",
                {"entity": entity.name, "unseen": list(unseen), "vector": state.vector},
                _explain(entity, change, earlier, theirs, fields, decision),
            )
            ids.append(record(conflict, schema, table, position, decision))
            if decision.hold:
                return ids  # the members keep their rows until a person resolves it
            assert decision.resolution is not None
            row, winner_ts = decision.resolution["resolved_row"], max(mine.commit_ts, theirs.commit_ts)
        else:
            row, winner_ts = change.after, change.commit_ts.isoformat()
        self._agree(state, row, change, winner_ts)
        if entity.sync:
            for member in entity.member_tables:
                self._send(entity, member, change.key, state, change)
        return ids

    def _agree(self, state: EntityRow, row: dict[str, Any] | None, change: Change, commit_ts: str) -> None:
        state.row, state.row_event, state.row_source, state.row_ts = row, change.event_id, change.source, commit_ts

    def _event_change(self, event_id: str | None) -> Change | None:
        doc = self._store.event_doc(event_id) if event_id else None
        if doc is None:
            return None
        data = json.loads(doc)
        return change_from_doc(data, dumps_row(data["key"]))

    def take_reviews(self) -> None:
        """Rows a person resolved (``cdc conflicts resolve``) of entity members become the agreed
        rows, written into every member (call inside ``store.transaction()``)."""
        if not self._members:
            return
        stored = self._store.get_meta("reviews_synced")
        after: Position = tuple(json.loads(stored)) if stored else NOWHERE
        upto = self._store.last_txn(REVIEW_SOURCE)
        while True:
            events = self._store.events_after(REVIEW_SOURCE, after, upto, 1000)
            for event in events:
                doc = json.loads(event.doc)
                entity = self.entity_of(doc["source"], doc["schema"], doc["table"])
                if entity is not None:
                    self._reviewed(entity, doc)
            if not events:
                break
            after = (events[-1].txn_key, events[-1].seq)
            self._store.set_meta("reviews_synced", json.dumps(list(after)))

    def _reviewed(self, entity: EntitySettings, doc: dict[str, Any]) -> None:
        key = dumps_row(doc["key"])
        cause = change_from_doc(doc, key)
        state = EntityRow.from_json(self._store.entity_row(entity.name, key))
        self._agree(state, doc["after"], cause, doc["commit_ts"])
        if entity.sync:
            for member in entity.member_tables:
                self._send(entity, member, key, state, cause)
        self._store.set_entity_row(entity.name, key, state.to_json())

    # -- writing into members ----------------------------------------------------------

    def _send(self, entity: EntitySettings, member: str, key: str, state: EntityRow, cause: Change) -> None:
        """Queue the agreed row for the member's sync target."""
        schema, table = entity.member_tables[member]
        commit_ts = state.row_ts or cause.commit_ts.isoformat()
        self._queue(
            member,
            schema,
            table,
            key,
            state.row,
            commit_ts,
            cause,
            f',"entity":{_dump(entity.name)},"vector":{_dump(state.vector)}',
        )
        state.sent[member] = dict(state.vector)

    def repair(self, source: str, key: str, row: dict[str, Any], cause: Change, version: int) -> None:
        """Queue a single source's repaired row (``repair = "write"``) for its sync target; it is
        skipped if the row changes again before it is written (``stale_repair``)."""
        schema, table = cause.table.split(".", 1)
        self._queue(
            source, schema, table, key, row, cause.commit_ts.isoformat(), cause, f',"repair":{{"version":{version}}}'
        )

    def not_to_write(self, doc: dict[str, Any], held: dict[tuple[str, str, str, str], Any]) -> bool:
        """Whether a queued row must not be written after all: its key waits for a person in a
        member (``held``), or a repair's row changed since it was made (writing would undo that)."""
        key = dumps_row(doc["key"])
        repair = doc.get("repair")
        if repair is not None:
            return self._store.row_version(doc["source"], doc["schema"], doc["table"], key) != repair["version"]
        entity = self.entity_of(doc["source"], doc["schema"], doc["table"])
        return entity is not None and any(
            (member, schema, table, key) in held for member, (schema, table) in entity.member_tables.items()
        )

    def _queue(
        self,
        member: str,
        schema: str,
        table: str,
        key: str,
        row: dict[str, Any] | None,
        commit_ts: str,
        cause: Change,
        extra: str,
    ) -> None:
        """A pseudo-source event with the row to write into the member."""
        pseudo = sync_source(member)
        number = self._next_txn.get(member)
        if number is None:
            last = self._store.last_txn(pseudo)
            number = int(last) if last else 0
        number += 1
        self._next_txn[member] = number
        txn_key = f"{number:020d}"
        event_id = make_event_id(pseudo, txn_key, 0)
        op = "delete" if row is None else "update"
        after = None if row is None else _keyed(row, json.loads(key))
        doc = event_doc.render(
            event_id=event_id,
            source=member,
            schema=schema,
            table=table,
            op=op,
            key=key,
            version=0,
            before=None,
            after=after,
            commit_ts=commit_ts,
            position=txn_key,
            writer=cause.writer,
            extra=f',"cause":{_dump(cause.event_id)}{extra}',
        )
        self._store.append([Event(pseudo, txn_key, 0, event_id, schema, table, op, key, commit_ts, doc, origin=member)])

    # -- echoes ------------------------------------------------------------------------

    def echoed(self, member: str, marker: WriteBack) -> None:
        """The member's stream shows the sync target's write up to the marker's position (not
        one of another installation, re-read from before cdc was set up again: its position
        counts in another store's numbering)."""
        if marker.source != sync_source(member) or not self._store.installation.holds(marker.installation):
            return
        meta_key = f"echoed:{member}"
        stored = self._store.get_meta(meta_key)
        start: Position = tuple(json.loads(stored)) if stored else NOWHERE
        after = start
        upto = (marker.txn_key, marker.seq)
        touched: dict[tuple[str, str], EntityRow] = {}
        while True:
            events = [
                e
                for e in self._store.events_after(sync_source(member), after, marker.txn_key, 1000)
                if (e.txn_key, e.seq) <= upto
            ]
            for event in events:
                doc = json.loads(event.doc)
                if "entity" not in doc:
                    continue  # a single source's repaired row
                cache_key = (doc["entity"], dumps_row(doc["key"]))
                state = touched.get(cache_key) or EntityRow.from_json(self._store.entity_row(*cache_key))
                state.seen[member] = doc["vector"]
                touched[cache_key] = state
            if len(events) < 1000:
                break
            after = (events[-1].txn_key, events[-1].seq)
        for (name, key), state in touched.items():
            held = state.seen.get(member)
            if held == state.sent.get(member) and held != state.vector and state.row_event is not None:
                # the member took in a change of its own after the last row sent to it
                entity = self._entities[name]
                cause = self._event_change(state.row_event)
                if cause is not None:
                    self._send(entity, member, key, state, cause)
            self._store.set_entity_row(name, key, state.to_json())
        if upto > start:
            self._store.set_meta(meta_key, json.dumps(list(upto)))


def _keyed(row: dict[str, Any], key: dict[str, Any]) -> dict[str, Any]:
    """The row with the entity key's values (the same key whichever member's form it came in)."""
    return {**row, **{name: value for name, value in key.items() if name in row}}


def _winner_event(winner: str, change: Change, earlier: Change | None) -> str:
    if winner == change.source:
        return change.event_id
    if earlier is not None and winner == earlier.source:
        return earlier.event_id
    return winner  # "merged"


def _explain(
    entity: EntitySettings, change: Change, earlier: Change | None, theirs: Side, fields: list[str], decision: Decision
) -> str:
    def who(c: Change | None, source: str) -> str:
        if c is None:
            return source
        return f"{c.writer or 'transaction ' + str(c.txid)} in {c.source} at {c.commit_ts.strftime('%H:%M:%S')}"

    def changed(row: dict[str, Any] | None) -> str:
        if change.before is None or row is None:
            return "the row"
        names = [f for f in fields if f in differing_fields(change.before, row, frozenset())]
        return ", ".join(names) or "nothing new"

    text = (
        f"{entity.name} {change.key}: {who(earlier, theirs.source)} changed {changed(theirs.row)} and "
        f"{who(change, change.source)} changed {changed(change.after)}, neither having seen the other's change"
    )
    resolution = decision.resolution or {}
    if decision.hold:
        return text + "; held for review"
    winner = resolution.get("winner")
    kept = "merged both" if winner == "merged" else f"kept {winner} ({resolution.get('policy')})"
    return f"{text}; {kept}"
