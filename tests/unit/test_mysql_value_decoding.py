"""MariaDB's latin1 codec and zero dates, from the binlog's side to the targets' converters."""

from __future__ import annotations

import logging

import pytest

from cdc.errors import ConversionError
from cdc.sources.mysql import decoding
from cdc.sources.mysql.values import datetime_text
from cdc.targets.convert import column_converter, convert_row, is_zero_date, postgres_family


def test_mariadb_latin1_is_cp1252_with_its_five_holes_kept():
    decoding.install()
    text = bytes(range(256)).decode(decoding.LATIN1_CODEC)
    for byte, char in enumerate(text):
        if byte in (0x81, 0x8D, 0x8F, 0x90, 0x9D):
            assert char == chr(byte)
        else:
            assert char == bytes([byte]).decode("cp1252")
    assert text.encode(decoding.LATIN1_CODEC) == bytes(range(256))


@pytest.mark.parametrize(
    "fsp, microsecond, text",
    [(0, 0, "0000-00-00 00:00:00"), (3, 500000, "0000-00-00 00:00:00.500"), (6, 1, "0000-00-00 00:00:00.000001")],
)
def test_datetime_text_has_the_columns_digits_of_fraction(fsp, microsecond, text):
    assert datetime_text("0000-00-00", 0, 0, 0, microsecond, fsp) == text


@pytest.mark.parametrize(
    "value, zero",
    [
        ("0000-00-00", True),
        ("2020-00-15", True),
        ("2020-05-00 10:11:12.500", True),
        ("0000-00-00 00:00:00", True),
        ("2020-01-15", False),
        ("2020-01-15T10:11:12", False),
        ("2020-01-15 10:11:12", False),
        ("not a date", False),
        (20200115, False),
    ],
)
def test_is_zero_date(value, zero):
    assert is_zero_date(value) is zero


def test_zero_dates_go_to_mysql_columns_as_they_are():
    assert column_converter("date")("2020-00-15") == "2020-00-15"
    assert column_converter("datetime")("2020-05-00 10:11:12.500") == "2020-05-00 10:11:12.500"


def test_a_zero_date_in_a_postgres_date_column_is_null_with_a_warning(caplog):
    calendar = column_converter(postgres_family("date"))
    converters = {"d": calendar, "note": column_converter("text")}
    with caplog.at_level(logging.WARNING, logger="cdc.targets"):
        row = convert_row({"d": "0000-00-00", "note": "0000-00-00"}, converters, 'table public.visits: key {"id":1}')
    assert row == {"d": None, "note": "0000-00-00"}
    assert "table public.visits: key {\"id\":1}: column 'd'" in caplog.text and "stored NULL" in caplog.text
    assert convert_row({"d": "2020-01-15"}, converters) == {"d": "2020-01-15"}
    with pytest.raises(ConversionError, match=r"column 'd'.*zero date"):
        convert_row({"d": "0000-00-00"}, converters)  # a key: no NULL
