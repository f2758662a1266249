"""Schema changes: a table's columns as its source describes them, against those recorded.

A source describes a captured table's columns before the changes that use them
(``TableShape``: pgoutput's Relation message, the binlog's table map), and again after every
reconnection. The first description of a table is recorded as it is. A later one that
differs is a schema change: the table's next event carries a ``schema_change`` record (the
contract's form, plus the columns added, dropped and retyped), recorded in the same state
store transaction as that event, so that a restart neither loses nor repeats it. The detector
then stops comparing the reshaped columns of rows last seen before the change (a DDL is no
``stream_gap``), and a DDL that changed existing rows without row events (``rewrites``) asks
for the table to be read again (``[pipeline] backfill_after_ddl``).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from cdc.config import Settings
from cdc.conflicts.detector import Detector
from cdc.model import SCHEMA_CHANGE_KEY, RowChange, TableShape, TxnBegin
from cdc.state.store import StateStore, TableShapeRecord
from cdc.values import compact_json

log = logging.getLogger("cdc.pipeline")

REREAD_PREFIX = "reread:"  # meta key prefix of a table waiting to be read again: reread:<source>:<schema>.<table>


def reread_key(source: str, schema: str, table: str) -> str:
    return f"{REREAD_PREFIX}{source}:{schema}.{table}"


class TableShapes:
    """The recorded columns of one source's tables, and the schema changes pending for them."""

    def __init__(self, settings: Settings, store: StateStore, source: str, detector: Detector | None) -> None:
        self._store = store
        self._source = source
        self._detector = detector
        self._kind = next((s.kind for s in settings.sources if s.name == source), "")
        self._reread = settings.pipeline.backfill_after_ddl
        self._recorded: dict[tuple[str, str], TableShapeRecord] | None = None
        self.pending: dict[tuple[str, str], TableShape] = {}  # described, not yet carried by an event

    def described(self, shape: TableShape) -> None:
        table = (shape.schema, shape.table)
        recorded = self._known().get(table)
        if recorded is not None and recorded.columns_json == _columns_json(shape):
            self.pending.pop(table, None)
        else:
            self.pending[table] = shape

    def record(self, txn: TxnBegin, change: RowChange, commit_ts: str) -> dict[str, Any] | None:
        """The ``schema_change`` record the event of ``change`` carries (None: none), recorded
        with it (call inside the event's ``store.transaction()``)."""
        table = (change.schema, change.table)
        shape = self.pending.pop(table, None)
        if shape is None:
            return None
        columns = [{"name": column.name, "type": column.type} for column in shape.columns]
        known = self._known().get(table)
        if known is None:  # the first description of the table: nothing to compare it with
            self._keep(table, TableShapeRecord(compact_json(columns)))
            return None
        old = {column["name"]: column["type"] for column in json.loads(known.columns_json)}
        new = {column.name: column.type for column in shape.columns}
        added = [name for name in new if name not in old]
        dropped = [name for name in old if name not in new]
        retyped = [name for name in new if name in old and old[name] != new[name]]
        reshaped = (*added, *dropped, *retyped)
        self._keep(table, TableShapeRecord(compact_json(columns), reshaped, commit_ts))
        if self._detector is not None:
            self._detector.reshaped(change.schema, change.table, frozenset(reshaped), txn.commit_ts)
        reread = self._reread and rewrites_rows(shape, added, dropped, [(old[n], new[n]) for n in retyped])
        log.info(
            "schema change of %s.%s at %s: added %s, dropped %s, retyped %s%s",
            change.schema,
            change.table,
            txn.position,
            added or "none",
            dropped or "none",
            retyped or "none",
            "; it changed existing rows, so the table is read again" if reread else "",
            extra={"source": self._source, "position": txn.position},
        )
        if reread:
            self._store.set_meta(
                reread_key(self._source, change.schema, change.table),
                json.dumps({"position": txn.position, "commit_ts": commit_ts, "columns": [*added, *retyped]}),
            )
        return {
            "op": SCHEMA_CHANGE_KEY,
            "source": self._source,
            "schema": change.schema,
            "table": change.table,
            "columns": columns,
            "position": txn.position,
            "commit_ts": commit_ts,
            "added": added,
            "dropped": dropped,
            "retyped": retyped,
            "source_kind": self._kind,
        }

    def _known(self) -> dict[tuple[str, str], TableShapeRecord]:
        if self._recorded is None:
            self._recorded = self._store.table_shapes(self._source)
        return self._recorded

    def _keep(self, table: tuple[str, str], record: TableShapeRecord) -> None:
        # (a failed store transaction ends the pipeline, whose successor reads the store afresh)
        self._store.set_table_shape(self._source, *table, record)
        self._known()[table] = record


def rewrites_rows(shape: TableShape, added: list[str], dropped: list[str], retyped: list[tuple[str, str]]) -> bool:
    """Whether a schema change left existing rows with values no row event gave: the source
    says so, an added column is filled (a default), a column was renamed (as cdc sees it, one
    column dropped and one added at once), or a type changed other than by widening."""
    if shape.rewrites or shape.filled.intersection(added) or (added and dropped):
        return True
    return any(not widening(old, new) for old, new in retyped)


_SIZED = re.compile(r"^(character varying|varchar|varbinary|bit varying|varbit)\((\d+)\)$", re.IGNORECASE)
_NUMERIC = re.compile(r"^(numeric|decimal)\((\d+),\s*(\d+)\)$", re.IGNORECASE)


def widening(old: str, new: str) -> bool:
    """Whether a column's type change keeps every value as it was: a longer varchar,
    varbinary or bit varying, a numeric with more digits and the same scale, no length limit."""
    old, new = old.strip(), new.strip()
    sized_old, sized_new = _SIZED.match(old), _SIZED.match(new)
    if sized_old and sized_new:
        return sized_old[1].lower() == sized_new[1].lower() and int(sized_new[2]) >= int(sized_old[2])
    if (
        sized_old
        and new.lower() in ("character varying", "text")
        and sized_old[1].lower() in ("character varying", "varchar")
    ):
        return True
    numeric_old, numeric_new = _NUMERIC.match(old), _NUMERIC.match(new)
    if numeric_old and numeric_new:
        return (
            numeric_old[1].lower() == numeric_new[1].lower()
            and numeric_new[3] == numeric_old[3]
            and int(numeric_new[2]) >= int(numeric_old[2])
        )
    return False


def with_schema_change(doc: str, record: dict[str, Any]) -> str:
    """An event document with the ``schema_change`` record it carries, before its ``conflicts``."""
    at = doc.rindex(',"conflicts":[')
    return f'{doc[:at]},"{SCHEMA_CHANGE_KEY}":{compact_json(record)}{doc[at:]}'


def _columns_json(shape: TableShape) -> str:
    return compact_json([{"name": column.name, "type": column.type} for column in shape.columns])
