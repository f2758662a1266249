"""Unit tests of cdc.targets.convert: event values to target column parameters (no server)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from cdc.targets.convert import (
    FAMILIES,
    ConversionError,
    column_converter,
    convert_row,
    dump_json,
    load_doc,
    mysql_family,
    postgres_family,
)
from cdc.values import RawJson, Verbatim, dumps_row


def via_doc(value):
    """A value as a target sees it: written by cdc.values, read back by load_doc."""
    return load_doc(dumps_row({"v": value}))["v"]


def conv(family, value):
    return column_converter(family)(value)


def test_none_passes_every_family():
    for family in FAMILIES:
        assert conv(family, None) is None


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown column family"):
        column_converter("nope")


def test_load_doc_keeps_every_digit_and_dump_json_writes_them_back():
    doc = load_doc('{"a":[1,2.50,-0.0,1e+300],"n":1.000000000000000000001,"big":123456789012345678901234567890}')
    assert doc["n"] == Decimal("1.000000000000000000001")
    assert (
        dump_json(doc) == '{"a":[1,2.50,-0.0,1E+300],"n":1.000000000000000000001,"big":123456789012345678901234567890}'
    )
    assert dump_json({"é": "😀", "q": '"', "t": True, "z": None}) == '{"é":"😀","q":"\\"","t":true,"z":null}'


def test_binary():
    assert conv("binary", via_doc(b"\x00\xff\x10")) == b"\x00\xff\x10"
    assert conv("binary", "") == b""
    assert conv("binary", b"raw") == b"raw"
    with pytest.raises(ConversionError, match="not base64"):
        conv("binary", "not base64!")
    with pytest.raises(ConversionError):
        conv("binary", [1])


def test_json_dumps_any_value():
    assert conv("json", via_doc(RawJson('{"a": [1, 2.50]}'))) == '{"a":[1,2.50]}'
    assert conv("json", via_doc(RawJson('"abc"'))) == '"abc"'
    assert conv("json", "abc") == '"abc"'
    assert conv("json", via_doc(RawJson("true"))) == "true"
    assert conv("json", via_doc(RawJson("12345678901234567890.5"))) == "12345678901234567890.5"
    assert conv("json", [1, "ü"]) == '[1,"ü"]'


def test_datetime():
    naive = datetime(2026, 11, 22, 10, 0, 0, 123456)
    assert conv("datetime", via_doc(naive)) == naive
    aware = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert conv("datetime", via_doc(aware)) == naive
    assert conv("datetime", "2026-11-22T10:00:00.123456+00:00") == naive
    assert conv("datetime", "2026-11-22T10:00:00Z") == datetime(2026, 11, 22, 10)
    assert conv("datetime", "0000-00-00 00:00:00") == "0000-00-00 00:00:00"
    with pytest.raises(ConversionError, match="cannot be stored"):
        conv("datetime", "infinity")
    with pytest.raises(ConversionError, match="not an ISO-8601 timestamp"):
        conv("datetime", "yesterday")
    with pytest.raises(ConversionError):
        conv("datetime", 12)


def test_date():
    assert conv("date", via_doc(date(2026, 11, 22))) == date(2026, 11, 22)
    with pytest.raises(ConversionError, match="not an ISO-8601 date"):
        conv("date", "22/11/2026")


def test_time():
    assert conv("time", via_doc(time(10, 0, 0, 500000))) == "10:00:00.500000"
    assert conv("time", via_doc(time(10, 0))) == "10:00:00"
    assert conv("time", via_doc(Verbatim("-01:30:00"))) == "-01:30:00"
    assert conv("time", via_doc(Verbatim("838:59:59.000001"))) == "838:59:59.000001"
    assert conv("time", via_doc(timedelta(hours=30, microseconds=5))) == "30:00:00.000005"
    assert conv("time", via_doc(timedelta(seconds=-1))) == "-00:00:01"
    assert conv("time", "P1DT2H3M4.5S") == "26:03:04.500000"
    assert conv("time", "P-1DT-4H") == "-28:00:00"
    assert conv("time", "10:00:00+02:00") == "08:00:00"
    assert conv("time", "01:00:00+02:00") == "23:00:00"
    with pytest.raises(ConversionError, match="years or months"):
        conv("time", "P1Y2M3DT4H5M6.5S")
    with pytest.raises(ConversionError):
        conv("time", "noon")


def test_bool():
    assert conv("bool", True) is True
    assert conv("bool", 0) is False
    assert conv("bool", "t") is True
    assert conv("bool", "FALSE") is False
    with pytest.raises(ConversionError):
        conv("bool", 2)


def test_bit():
    assert conv("bit", 165) == 165
    assert conv("bit", "10100101") == 165
    assert conv("bit", True) == 1
    with pytest.raises(ConversionError):
        conv("bit", "12")


def test_set():
    assert conv("set", via_doc({"c", "a"})) == "a,c"
    assert conv("set", []) == ""
    assert conv("set", "a,c") == "a,c"
    with pytest.raises(ConversionError, match="comma"):
        conv("set", ["a,b"])


def test_decimal():
    exact = "12345678901234567890123456789012345.123456789012345678901234567890"
    assert conv("decimal", via_doc(Decimal(exact))) == exact
    assert conv("decimal", via_doc(0.1)) == "0.1"
    assert conv("decimal", via_doc(1e20)) == "100000000000000000000"
    assert conv("decimal", 7) == "7"
    assert conv("decimal", "NaN") == "NaN"  # PostgreSQL numeric and floats take it


def test_float():
    for value in (0.1, 1e300, -2.5e-300, 5e-324):
        assert conv("float", via_doc(value)) == value
    assert conv("float", 3) == 3
    assert conv("float", "2.5") == 2.5
    for special in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ConversionError, match="finite"):
            conv("float", via_doc(special))
    with pytest.raises(ConversionError, match="finite"):
        conv("float", Decimal("1e400"))


def test_integer():
    assert conv("integer", via_doc(2**64 - 1)) == 2**64 - 1
    assert conv("integer", via_doc(-(2**63))) == -(2**63)
    assert conv("integer", True) == 1 and conv("integer", False) == 0
    assert conv("integer", Decimal("3.0")) == 3
    assert conv("integer", "-42") == -42
    with pytest.raises(ConversionError, match="not an integer"):
        conv("integer", "3.5")
    with pytest.raises(ConversionError):
        conv("integer", "x")


def test_text():
    assert conv("text", "Zoë 😀") == "Zoë 😀"
    assert conv("text", {"a": 1}) == '{"a":1}'
    assert conv("text", [1, 2]) == "[1,2]"
    assert conv("text", 5) == "5"
    assert conv("text", True) == "true"
    assert conv("text", Decimal("1.50")) == "1.50"


def test_array():
    assert conv("array", via_doc([1, None, 3])) == [1, None, 3]
    assert conv("array", [[1, 2], [3, 4]]) == [[1, 2], [3, 4]]
    assert conv("array", [{"a": 1}]) == ['{"a":1}']
    assert conv("array", "{1,2}") == "{1,2}"
    with pytest.raises(ConversionError):
        conv("array", 5)


def test_convert_row_names_the_column():
    converters = {"id": column_converter("integer"), "m": column_converter("float")}
    assert convert_row({"id": "7", "other": [1]}, converters) == {"id": 7, "other": [1]}
    with pytest.raises(ConversionError, match="column 'm': NaN"):
        convert_row({"id": 1, "m": "NaN"}, converters)


@pytest.mark.parametrize(
    "data_type, column_type, family",
    [
        ("bigint", "bigint(20) unsigned", "integer"),
        ("tinyint", "tinyint(1)", "integer"),
        ("year", "year(4)", "integer"),
        ("decimal", "decimal(65,30)", "decimal"),
        ("double", "double", "float"),
        ("float", "float", "float"),
        ("datetime", "datetime(6)", "datetime"),
        ("timestamp", "timestamp(6)", "datetime"),
        ("date", "date", "date"),
        ("time", "time(6)", "time"),
        ("varchar", "varchar(100)", "text"),
        ("longtext", "longtext", "text"),
        ("enum", "enum('a','b')", "text"),
        ("set", "set('a','b')", "set"),
        ("bit", "bit(8)", "bit"),
        ("blob", "blob", "binary"),
        ("varbinary", "varbinary(16)", "binary"),
        ("json", "json", "json"),
        ("", "MEDIUMBLOB", "binary"),
        ("uuid", "uuid", "text"),
    ],
)
def test_mysql_family(data_type, column_type, family):
    assert mysql_family(data_type, column_type) == family


@pytest.mark.parametrize(
    "udt_name, family",
    [
        ("bytea", "binary"),
        ("json", "json"),
        ("jsonb", "json"),
        ("_int4", "array"),
        ("_text", "array"),
        ("bool", "bool"),
        ("int8", "integer"),
        ("numeric", "decimal"),
        ("float8", "decimal"),
        ("timestamptz", "calendar"),
        ("timestamp", "calendar"),
        ("date", "calendar"),
        ("interval", "text"),
        ("uuid", "text"),
        ("my_enum", "text"),
    ],
)
def test_postgres_family(udt_name, family):
    assert postgres_family(udt_name) == family
