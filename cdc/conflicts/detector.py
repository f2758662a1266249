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
from collections import OrderedDict
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, Callable, Iterable

from cdc.config import Settings
from cdc.conflicts.model import Change, Conflict, TableRules
from cdc.conflicts.resolution import Decision, decide, policy_for
from cdc.conflicts.rules import detect, duplicate_natural_key, natural_key_values
from cdc.model import RowChange
from cdc.state.store import StateStore
from cdc.values import json_value, key_text

log = logging.getLogger("cdc.conflicts")
HISTORY_LIMIT = 50  # changes of one row the rules look at
HISTORY_CACHE_ROWS = 10_000  # rows whose recent history stays in memory


class Detector:
    def __init__(self, settings: Settings, store: StateStore, source: str,
                 on_conflict: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._on_conflict = on_conflict
        self._settings = settings
        self._store = store
        self._source = source
        self._window = timedelta(seconds=settings.conflicts.window_seconds)
        self._rules: dict[tuple[str, str], TableRules] = {}
        self._history: OrderedDict[tuple[str, str, str], list[Change]] = OrderedDict()
        self._members: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        self.last_change: Change | None = None  # the change the last ``check`` or ``observe`` saw

    def rules(self, schema: str, table: str) -> TableRules:
        found = self._rules.get((schema, table))
        if found is None:
            t = self._settings.table_settings(self._source, schema, table)
            found = self._rules[(schema, table)] = TableRules() if t is None else TableRules(
                version_column=t.version_column, writer_column=t.writer_column,
                ignore_columns=frozenset(t.ignore_columns), natural_keys=tuple(tuple(k) for k in t.natural_keys),
                status_column=t.status_column, status_order=tuple(t.status_order))
        return found

    def _entity_members(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        """The tables of the same entity in other sources (a natural key belongs to the entity,
        whichever source holds it)."""
        found = self._members.get((schema, table))
        if found is None:
            entity = self._settings.entity_of(self._source, schema, table)
            others = [] if entity is None else [(source, *member) for source, member in entity.member_tables.items()
                                                if source != self._source]
            found = self._members[(schema, table)] = others
        return found

    def check(self, row: RowChange, event_id: str, key: str, before: str, after: str, commit_ts: datetime,
              writer: Any, txid: str | None, changed: list[str],
              was_live: bool | None = None, rules_apply: bool = True) -> list[Conflict]:
        """The conflicts a new event (not stored yet) raises, and its natural keys noted.

        The event is given by the parts the versioner writes into its document, so that the
        rules see what the document says without parsing it again: ``key``, ``before`` and
        ``after`` as JSON text, ``commit_ts`` the transaction's, ``writer`` as the image holds it;
        ``was_live`` whether the row existed before (None: never seen). Without
        ``rules_apply`` (an echo of cdc's own write, a snapshot row) the change is only noted:
        it is the history the next change is compared with.
        """
        if row.op not in ("insert", "update", "delete", "snapshot"):
            return []
        schema, table = row.schema, row.table
        rules = self.rules(schema, table)
        history = self._row_history(schema, table, key, seen=was_live is not None)
        previous = history[-1] if history else None
        if previous is not None and before == previous.after_text:
            before = previous.after_text  # one string for both
            previous.after_is(row.before)  # the same image: read it where it is fresh
        writer = json_value(writer)
        change = Change.of_texts(event_id, self._source, f"{schema}.{table}", key, row.op, before, after, commit_ts,
                                 sys.intern(writer) if type(writer) is str else writer, json_value(txid),
                                 _column_set(tuple(changed)), row.before, row.after)
        self.last_change = change
        found = detect(change, previous, history, rules, self._window, live=bool(was_live)) if rules_apply else []
        if rules.natural_keys and _natural_keys_touched(change, row, rules):
            duplicates = self._natural_key_duplicates(change, row, rules, key, new_row=was_live is None)
            if rules_apply:
                found += duplicates
        if previous is not None:
            previous.keep_texts_only()
        change.keep_texts_only()  # memory keeps few objects per change: they stay long, and scattered
        history.append(change)
        while len(history) > HISTORY_LIMIT or (len(history) > 1 and
                                               change.commit_ts - history[0].commit_ts > self._window):
            del history[0]  # only the window matters, and the last change (kept however old)
        return found

    @property
    def changes_in_memory(self) -> int:
        """How many changes the rows' histories hold (bounded by the window and the cache)."""
        return sum(len(history) for history in self._history.values())

    def forget_table(self, schema: str, table: str) -> None:
        """The table was truncated."""
        for cached in [k for k in self._history if k[0] == schema and k[1] == table]:
            del self._history[cached]

    def _row_history(self, schema: str, table: str, key: str, seen: bool) -> list[Change]:
        """The row's latest changes, oldest first: from memory, else from the event log (a row
        never ``seen`` has none)."""
        cache_key = (schema, table, key)
        history = self._history.get(cache_key)
        if history is not None:
            self._history.move_to_end(cache_key)
            return history
        history = [] if not seen else [change_from_doc(json.loads(d), key) for d in
                                       self._store.row_history(self._source, schema, table, key, HISTORY_LIMIT)]
        self._history[cache_key] = history
        if len(self._history) > HISTORY_CACHE_ROWS:
            self._history.popitem(last=False)
        return history

    def _natural_key_duplicates(self, change: Change, row: RowChange, rules: TableRules, key: str,
                                new_row: bool) -> list[Conflict]:
        """Note the row's natural keys; a conflict for each that another live row of the entity holds."""
        schema, table = row.schema, row.table
        held = natural_key_values(_json_form(row.after, rules.natural_key_columns), rules)
        encoded = [(_names_json(names), _values_json(values)) for names, values in held]
        owners = self._store.hold_natural_keys(self._source, schema, table, key, change.event_id, encoded,
                                               new_row=new_row)
        found = []
        for (names, values), (names_json, values_json), owner in zip(held, encoded, owners):
            members = iter(self._entity_members(schema, table))
            while owner is None and (member := next(members, None)) is not None:
                owner = self._store.natural_key_owner(*member, names_json, values_json, key)
            if owner is not None:
                owner_doc = json.loads(owner)
                owner_change = change_from_doc(owner_doc, key_text(owner_doc["key"]))
                found.append(duplicate_natural_key(change, owner_change, names, values))
        return found

    def record(self, conflict: Conflict, schema: str, table: str, position: tuple[str, int],
               decision: Decision | None = None) -> str:
        """Store a conflict (inside the event's transaction), decide it by policy unless
        ``decision`` is given, log it; its id."""
        last = conflict.events[-1]
        conflict_id = f"{conflict.type}:{last.event_id}"
        if decision is None:
            settings = self._settings.table_settings(self._source, schema, table)
            policy = policy_for(conflict, settings.policy if settings else None,
                                settings.field_policies if settings else {}, self._settings.conflicts.policy)
            decision = decide(conflict, policy, settings.repair if settings else "off")
        self._store.add_conflict(conflict_id, self._source, conflict, decision.status, decision.resolution)
        if decision.hold:
            self._store.hold(self._source, schema, table, conflict.key, conflict_id, position)
        if conflict.severity != "info":
            log.warning("%s conflict: %s", conflict.type, conflict.explanation,
                        extra={"conflict": conflict_id, "source": self._source, "severity": conflict.severity,
                               "status": decision.status})
        if self._on_conflict is not None:
            self._on_conflict(self._store.conflicts(conflict_id=conflict_id)[0])
        return conflict_id


def _natural_keys_touched(change: Change, row: RowChange, rules: TableRules) -> bool:
    """Whether the change may alter the row's natural keys (updates of other columns do not);
    the row's key columns count too (a moved row)."""
    if change.op != "update" or row.before is None or row.after is None:
        return True
    changed, present, key = change.changed, row.after.keys(), row.key.keys()
    return (not changed.isdisjoint(rules.natural_key_columns) or not changed.isdisjoint(key)
            or not (present >= rules.natural_key_columns and present >= key))


_dumps_default_str = json.JSONEncoder(default=str).encode


@functools.lru_cache(maxsize=1024)
def _column_set(columns: tuple[str, ...]) -> frozenset[str]:
    """One shared set for each list of changed columns (there are few: fewer objects to keep)."""
    return frozenset(columns)


@functools.lru_cache(maxsize=256)
def _names_json(names: tuple[str, ...]) -> str:
    return json.dumps(list(names))


def _values_json(values: tuple[Any, ...]) -> str:
    """``json.dumps(values, default=str)``, the form the state store keeps natural key values in."""
    if all(type(value) is str for value in values):  # the same text, without starting an encoder
        return "[" + ", ".join(map(encode_basestring_ascii, values)) + "]"
    return _dumps_default_str(values)


def _json_form(image: dict[str, Any] | None, columns: Iterable[str]) -> dict[str, Any] | None:
    """The ``columns`` of a row image as the event document holds them."""
    return None if image is None else {c: json_value(image.get(c)) for c in columns}


def change_from_doc(doc: dict[str, Any], key: str) -> Change:
    return Change(doc["event_id"], doc["source"], f"{doc['schema']}.{doc['table']}", key, doc["op"], doc["before"],
                  doc["after"], datetime.fromisoformat(doc["commit_ts"]), doc["writer"], doc["txid"],
                  frozenset(doc["changed"]))
