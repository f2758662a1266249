"""MariaDB tables described from the binlog, without a server: a table map's columns and types
(``cdc.sources.mysql.column_types``), what an ALTER TABLE does to existing rows
(``cdc.sources.mysql.ddl``), and the ``TableShape`` items the translator gives for them.

The events are mysql-replication's own classes made as in tests/unit/test_mysql_translate.py;
the column attributes are those the library parsed from MariaDB 10.11's table maps.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE as T
from pymysqlreplication.row_event import TableMapEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.model import Idle, RowChange, SourceColumn, TableShape, TxnBegin, TxnCommit
from cdc.sources.mysql.column_types import column_type, map_shape
from cdc.sources.mysql.ddl import AlterTable, UnparsableAlter, parse_alter
from tests.unit.test_mysql_translate import Described, _event, mariadb_gtid, query, rotate, rows, translator, xid

UTF8MB4 = {"collation_name": "utf8mb4_unicode_ci"}
LATIN1 = {"collation_name": "latin1_swedish_ci"}
BINARY = {"collation_name": "binary"}

# (the library's Column attributes, what information_schema.columns.column_type prints)
TYPES = [
    ({"type": T.LONG}, "int(11)"),
    ({"type": T.LONG, "unsigned": True}, "int(10) unsigned"),
    ({"type": T.TINY}, "tinyint(4)"),
    ({"type": T.TINY, "unsigned": True}, "tinyint(3) unsigned"),
    ({"type": T.SHORT}, "smallint(6)"),
    ({"type": T.SHORT, "unsigned": True}, "smallint(5) unsigned"),
    ({"type": T.INT24}, "mediumint(9)"),
    ({"type": T.INT24, "unsigned": True}, "mediumint(8) unsigned"),
    ({"type": T.LONGLONG}, "bigint(20)"),
    ({"type": T.LONGLONG, "unsigned": True}, "bigint(20) unsigned"),
    ({"type": T.NEWDECIMAL, "precision": 10, "decimals": 2}, "decimal(10,2)"),
    ({"type": T.NEWDECIMAL, "precision": 5, "decimals": 0, "unsigned": True}, "decimal(5,0) unsigned"),
    ({"type": T.FLOAT, "size": 4}, "float"),
    ({"type": T.FLOAT, "size": 4, "unsigned": True}, "float unsigned"),
    ({"type": T.DOUBLE, "size": 8}, "double"),
    ({"type": T.DATETIME2, "fsp": 0}, "datetime"),
    ({"type": T.DATETIME2, "fsp": 3}, "datetime(3)"),
    ({"type": T.TIMESTAMP2, "fsp": 6}, "timestamp(6)"),
    ({"type": T.TIME2, "fsp": 2}, "time(2)"),
    ({"type": T.TIME2, "fsp": 0}, "time"),
    ({"type": T.DATE}, "date"),
    ({"type": T.YEAR, "unsigned": True}, "year(4)"),
    ({"type": T.VARCHAR, "max_length": 80, **UTF8MB4}, "varchar(20)"),
    ({"type": T.VARCHAR, "max_length": 20, **LATIN1}, "varchar(20)"),
    ({"type": T.VARCHAR, "max_length": 900, "collation_name": "utf8mb3_general_ci"}, "varchar(300)"),
    ({"type": T.VARCHAR, "max_length": 30, **BINARY}, "varbinary(30)"),
    ({"type": T.STRING, "max_length": 20, **UTF8MB4}, "char(5)"),
    ({"type": T.STRING, "max_length": 5, **LATIN1}, "char(5)"),
    ({"type": T.STRING, "max_length": 4, **BINARY}, "binary(4)"),
    ({"type": T.STRING, "max_length": 16, **BINARY}, "binary(16)"),  # INET6, UUID: as stored
    ({"type": T.BLOB, "length_size": 1, **UTF8MB4}, "tinytext"),
    ({"type": T.BLOB, "length_size": 2, **UTF8MB4}, "text"),
    ({"type": T.BLOB, "length_size": 3, **UTF8MB4}, "mediumtext"),
    ({"type": T.BLOB, "length_size": 4, "collation_name": "utf8mb4_bin"}, "longtext"),  # also JSON
    ({"type": T.BLOB, "length_size": 1, **BINARY}, "tinyblob"),
    ({"type": T.BLOB, "length_size": 2, **BINARY}, "blob"),
    ({"type": T.BLOB, "length_size": 4, **BINARY}, "longblob"),
    ({"type": T.ENUM, "enum_values": ["", "a", "b'c", "d,e"], "size": 1, **UTF8MB4}, "enum('a','b''c','d,e')"),
    ({"type": T.SET, "set_values": ["x", "y"], "size": 1, **UTF8MB4}, "set('x','y')"),
    ({"type": T.BIT, "bits": 1, "bytes": 1}, "bit(1)"),
    ({"type": T.BIT, "bits": 9, "bytes": 2}, "bit(9)"),
]


@pytest.mark.parametrize(("attributes", "expected"), TYPES, ids=[expected for _, expected in TYPES])
def test_a_table_map_column_is_typed_as_the_catalog_prints_it(attributes, expected):
    assert column_type(Column(**{"name": "c", "unsigned": False, **attributes})) == expected


def test_geometry_columns_take_their_type_from_the_optional_metadata():
    columns = [
        Column(name="id", type=T.LONG, unsigned=False),
        Column(name="g", type=T.GEOMETRY, length_size=4, **BINARY),
        Column(name="p", type=T.GEOMETRY, length_size=4, **BINARY),
    ]
    shape = map_shape(table_map(columns, geometries=[0, 1]))
    assert shape is not None
    assert [column.type for column in shape.columns] == ["int(11)", "geometry", "point"]


def test_the_null_bitmap_names_the_nullable_columns():
    columns = [Column(name=name, type=T.LONG, unsigned=False) for name in "abcdefghij"]
    shape = map_shape(table_map(columns, null_bitmask=bytes([0b1000_0110, 0b10])))
    assert shape is not None and shape.nullable == {"b", "c", "h", "j"}


def test_a_table_map_without_column_names_describes_nothing():
    assert map_shape(table_map([Column(name=None, type=T.LONG, unsigned=False)])) is None


# -- ALTER TABLE -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "filled"),
    [
        ("ALTER TABLE customers ADD COLUMN farbe VARCHAR(20) DEFAULT 'rot'", {"farbe"}),
        ("alter table customers add farbe varchar(20) default 'rot' after name", {"farbe"}),
        ("ALTER TABLE customers ADD COLUMN IF NOT EXISTS `Farbe` VARCHAR(20) DEFAULT 'NULL'", {"farbe"}),
        ("ALTER TABLE customers ADD COLUMN note TEXT", set()),
        ("ALTER TABLE customers ADD COLUMN note TEXT NULL DEFAULT NULL", set()),
        ("ALTER TABLE customers ADD COLUMN n INT NOT NULL", {"n"}),  # the type's implicit default
        ("ALTER TABLE customers ADD COLUMN n INT NOT NULL DEFAULT 0 COMMENT 'default'", {"n"}),
        ("ALTER TABLE customers ADD COLUMN n INT DEFAULT (1 + 2)", {"n"}),
        ("ALTER TABLE customers ADD COLUMN n INT AS (id + 1) VIRTUAL", {"n"}),
        ("ALTER TABLE customers ADD n INT GENERATED ALWAYS AS (id * 2) STORED", {"n"}),
        ("ALTER TABLE customers ADD COLUMN n INT AUTO_INCREMENT UNIQUE", {"n"}),
        ("ALTER TABLE customers ADD COLUMN at TIMESTAMP", {"at"}),
        ("ALTER TABLE customers ADD COLUMN at TIMESTAMP NULL", set()),
        ("ALTER TABLE customers ADD COLUMN e ENUM('a,b', 'c') DEFAULT 'c'", {"e"}),
        ("ALTER TABLE customers ADD (a INT DEFAULT 1, b INT, c INT NOT NULL)", {"a", "c"}),
        ("ALTER TABLE customers ADD a INT, ADD b INT DEFAULT 2, ADD INDEX (a), ADD UNIQUE KEY u (b)", {"b"}),
        ("ALTER TABLE customers ADD PRIMARY KEY (id), ADD CONSTRAINT c CHECK (id > 0)", set()),
        ("ALTER TABLE customers ADD `key` INT DEFAULT 1", {"key"}),
        ("/* by a tool, DEFAULT 1 */ ALTER TABLE customers /*!100100 ADD k INT DEFAULT 1 */", {"k"}),
        ("ALTER TABLE customers -- comment\n ADD k INT # the end\n", set()),
    ],
)
def test_columns_an_add_fills_in_existing_rows(statement, filled):
    altered = parse_alter(statement, "erp")
    assert altered is not None
    assert (altered.schema, altered.table, altered.filled, altered.rewrites) == ("erp", "customers", filled, False)


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE customers DROP COLUMN name",
        "ALTER TABLE customers DROP IF EXISTS name, DROP INDEX i, DROP PRIMARY KEY, DROP FOREIGN KEY f",
        "ALTER TABLE customers RENAME COLUMN name TO full_name",
        "ALTER TABLE customers MODIFY name VARCHAR(200) DEFAULT 'x'",
        "ALTER TABLE customers CHANGE COLUMN name full_name VARCHAR(200)",
        "ALTER TABLE customers ALTER COLUMN name SET DEFAULT 'x', ALTER name DROP DEFAULT",
        "ALTER TABLE customers ENGINE=InnoDB ROW_FORMAT=DYNAMIC, ALGORITHM=INPLACE, LOCK=NONE",
        "ALTER TABLE customers DEFAULT CHARACTER SET utf8mb4, COMMENT = 'x', AUTO_INCREMENT = 5",
        "ALTER TABLE customers RENAME INDEX a TO b, FORCE",
        "ALTER TABLE customers ORDER BY name",
        "ALTER TABLE customers PARTITION BY HASH (id) PARTITIONS 4",
    ],
)
def test_clauses_that_change_no_stored_value(statement):
    altered = parse_alter(statement, "erp")
    assert altered is not None and not altered.filled and not altered.rewrites


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE customers CONVERT TO CHARACTER SET latin1",
        "ALTER TABLE customers MODIFY name VARCHAR(20) CHARACTER SET latin1",
        "ALTER TABLE customers CHANGE name name TEXT COLLATE latin1_bin",
        "ALTER TABLE customers TRUNCATE PARTITION p0",
        "ALTER TABLE customers DROP PARTITION p0",
        "ALTER TABLE customers EXCHANGE PARTITION p0 WITH TABLE other",
        "ALTER TABLE customers IMPORT TABLESPACE",
    ],
)
def test_clauses_that_change_stored_values_rewrite_the_table(statement):
    altered = parse_alter(statement, "erp")
    assert altered is not None and altered.rewrites


def test_the_table_is_named_by_the_statement_or_the_default_database():
    altered = parse_alter("ALTER ONLINE IGNORE TABLE IF EXISTS `my db`.`Kunden``x` WAIT 5 DROP a", "erp")
    assert altered is not None and (altered.schema, altered.table) == ("my db", "Kunden`x")
    altered = parse_alter("ALTER TABLE crm.Kunden NOWAIT DROP a", "erp")
    assert altered is not None and (altered.schema, altered.table) == ("crm", "Kunden")


def test_renames_and_not_null_are_noted_by_column():
    altered = parse_alter(
        "ALTER TABLE customers CHANGE `Name` full_name VARCHAR(20) NOT NULL, RENAME COLUMN a TO b,"
        " MODIFY COLUMN IF EXISTS c INT NOT NULL",
        "erp",
    )
    assert altered == AlterTable("erp", "customers", set(), {"full_name", "c"}, {"name": "full_name", "a": "b"})


@pytest.mark.parametrize(
    "statement", ["CREATE TABLE t (a INT)", "ALTER DATABASE erp CHARACTER SET utf8", "ALTER TABLE"]
)
def test_other_statements_are_no_alter_table(statement):
    assert parse_alter(statement, "erp") is None


def test_a_clause_not_understood_names_the_table():
    with pytest.raises(UnparsableAlter, match="FROBNICATE") as raised:
        parse_alter("ALTER TABLE crm.customers ADD a INT DEFAULT 1, FROBNICATE a", "erp")
    assert (raised.value.schema, raised.value.table) == ("crm", "customers")


# -- the translator's TableShape items ---------------------------------------------------

ID = Column(name="id", type=T.LONG, unsigned=False, is_primary=True)
NAME = Column(name="name", type=T.VARCHAR, max_length=80, unsigned=False, **UTF8MB4)
FARBE = Column(name="farbe", type=T.VARCHAR, max_length=80, unsigned=False, **UTF8MB4)
NAME_TEXT = Column(name="name", type=T.BLOB, length_size=2, unsigned=False, **UTF8MB4)
ID_NAME = (SourceColumn("id", "int(11)"), SourceColumn("name", "varchar(20)"))


def table_map(
    columns: list[Column],
    table_id: int = 21,
    table: str = "customers",
    null_bitmask: bytes = b"\xfe",
    geometries: list[int] | None = None,
) -> Any:
    return _event(
        TableMapEvent,
        0,
        schema="erp",
        table=table,
        table_id=table_id,
        columns=columns,
        null_bitmask=null_bitmask,
        optional_metadata=SimpleNamespace(geometry_type_list=geometries or []),
    )


def write(id_: int, columns: list[Column], table_id: int = 21) -> Any:
    values = {"id": id_, "name": "Ann", "farbe": "rot"}
    return rows(
        WriteRowsEvent, [{"values": {c.name: values[c.name] for c in columns}}], table_id=table_id, columns=columns
    )


class Stream:
    """A translator fed one MariaDB transaction (or statement) at a time."""

    def __init__(self, described: Described) -> None:
        self.translator = translator(described, "0-1-10")
        self.seq = 10
        self.feed(rotate("mariadb-bin.000002"))

    def feed(self, *events: Any) -> list[Any]:
        items: list[Any] = []
        for event in events:
            self.translator.handle(event, items)
        return items

    def txn(self, *events: Any) -> list[Any]:
        self.seq += 1
        return self.feed(mariadb_gtid(f"0-1-{self.seq}", self.seq * 100), *events, xid(self.seq * 100 + 50))

    def ddl(self, statement: str) -> list[Any]:
        self.seq += 1
        return self.feed(mariadb_gtid(f"0-1-{self.seq}", self.seq * 100), query(statement, self.seq * 100 + 50))

    def shapes(self, *events: Any) -> list[TableShape]:
        return [item for item in self.txn(*events) if type(item) is TableShape]


@pytest.fixture
def stream() -> Stream:
    return Stream(
        Described({("erp", "customers"): (["id"], [("id", "int"), ("name", "varchar"), ("farbe", "varchar")])})
    )


def test_the_first_table_map_is_described_inside_the_transaction_before_its_rows(stream):
    items = stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    assert [type(item) for item in items] == [TxnBegin, TableShape, RowChange, TxnCommit]
    assert items[1] == TableShape("erp", "customers", ID_NAME)


def test_an_unchanged_table_map_is_described_once(stream):
    stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    assert stream.shapes(table_map([ID, NAME]), write(2, [ID, NAME]), write(3, [ID, NAME])) == []
    assert stream.shapes(table_map([ID, NAME], table_id=40), write(4, [ID, NAME], table_id=40)) == []


def test_a_restarted_reader_describes_its_tables_again(stream):
    stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    stream.translator.restart("0-1-11", True)
    stream.feed(rotate("mariadb-bin.000002"))
    assert stream.shapes(table_map([ID, NAME]), write(2, [ID, NAME])) == [TableShape("erp", "customers", ID_NAME)]


def test_an_added_column_with_a_default_is_filled(stream):
    stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    assert stream.ddl("ALTER TABLE customers ADD COLUMN Farbe VARCHAR(20) DEFAULT 'rot'") == [Idle(f"0-1-{stream.seq}")]
    shapes = stream.shapes(table_map([ID, NAME, FARBE], table_id=22), write(2, [ID, NAME, FARBE], table_id=22))
    assert shapes == [
        TableShape("erp", "customers", (*ID_NAME, SourceColumn("farbe", "varchar(20)")), False, frozenset({"farbe"}))
    ]
    assert stream.shapes(table_map([ID, NAME, FARBE], table_id=22), write(3, [ID, NAME, FARBE], table_id=22)) == []


def test_an_added_column_renamed_before_the_next_table_map_stays_filled(stream):
    stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    stream.ddl("ALTER TABLE erp.customers ADD COLUMN color VARCHAR(20) NOT NULL")
    stream.ddl("ALTER TABLE customers RENAME COLUMN color TO farbe")
    (shape,) = stream.shapes(table_map([ID, NAME, FARBE], table_id=22), write(2, [ID, NAME, FARBE], table_id=22))
    assert shape.filled == {"farbe"} and not shape.rewrites


def test_a_conversion_of_unchanged_columns_is_described_as_rewriting(stream):
    stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    stream.ddl("ALTER TABLE customers CONVERT TO CHARACTER SET utf8mb4")
    shapes = stream.shapes(table_map([ID, NAME], table_id=22), write(2, [ID, NAME], table_id=22))
    assert shapes == [TableShape("erp", "customers", ID_NAME, True)]


def test_a_retyped_column_is_described_without_a_note_of_its_own(stream):
    stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    stream.ddl("ALTER TABLE customers MODIFY name TEXT")
    shapes = stream.shapes(table_map([ID, NAME_TEXT], table_id=22), write(2, [ID, NAME_TEXT], table_id=22))
    assert shapes == [TableShape("erp", "customers", (ID_NAME[0], SourceColumn("name", "text")))]


@pytest.mark.parametrize(("nullable_before", "rewrites"), [(b"\x02", True), (b"\x00", False)])
def test_a_column_made_not_null_rewrites_rows_if_it_could_hold_null(stream, nullable_before, rewrites):
    stream.txn(table_map([ID, NAME], null_bitmask=nullable_before), write(1, [ID, NAME]))
    stream.ddl("ALTER TABLE customers MODIFY name VARCHAR(20) NOT NULL")
    (shape,) = stream.shapes(
        table_map([ID, NAME], table_id=22, null_bitmask=b"\x00"), write(2, [ID, NAME], table_id=22)
    )
    assert shape.rewrites is rewrites


def test_an_alter_not_understood_is_described_as_rewriting_with_a_warning(stream, caplog):
    stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    with caplog.at_level(logging.WARNING, logger="cdc.source.mysql"):
        stream.ddl("ALTER TABLE customers FROBNICATE name")
    assert "erp.customers" in caplog.text and "read again" in caplog.text and "FROBNICATE" in caplog.text
    shapes = stream.shapes(table_map([ID, NAME], table_id=22), write(2, [ID, NAME], table_id=22))
    assert shapes == [TableShape("erp", "customers", ID_NAME, True)]


def test_alters_of_tables_not_captured_are_not_noted(stream, caplog):
    stream.txn(table_map([ID, NAME]), write(1, [ID, NAME]))
    with caplog.at_level(logging.WARNING, logger="cdc.source.mysql"):
        stream.ddl("ALTER TABLE other FROBNICATE name")
        stream.ddl("ALTER TABLE crm.customers CONVERT TO CHARACTER SET latin1")
    assert caplog.text == ""
    assert stream.shapes(table_map([ID, NAME], table_id=22), write(2, [ID, NAME], table_id=22)) == []


def test_an_update_of_a_table_described_from_its_map_keeps_its_changes(stream):
    items = stream.txn(
        table_map([ID, NAME]),
        rows(
            UpdateRowsEvent,
            [{"before_values": {"id": 1, "name": "A"}, "after_values": {"id": 1, "name": "B"}}],
            columns=[ID, NAME],
        ),
    )
    assert [type(item) for item in items] == [TxnBegin, TableShape, RowChange, TxnCommit]
    assert items[2].after == {"id": 1, "name": "B"}


# -- statements logged inside a transaction ----------------------------------------------


@pytest.mark.parametrize("statement", ["SAVEPOINT `a`", "ROLLBACK TO SAVEPOINT `a`", "RELEASE SAVEPOINT a"])
def test_a_savepoint_inside_a_transaction_neither_ends_it_nor_loses_its_later_rows(stream, statement):
    items = stream.txn(
        table_map([ID, NAME]), write(1, [ID, NAME]), query(statement, 1200), table_map([ID, NAME]), write(2, [ID, NAME])
    )
    assert [type(item) for item in items] == [TxnBegin, TableShape, RowChange, RowChange, TxnCommit]
    assert [item.key for item in items if type(item) is RowChange] == [{"id": 1}, {"id": 2}]
