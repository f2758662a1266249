"""pgoutput Relation messages turned into ``TableShape`` items by the PostgreSQL translator.

The messages are real wire bytes (the helpers of ``tests.unit.test_pg_translate``); the
catalog lookup of the columns' type names is the injected ``describe_columns``, answered here
from a dict as stream.py's catalog query would answer it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cdc.model import RowChange, SourceColumn, TableShape, TxnBegin, TxnCommit
from cdc.sources.postgres.pgoutput import Column
from cdc.sources.postgres.translate import Translator
from cdc.sources.postgres.values import ValueDecoder
from tests.unit.test_pg_translate import (
    RELID,
    WHERE,
    Keys,
    begin,
    commit,
    feed,
    frame,
    insert,
    row,
    update,
)
from tests.unit.test_pgoutput import relation_msg

INT4, TEXT, VARCHAR, NUMERIC = 23, 25, 1043, 1700
MOOD = 16386  # an enum of the source database
VARCHAR_20 = 24  # the typmod of character varying(20): the length plus 4
COLUMNS = [(1, "id", INT4, -1), (0, "name", VARCHAR, VARCHAR_20), (0, "mood", MOOD, -1)]
CATALOG = {(INT4, -1): "integer", (VARCHAR, VARCHAR_20): "character varying(20)", (MOOD, -1): "public.mood"}
SHAPE = (
    SourceColumn("id", "integer"),
    SourceColumn("name", "character varying(20)"),
    SourceColumn("mood", "public.mood"),
)


class Catalog:
    """The injected ``describe_columns``: type names from ``types`` (None for one it lacks),
    ``filled`` as the columns with a default; records each lookup."""

    def __init__(self, types: dict[tuple[int, int], str] | None = None, filled: frozenset[str] = frozenset()) -> None:
        self.types = dict(CATALOG if types is None else types)
        self.filled = filled
        self.asked: list[tuple[int, list[str]]] = []

    def __call__(self, relid: int, columns: Sequence[Column]) -> tuple[list[str | None], frozenset[str]]:
        self.asked.append((relid, [column.name for column in columns]))
        return [self.types.get((column.type_oid, column.type_modifier)) for column in columns], self.filled


def translator(catalog: Catalog, captured: set[tuple[str, str]] | None = None) -> Translator:
    return Translator(WHERE, Keys(["id"]), ValueDecoder(), captured, catalog)


def relation(columns: list[tuple[int, str, int, int]] = COLUMNS, name: str = "customers") -> bytes:
    return frame(relation_msg(RELID, "public", name, "f", columns))


def shapes(items: list) -> list[TableShape]:
    return [item for item in items if isinstance(item, TableShape)]


def test_a_relation_message_is_a_table_shape_before_the_change_that_follows():
    items = feed(
        translator(Catalog()), frame(begin()), relation(), frame(insert(row(b"1", b"Ada", b"a"))), frame(commit())
    )
    assert [type(item) for item in items] == [TxnBegin, TableShape, RowChange, TxnCommit]
    assert items[1] == TableShape("public", "customers", SHAPE)


def test_the_columns_are_looked_up_once_per_relation_message():
    catalog = Catalog()
    translate = translator(catalog)
    feed(translate, frame(begin()), relation(), frame(insert(row(b"1", b"Ada", b"a"))))
    feed(translate, frame(insert(row(b"2", b"Bo", b"b"))), frame(commit()))
    assert catalog.asked == [(RELID, ["id", "name", "mood"])]


def test_a_column_filled_by_a_ddl_is_named_and_only_the_columns_of_the_shape_count():
    catalog = Catalog({**CATALOG, (TEXT, -1): "text"}, filled=frozenset({"tier", "gone"}))
    [shape] = shapes(feed(translator(catalog), frame(begin()), relation([*COLUMNS, (0, "tier", TEXT, -1)])))
    assert shape.columns == (*SHAPE, SourceColumn("tier", "text"))
    assert shape.filled == frozenset({"tier"})
    assert not shape.rewrites


def test_a_relation_message_sent_again_after_a_ddl_is_a_new_shape_and_decodes_the_new_columns():
    catalog = Catalog({**CATALOG, (NUMERIC, 786438): "numeric(12,2)"})
    translate = translator(catalog)
    first = feed(translate, frame(begin()), relation(), frame(insert(row(b"1", b"Ada", b"a"))), frame(commit()))
    altered = [(1, "id", INT4, -1), (0, "full_name", VARCHAR, VARCHAR_20), (0, "amount", NUMERIC, 786438)]
    old, new = row(b"1", b"Ada", None), row(b"1", b"Ada", b"12.50")
    second = feed(translate, frame(begin()), relation(altered), frame(update(old, new)), frame(commit()))
    assert shapes(first) == [TableShape("public", "customers", SHAPE)]
    assert shapes(second) == [
        TableShape(
            "public",
            "customers",
            (
                SourceColumn("id", "integer"),
                SourceColumn("full_name", "character varying(20)"),
                SourceColumn("amount", "numeric(12,2)"),
            ),
        )
    ]
    [change] = [item for item in second if isinstance(item, RowChange)]
    assert change.native_after == {"id": "1", "full_name": "Ada", "amount": "12.50"}


def test_a_type_the_catalog_no_longer_knows_keeps_its_name_else_is_named_by_its_oid():
    catalog = Catalog()
    translate = translator(catalog)
    feed(translate, frame(begin()), relation(), frame(commit()))
    catalog.types = {(INT4, -1): "integer"}  # the table and its enum were dropped since
    translate.restart()
    columns = [*COLUMNS, (0, "label", 16390, -1)]
    [shape] = shapes(feed(translate, frame(begin()), relation(columns)))
    assert shape.columns == (*SHAPE, SourceColumn("label", "16390"))


def test_a_table_whose_changes_are_skipped_has_no_shape():
    catalog = Catalog()
    items = feed(translator(catalog, {("public", "orders")}), frame(begin()), relation(), frame(commit()))
    assert shapes(items) == [] and catalog.asked == []


def test_without_a_column_lookup_there_are_no_shapes():
    translate = Translator(WHERE, Keys(["id"]), ValueDecoder())
    assert shapes(feed(translate, frame(begin()), relation(), frame(commit()))) == []
