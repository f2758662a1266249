"""JSON form of values, and PostgreSQL text decoding with psycopg's loaders (no server needed)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from cdc.sources.postgres.values import ValueDecoder
from cdc.values import RawJson, Verbatim, dumps_row, encode_value


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-(2**53) + 1, "-9007199254740991"),
        (2**53, '"9007199254740992"'),
        (2**64 - 1, '"18446744073709551615"'),
        (Decimal("12345678901234567890.000000000000000001"), '"12345678901234567890.000000000000000001"'),
        (0.1, "0.1"),
        (float("nan"), '"NaN"'),
        (float("-inf"), '"-Infinity"'),
        ("Zoë 😀", '"Zoë 😀"'),
        (Verbatim("P1Y"), '"P1Y"'),
        (RawJson('{"a": 1.000000000000000001}'), '{"a": 1.000000000000000001}'),
        (datetime(2026, 11, 22, 10, 0, 0, 5, tzinfo=UTC), '"2026-11-22T10:00:00.000005+00:00"'),
        (date(2026, 1, 2), '"2026-01-02"'),
        (time(10, 0, 0, 500000), '"10:00:00.500000"'),
        (b"\x00\xff", '"AP8="'),
        (uuid.UUID(int=1), '"00000000-0000-0000-0000-000000000001"'),
        ([1, None, "a"], '[1,null,"a"]'),
        (timedelta(days=1, seconds=1.5), '"P1DT1.5S"'),
    ],
)
def test_encode_value(value, text):
    assert encode_value(value) == text
    json.loads(text)


def test_dumps_row_is_json_object_in_column_order():
    row = {"id": 1, 'naïve "name"': "x", "n": None}
    assert dumps_row(row) == '{"id":1,"naïve \\"name\\"":"x","n":null}'
    assert json.loads(dumps_row(row)) == row
    assert dumps_row(None) == "null"


@pytest.mark.parametrize(
    "oid, text, expected",
    [
        (20, b"9223372036854775807", 9223372036854775807),
        (1700, b"1.50", Decimal("1.50")),
        (1184, b"2026-11-22 10:00:00.123456+00", datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)),
        (1114, b"infinity", "infinity"),
        (1186, b"P1Y2M3DT4H5M6S", "P1Y2M3DT4H5M6S"),
        (3802, b'{"n": 1.000000000000000000001}', '{"n": 1.000000000000000000001}'),
        (1007, b"{1,NULL,3}", [1, None, 3]),
        (17, b"\\x00ff", b"\x00\xff"),
        (16, b"t", True),
        (987654, b"custom enum value", "custom enum value"),
    ],
)
def test_decoder_uses_psycopg_loaders_and_keeps_what_they_cannot_hold(oid, text, expected):
    value = ValueDecoder().decode(oid, text)
    assert value == expected
    if oid in (1114, 1186, 987654):
        assert isinstance(value, Verbatim)
    if oid == 3802:
        assert isinstance(value, RawJson)
