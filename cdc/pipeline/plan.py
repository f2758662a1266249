"""The pipeline's plan of a source: what it needs to know of each source table, looked up once.

A ``TablePlan`` gathers a table's ``[[tables]]`` settings, its writer column, the entity it
is a member of and whether its repaired rows are written back (``repair = "write"``). A
``Plan`` builds each table's on first use and keeps it, so that the versioner finds all of
it with one dict lookup per change instead of scanning the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc.config import EntitySettings, Settings, TableSettings

EntityMembers = dict[tuple[str, str, str], EntitySettings]


def entity_members(settings: Settings) -> EntityMembers:
    """(source, schema, table) -> the entity that table is a member of."""
    return {
        (source, schema, table): entity
        for entity in settings.entities
        for source, (schema, table) in entity.member_tables.items()
    }


@dataclass(frozen=True, slots=True)
class TablePlan:
    """What the pipeline needs to know of one source table."""

    qualified: str  # "schema.table"
    settings: TableSettings | None  # its [[tables]] entry, if any
    writer_column: str | None
    entity: EntitySettings | None  # the entity the table is a member of
    repair_write: bool  # repair = "write": a lost update's merged row goes back into the source


class Plan:
    """The plans of one source's tables, each built on first use."""

    __slots__ = ("_members", "_settings", "_source", "_tables")

    def __init__(self, settings: Settings, source: str, members: EntityMembers | None = None) -> None:
        self._settings = settings
        self._source = source
        self._members = entity_members(settings) if members is None else members
        self._tables: dict[tuple[str, str], TablePlan] = {}

    @property
    def source(self) -> str:
        return self._source

    def table(self, schema: str, table: str) -> TablePlan:
        plan = self._tables.get((schema, table))
        return plan if plan is not None else self._build(schema, table)

    def _build(self, schema: str, table: str) -> TablePlan:
        settings = self._settings.table_settings(self._source, schema, table)
        plan = self._tables[(schema, table)] = TablePlan(
            qualified=f"{schema}.{table}",
            settings=settings,
            writer_column=settings.writer_column if settings is not None else None,
            entity=self._members.get((self._source, schema, table)),
            repair_write=settings is not None and settings.repair == "write",
        )
        return plan
