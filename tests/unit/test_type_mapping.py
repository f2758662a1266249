"""The types a database target adds a source's new column with, for each pair of engines."""

from __future__ import annotations

import pytest

from cdc.targets.type_mapping import (
    mysql_type_of_mysql,
    mysql_type_of_postgres,
    postgres_fallback,
    postgres_type_of_mysql,
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("varchar(20)", "character varying(20)"),
        ("char(3)", "character varying(3)"),
        ("decimal(10,2)", "numeric(10,2)"),
        ("decimal(10,2) unsigned", "numeric(10,2)"),
        ("datetime", "timestamp without time zone"),
        ("datetime(6)", "timestamp(6) without time zone"),
        ("timestamp(3)", "timestamp(3) with time zone"),
        ("time(6)", "interval"),
        ("date", "date"),
        ("enum('new','won','it''s, (lost)')", "text"),
        ("set('a','b')", "text[]"),
        ("json", "jsonb"),
        ("longtext", "text"),
        ("tinyint(1)", "smallint"),
        ("tinyint(3) unsigned", "smallint"),
        ("smallint(5) unsigned", "integer"),
        ("int(11)", "integer"),
        ("int unsigned", "bigint"),
        ("int(10) unsigned zerofill", "bigint"),
        ("bigint(20) unsigned", "numeric(20,0)"),
        ("double", "double precision"),
        ("float", "real"),
        ("bit(8)", "bigint"),
        ("bit(64)", "numeric(20,0)"),
        ("year(4)", "smallint"),
        ("varbinary(16)", "bytea"),
        ("longblob", "bytea"),
        ("uuid", "uuid"),
        ("inet6", "inet"),
        ("geometry", "text"),
        ("int); DROP TABLE x; --", "text"),
    ],
)
def test_mysql_types_on_postgres(source: str, expected: str) -> None:
    assert postgres_type_of_mysql(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("text", "longtext"),
        ("character varying(20)", "varchar(20)"),
        ("character varying", "longtext"),
        ("character varying(100000)", "longtext"),
        ("character(2)", "char(2)"),
        ("character(300)", "varchar(300)"),
        ("numeric(12,2)", "decimal(12,2)"),
        ("numeric", "decimal(65,30)"),
        ("numeric(80,2)", "longtext"),
        ("smallint", "smallint"),
        ("integer", "int"),
        ("bigint", "bigint"),
        ("boolean", "tinyint(1)"),
        ("real", "float"),
        ("double precision", "double"),
        ("timestamp with time zone", "datetime(6)"),
        ("timestamp(3) without time zone", "datetime(3)"),
        ("timestamp without time zone", "datetime(6)"),
        ("time without time zone", "time(6)"),
        ("time(0) without time zone", "time(0)"),
        ("time with time zone", "longtext"),
        ("date", "date"),
        ("interval", "varchar(64)"),
        ("bytea", "longblob"),
        ("jsonb", "json"),
        ("json", "json"),
        ("uuid", "char(36)"),
        ("inet", "varchar(43)"),
        ("bit(8)", "bit(8)"),
        ("bit varying(8)", "longtext"),
        ("integer[]", "json"),
        ("public.mood[]", "json"),
        ("mood", "longtext"),
        ("public.mood", "longtext"),
        ('"Mood"', "longtext"),
        ("money", "longtext"),
    ],
)
def test_postgres_types_on_mysql(source: str, expected: str) -> None:
    assert mysql_type_of_postgres(source) == expected


@pytest.mark.parametrize(
    ("source", "mariadb", "expected"),
    [
        ("varchar(20)", True, "varchar(20)"),
        ("decimal(10,2) unsigned", False, "decimal(10,2) unsigned"),
        ("datetime(6)", False, "datetime(6)"),
        ("enum('new','it''s')", False, "enum('new','it''s')"),
        ("json", True, "json"),
        ("uuid", True, "uuid"),
        ("uuid", False, "char(36)"),
        ("inet6", False, "varchar(39)"),
        ("int(11); DROP TABLE x", True, "longtext"),
        ("int(11) COMMENT 'x'", True, "longtext"),
    ],
)
def test_mysql_types_on_mysql(source: str, mariadb: bool, expected: str) -> None:
    assert mysql_type_of_mysql(source, mariadb) == expected


def test_a_postgres_type_the_target_lacks_becomes_text() -> None:
    assert postgres_fallback("public.mood") == "text"
    assert postgres_fallback("public.mood[]") == "text[]"
