"""The state store's record of each captured table's columns (``table_shapes``), for schema changes."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TableShapeRecord:
    """A table's columns as recorded (JSON ``[{"name", "type"}]``), each column a schema change
    added, dropped or retyped with the commit time of the last such change (``(name, ISO
    time)``), and the commit time of the table's last schema change ('' if none yet)."""

    columns_json: str
    reshaped: tuple[tuple[str, str], ...] = ()
    reshaped_at: str = ""


class TableShapes:
    _db: sqlite3.Connection

    def table_shape(self, source: str, schema: str, table: str) -> TableShapeRecord | None:
        """The columns recorded for a captured table, if any (``table_shapes``)."""
        row = self._db.execute(
            "SELECT columns, reshaped, reshaped_at FROM table_shapes"
            " WHERE source = ? AND schema_name = ? AND table_name = ?",
            (source, schema, table),
        ).fetchone()
        return None if row is None else TableShapeRecord(row[0], _pairs(row[1]), row[2])

    def table_shapes(self, source: str) -> dict[tuple[str, str], TableShapeRecord]:
        rows = self._db.execute(
            "SELECT schema_name, table_name, columns, reshaped, reshaped_at FROM table_shapes WHERE source = ?",
            (source,),
        )
        return {(r[0], r[1]): TableShapeRecord(r[2], _pairs(r[3]), r[4]) for r in rows}

    def set_table_shape(self, source: str, schema: str, table: str, shape: TableShapeRecord) -> None:
        """Record a table's columns (inside ``transaction()``, with the event that first uses them)."""
        self._db.execute(
            "INSERT INTO table_shapes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, schema_name, table_name)"
            " DO UPDATE SET columns = excluded.columns, reshaped = excluded.reshaped, reshaped_at = excluded.reshaped_at",
            (
                source,
                schema,
                table,
                shape.columns_json,
                json.dumps([list(p) for p in shape.reshaped]),
                shape.reshaped_at,
            ),
        )


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((str(name), str(at)) for name, at in json.loads(text))
