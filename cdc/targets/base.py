"""What every target provides: apply versioned events idempotently and remember the last applied position.

A target's ``position(source)`` is the last ``(txn_key, seq)`` it holds for that source;
``apply`` writes a batch and that batch's last position atomically, so that after a crash
the pipeline resumes each target exactly after what it holds.

A database target keeps with each position the identity of the state store that wrote it
(the column ``installation``, ``cdc.state.identity``). A position of another installation
(the state directory deleted and cdc set up again) counts as absent, with a warning: the
target applies that stream again from this store's first event, upserts and deletes by key
that are safe to repeat, instead of skipping the new store's events, whose numbering
starts again. Refusing to start would lose nothing either, but would need a person for a
step that cdc can take safely on its own.

A database target follows its sources' schema changes (``[[targets]] schema_changes``): a
source column its table lacks, named by an event's ``schema_change`` record or found in a
row to write, stops the target with the ``ALTER TABLE`` to run (``stop``), is added with the
type ``cdc.targets.type_mapping`` chooses (``add_columns``), or is left out of every write
(``ignore``). The types come from the record, else from the columns the state store last
recorded for the source table, else the column becomes text. A column dropped in the source
stays in the target and is no longer written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from cdc.config import TargetSettings
from cdc.errors import TargetError
from cdc.model import Event
from cdc.state.identity import WITHOUT_IDENTITY, Installation
from cdc.state.store import Position, StateStore

log = logging.getLogger("cdc.targets")


class Target(Protocol):
    name: str
    batch_size: int

    def open(self) -> None: ...

    def position(self, source: str) -> Position | None: ...

    def apply(self, source: str, events: list[Event]) -> None: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


class DatabaseTarget:
    """What the database targets share: positions kept in the target database and written in
    the same transaction as each batch, so a checkpoint has nothing more to make durable."""

    def __init__(
        self,
        settings: TargetSettings,
        marks_writes: bool = False,
        installation: Installation = WITHOUT_IDENTITY,
        store: StateStore | None = None,
    ) -> None:
        self.name = settings.name
        self.batch_size = settings.batch_size
        self._settings = settings
        self._positions: dict[str, Position] = {}
        self._marks_writes = marks_writes  # a sync target: each transaction says it is cdc's own write
        self._installation = installation
        self._store = store  # the source tables' recorded columns, for a column added without a record
        self._left_out: dict[tuple[str, str, str, tuple[str, ...]], frozenset[str]] = {}
        self._logged_left_out: set[tuple[str, str]] = set()

    def _take_positions(self, rows: Iterable[tuple[str, str, int, str | None]]) -> None:
        """The positions read from the position table, (source, txn_key, seq, installation) each;
        those of another installation are left out, each with a warning."""
        self._positions = {}
        for source, txn_key, seq, marked in rows:
            if self._installation.holds(marked):
                self._positions[source] = (txn_key, int(seq))
            else:
                warn_foreign(self.name, source, marked, self._installation)

    def position(self, source: str) -> Position | None:
        return self._positions.get(source)

    def checkpoint(self) -> None:
        """Each batch is committed by ``apply``; nothing more to make durable."""

    # -- schema changes ----------------------------------------------------------------

    def _left_out_of(
        self, event: Event, table: str, after: dict[str, Any], has: Callable[[str], bool]
    ) -> dict[str, Any]:
        """``after`` without the source columns that the target table lacks and ``ignore`` leaves
        out (``has``: whether the table has a target column); the others are added or stop."""
        cache_key = (event.source, event.schema, event.table, tuple(after))
        left_out = self._left_out.get(cache_key)
        if left_out is None:
            left_out = self._left_out[cache_key] = self._follow(event, table, after, has)
        return {name: value for name, value in after.items() if name not in left_out} if left_out else after

    def _follow(self, event: Event, table: str, names: Iterable[str], has: Callable[[str], bool]) -> frozenset[str]:
        """Follow ``schema_changes`` for the source columns ``names`` of ``event`` that the target
        table ``table`` lacks: stop naming them, add them, or leave them out; those left out."""
        column_map = self._settings.mapped_columns(event.source, event.schema, event.table)
        missing = [(name, column_map.get(name, name)) for name in names if not has(column_map.get(name, name))]
        if not missing:
            return frozenset()
        if self._settings.schema_changes == "ignore":
            for _, column in missing:
                if (table, column) not in self._logged_left_out:
                    self._logged_left_out.add((table, column))
                    log.info(
                        "target %s: table %s has no column %r: left out of its writes (schema_changes = ignore)",
                        self.name,
                        table,
                        column,
                        extra={"target": self.name},
                    )
            return frozenset(name for name, _ in missing)
        kind, types = self._source_types(event)
        columns = [(column, self._column_type(kind, types.get(name), table, column)) for name, column in missing]
        if self._settings.schema_changes == "stop":
            names_text = ", ".join(repr(column) for column, _ in columns)
            raise TargetError(
                f"target {self.name}: table {table} has no column{'s' if len(columns) > 1 else ''} {names_text}"
                f" of {event.source}:{event.schema}.{event.table}: run {self._add_columns_sql(table, columns)!r}"
                ' on the target, map it with column_map, or set schema_changes = "add_columns" (or "ignore")'
                f" for target {self.name}",
                fatal=True,
            )
        self._add_columns(table, columns)
        self._left_out.clear()
        for column, column_type in columns:
            log.info(
                "target %s: added column %r %s to table %s (schema_changes = add_columns)",
                self.name,
                column,
                column_type,
                table,
                extra={"target": self.name},
            )
        return frozenset()

    def _source_types(self, event: Event) -> tuple[str, dict[str, str]]:
        """The source's kind and its columns' types: from the event's ``schema_change`` record,
        else as the state store last recorded the table (none known: empty)."""
        record = event.schema_change
        kind = ""
        if record is not None:
            columns, kind = record["columns"], record.get("source_kind", "")
        else:
            shape = self._store.table_shape(event.stream, event.schema, event.table) if self._store else None
            columns = json.loads(shape.columns_json) if shape is not None else []
        if not kind:  # only a PostgreSQL source gives the values' text forms
            kind = "postgres" if event.native is not None else "mysql"
        return kind, {column["name"]: column["type"] for column in columns}

    def _fallen_back(self, table: str, column: str, source_type: str | None, chosen: str) -> None:
        """Say that a column is added with ``chosen`` since its source type has no counterpart."""
        log.warning(
            "target %s: column %r of table %s: %s, so it is added as %s",
            self.name,
            column,
            table,
            "its source type is not known" if source_type is None else f"the target has no type {source_type}",
            chosen,
            extra={"target": self.name},
        )

    def _column_type(self, kind: str, source_type: str | None, table: str, column: str) -> str:
        """The type of the target's own to add a column of ``kind``'s ``source_type`` with."""
        raise NotImplementedError

    def _add_columns_sql(self, table: str, columns: Sequence[tuple[str, str]]) -> str:
        """The ALTER TABLE that adds ``columns`` (name, type) to ``table``, as a person runs it."""
        raise NotImplementedError

    def _add_columns(self, table: str, columns: Sequence[tuple[str, str]]) -> None:
        """Add ``columns`` (name, type), nullable, to ``table`` in the batch's transaction."""
        raise NotImplementedError


def warn_foreign(
    target: str,
    source: str,
    marked: str | None,
    installation: Installation,
    repeating: str = "upserts and deletes by key, safe to repeat",
) -> None:
    """Say that ``target`` held a position of ``source`` written by another installation (``marked``)."""
    log.warning(
        "target %s holds a position of %s written by another cdc installation (%s; this state store"
        " is %s): taken as absent, so %s is applied again from this installation's first event (%s)",
        target,
        source,
        installation.describe(marked),
        installation.describe(installation.id),
        source,
        repeating,
        extra={"target": target, "stream": source},
    )


def consecutive_runs(
    actions: Iterable[tuple[Hashable, tuple[Any, ...]]],
) -> Iterator[tuple[Any, list[tuple[Any, ...]]]]:
    """Consecutive (statement, params) actions with the same statement, as (statement, [params...]),
    so that each run goes to the database in one ``executemany`` and the order is kept."""
    run: list[tuple[Any, ...]] = []
    current: Any = None
    for statement, params in actions:
        if run and statement != current:
            yield current, run
            run = []
        current = statement
        run.append(params)
    if run:
        yield current, run
