"""Tests for cdc.sources.postgres.protocol: replication CopyData framing, LSNs, timestamps."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cdc.sources.postgres.protocol import (
    PG_EPOCH,
    Keepalive,
    ProtocolError,
    XLogData,
    datetime_to_pg_timestamp,
    format_lsn,
    parse_copy_data,
    parse_lsn,
    pg_timestamp_to_datetime,
    standby_status_update,
)

UTC = UTC

# 2024-05-06 07:08:09.123456 UTC as microseconds since 2000-01-01 UTC.
TS = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
TS_US = 768_294_489_123_456  # date -u -d "2024-05-06 07:08:09" +%s, minus 946684800


def xlogdata(data_start: int, wal_end: int, send_time: int, payload: bytes) -> bytes:
    return b"w" + struct.pack(">QQq", data_start, wal_end, send_time) + payload


def keepalive(wal_end: int, send_time: int, reply: int) -> bytes:
    return b"k" + struct.pack(">QqB", wal_end, send_time, reply)


# --------------------------------------------------------------------------
# Timestamps


def test_pg_epoch_is_2000_01_01_utc():
    assert pg_timestamp_to_datetime(0) == datetime(2000, 1, 1, tzinfo=UTC)
    assert datetime_to_pg_timestamp(datetime(2000, 1, 1, tzinfo=UTC)) == 0


def test_timestamp_conversions_known_values():
    # One day and one microsecond after the epoch.
    assert pg_timestamp_to_datetime(86_400_000_001) == datetime(2000, 1, 2, 0, 0, 0, 1, tzinfo=UTC)
    # Before the epoch is negative.
    assert pg_timestamp_to_datetime(-1) == datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert datetime_to_pg_timestamp(datetime(1970, 1, 1, tzinfo=UTC)) == -946_684_800_000_000
    # 2024-05-06 07:08:09.123456 UTC
    assert pg_timestamp_to_datetime(768_294_489_123_456) == TS
    assert datetime_to_pg_timestamp(TS) == 768_294_489_123_456


def test_timestamp_result_is_aware_utc():
    dt = pg_timestamp_to_datetime(123)
    assert dt.tzinfo is not None
    assert dt.utcoffset() == timedelta(0)


def test_datetime_to_pg_timestamp_honours_other_timezones():
    plus_two = timezone(timedelta(hours=2))
    assert datetime_to_pg_timestamp(datetime(2000, 1, 1, 2, 0, tzinfo=plus_two)) == 0


def test_timestamp_round_trip_is_exact():
    for us in (0, 1, -1, 999_999, 10**15 + 7, -(10**14) - 3):
        assert datetime_to_pg_timestamp(pg_timestamp_to_datetime(us)) == us


def test_naive_datetime_rejected():
    with pytest.raises(ValueError, match="aware"):
        datetime_to_pg_timestamp(datetime(2020, 1, 1))


def test_out_of_range_timestamp_is_value_error():
    # PostgreSQL's +infinity is INT64_MAX: not representable as a datetime.
    with pytest.raises(ValueError, match="outside the range"):
        pg_timestamp_to_datetime(2**63 - 1)


# --------------------------------------------------------------------------
# LSNs


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/16B3748", 0x16B3748),
        ("16/B374D848", (0x16 << 32) | 0xB374D848),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
        ("1/0", 2**32),
        ("0/FFFFFFFF", 2**32 - 1),
    ],
)
def test_lsn_format_and_parse_round_trip(text, value):
    assert format_lsn(value) == text
    assert parse_lsn(text) == value
    assert format_lsn(parse_lsn(text)) == text


def test_parse_lsn_accepts_what_postgres_accepts():
    # Lower case and leading zeros are accepted; output is normalised.
    assert parse_lsn("16/b374d848") == 97_500_059_720
    assert parse_lsn("00000016/0B374D84") == (0x16 << 32) | 0x0B374D84
    assert format_lsn(parse_lsn("00000016/0B374D84")) == "16/B374D84"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "/1",
        "1/",
        "16B374D848",
        " 16/B374D848",
        "16/B374D848 ",
        "16/B374D848\n",
        "16/ B374D848",
        "+16/B374D848",
        "0x16/B374D848",
        "1/2/3",
        "100000000/0",  # 9 hex digits
        "0/100000000",
        "G/0",
        "1_0/0",
        "\uff11/1",  # fullwidth digit one
    ],
)
def test_parse_lsn_rejects_bad_text(text):
    with pytest.raises(ValueError, match="invalid LSN"):
        parse_lsn(text)


def test_parse_lsn_rejects_non_str():
    with pytest.raises(TypeError):
        parse_lsn(b"0/0")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 2**64])
def test_format_lsn_rejects_out_of_range(value):
    with pytest.raises(ValueError, match="LSN range"):
        format_lsn(value)


# --------------------------------------------------------------------------
# CopyData parsing


def test_parse_xlogdata():
    payload = b"B\x00\x01\x02"
    msg = parse_copy_data(xlogdata(0x16B374D848, 0x16B374D900, TS_US, payload))
    assert isinstance(msg, XLogData)
    assert msg.data_start == 0x16B374D848
    assert msg.wal_end == 0x16B374D900
    assert msg.send_time == TS
    assert isinstance(msg.payload, memoryview)
    assert bytes(msg.payload) == payload


def test_parse_xlogdata_payload_is_zero_copy_view():
    buf = bytearray(xlogdata(1, 2, 0, b"hello"))
    msg = parse_copy_data(buf)
    buf[-1] = ord("!")
    assert bytes(msg.payload) == b"hell!"


def test_parse_xlogdata_from_memoryview_slice():
    framed = b"junk" + xlogdata(2**64 - 1, 0, -5, b"xyz")
    msg = parse_copy_data(memoryview(framed)[4:])
    assert msg == XLogData(2**64 - 1, 0, datetime(1999, 12, 31, 23, 59, 59, 999995, tzinfo=UTC), msg.payload)
    assert bytes(msg.payload) == b"xyz"


def test_parse_xlogdata_with_empty_payload():
    msg = parse_copy_data(xlogdata(5, 6, 0, b""))
    assert isinstance(msg, XLogData)
    assert bytes(msg.payload) == b""


@pytest.mark.parametrize("reply", [0, 1])
def test_parse_keepalive(reply):
    msg = parse_copy_data(keepalive(0x16B374D848, TS_US, reply))
    assert msg == Keepalive(wal_end=0x16B374D848, send_time=TS, reply_requested=bool(reply))


def test_parse_copy_data_empty():
    with pytest.raises(ProtocolError, match="empty"):
        parse_copy_data(b"")


def test_parse_copy_data_unknown_type():
    with pytest.raises(ProtocolError, match=r"unknown .*b'x'"):
        parse_copy_data(b"x" + bytes(24))


@pytest.mark.parametrize("cut", [1, 10, 24])
def test_parse_truncated_xlogdata(cut):
    with pytest.raises(ProtocolError, match=r"truncated XLogData"):
        parse_copy_data(xlogdata(1, 2, 3, b"")[:cut])


def test_parse_truncated_keepalive():
    with pytest.raises(ProtocolError, match=r"truncated primary keepalive"):
        parse_copy_data(keepalive(1, 2, 1)[:-1])


def test_parse_overlong_keepalive():
    with pytest.raises(ProtocolError, match=r"over-long primary keepalive"):
        parse_copy_data(keepalive(1, 2, 1) + b"\x00")


def test_protocol_error_is_value_error():
    assert issubclass(ProtocolError, ValueError)


# --------------------------------------------------------------------------
# Standby status update


def test_standby_status_update_layout():
    msg = standby_status_update(0x16B374D848, 0x16B374D800, 0x100, now=TS, reply_requested=True)
    assert len(msg) == 34
    assert msg[:1] == b"r"
    assert struct.unpack(">QQQqB", msg[1:]) == (
        0x16B374D848,
        0x16B374D800,
        0x100,
        TS_US,
        1,
    )


def test_standby_status_update_defaults():
    before = datetime.now(UTC)
    msg = standby_status_update(1, 2, 3)
    after = datetime.now(UTC)
    written, flushed, applied, client_time, reply = struct.unpack(">QQQqB", msg[1:])
    assert (written, flushed, applied, reply) == (1, 2, 3, 0)
    assert datetime_to_pg_timestamp(before) <= client_time <= datetime_to_pg_timestamp(after)


def test_standby_status_update_max_lsn():
    msg = standby_status_update(2**64 - 1, 0, 0, now=PG_EPOCH)
    assert msg == b"r" + b"\xff" * 8 + bytes(8) * 3 + b"\x00"


def test_standby_status_update_rejects_bad_lsn():
    with pytest.raises(ValueError, match="flushed_lsn"):
        standby_status_update(0, -1, 0, now=TS)
    with pytest.raises(ValueError, match="applied_lsn"):
        standby_status_update(0, 0, 2**64, now=TS)
