"""The detector: runs the rules on each new event against the row's history in the state store.

It works inside the state store transaction that stores the event, so an event and the
conflicts it raised are stored together (and, after a crash, re-detected identically:
conflict ids are made of the type and the event id). Every conflict of severity warning
or higher is logged at once with its explanation.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any, Callable

from cdc.config import Settings
from cdc.conflicts.model import Change, Conflict, TableRules
from cdc.conflicts.resolution import decide, policy_for
from cdc.conflicts.rules import detect, duplicate_natural_key, natural_key_values
from cdc.state.store import StateStore

log = logging.getLogger("cdc.conflicts")
HISTORY_LIMIT = 50


class Detector:
    def __init__(self, settings: Settings, store: StateStore, source: str,
                 on_conflict: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._on_conflict = on_conflict
        self._settings = settings
        self._store = store
        self._source = source
        self._window = timedelta(seconds=settings.conflicts.window_seconds)
        self._rules: dict[tuple[str, str], TableRules] = {}

    def rules(self, schema: str, table: str) -> TableRules:
        found = self._rules.get((schema, table))
        if found is None:
            t = self._settings.table_settings(self._source, schema, table)
            found = self._rules[(schema, table)] = TableRules() if t is None else TableRules(
                version_column=t.version_column, writer_column=t.writer_column,
                ignore_columns=frozenset(t.ignore_columns), natural_keys=tuple(tuple(k) for k in t.natural_keys),
                status_column=t.status_column, status_order=tuple(t.status_order))
        return found

    def check(self, doc: dict[str, Any], key: str, was_live: bool | None = None) -> list[Conflict]:
        """The conflicts the event ``doc`` (not stored yet) raises, and its natural keys noted.

        ``key`` is the key's JSON text as the event log stores it.
        """
        if doc["op"] not in ("insert", "update", "delete"):
            return []
        change = change_from_doc(doc, key)
        schema, table = doc["schema"], doc["table"]
        rules = self.rules(schema, table)
        history = [change_from_doc(json.loads(d), key)
                   for d in self._store.row_history(self._source, schema, table, key, HISTORY_LIMIT)]
        previous = history[-1] if history else None
        found = detect(change, previous, history, rules, self._window, live=bool(was_live))
        if rules.natural_keys:
            natural = [(json.dumps(list(names)), json.dumps(values, default=str))
                       for names, values in natural_key_values(change, rules)]
            for (names, values), (names_json, values_json) in zip(natural_key_values(change, rules), natural):
                owner = self._store.natural_key_owner(self._source, schema, table, names_json, values_json, key)
                if owner is not None:
                    owner_doc = json.loads(owner)
                    owner_change = change_from_doc(owner_doc, _key_text(owner_doc["key"]))
                    found.append(duplicate_natural_key(change, owner_change, names, values))
            self._store.set_natural_keys(self._source, schema, table, key, change.event_id, natural)
        return found

    def record(self, conflict: Conflict, schema: str, table: str, position: tuple[str, int]) -> str:
        """Store a conflict (inside the event's transaction), decide it by policy, log it; its id."""
        last = conflict.events[-1]
        conflict_id = f"{conflict.type}:{last.event_id}"
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


def _key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, ensure_ascii=False, separators=(",", ":"))


def change_from_doc(doc: dict[str, Any], key: str) -> Change:
    return Change(doc["event_id"], doc["source"], f"{doc['schema']}.{doc['table']}", key, doc["op"], doc["before"],
                  doc["after"], datetime.fromisoformat(doc["commit_ts"]), doc["writer"], doc["txid"])
