"""Random and truncated input through the stream decoders: only their own one-line errors come out.

The pgoutput decoder gets random bytes and valid messages cut short or with bytes changed; the
PostgreSQL translator gets whole CopyData streams of such messages; the binlog translator gets
sequences of real mysql-replication event objects whose attributes are random. Whatever they
hold, the decoders answer with a message or a ``DecodeError`` / ``SourceError`` on one line,
never an ``IndexError``, ``struct.error``, ``UnicodeDecodeError`` or ``KeyError``.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.errors import DecodeError, SourceError
from cdc.sources.base import SourceItem
from cdc.sources.mysql.translate import Translator as BinlogTranslator
from cdc.sources.postgres import pgoutput
from cdc.sources.postgres.translate import Translator as PgTranslator
from cdc.sources.postgres.values import ValueDecoder
from tests.unit.test_mysql_translate import _event
from tests.unit.test_pg_protocol import keepalive, xlogdata
from tests.unit.test_pg_translate import (
    RELID,
    ROW_1,
    TS_US,
    begin,
    commit,
    delete,
    insert,
    logical_message,
    relation,
    row,
    truncate,
    update,
)
from tests.unit.test_pgoutput import cstr

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHERE = "source fuzz (db)"


def _one_line_error(exc: BaseException) -> None:
    assert "\n" not in str(exc) and str(exc), repr(exc)


# -- pgoutput ----------------------------------------------------------------------------

VALID_PAYLOADS = [
    begin(),
    commit(),
    relation(),
    relation(identity="d"),
    insert(row(*ROW_1)),
    update(row(*ROW_1), row(b"1", b"x", None, ..., b"2024-05-06 07:08:09+00")),
    update(None, row(*ROW_1)),
    delete(row(*ROW_1)),
    b"D" + struct.pack(">I", RELID) + b"K" + row(b"1", None, None, None, None),
    truncate(RELID, RELID + 1),
    logical_message(False, 0x155B460, "cdc.heartbeat", b""),
    logical_message(True, 0x155B460, "cdc.sync", b'{"target": "t", "source": "s", "txn_key": "k", "seq": 1}'),
    b"O" + struct.pack(">Q", 0x155B420) + cstr("origin"),
    b"Y" + struct.pack(">I", 16500) + cstr("public") + cstr("stage"),
]


@st.composite
def damaged_payloads(draw: st.DrawFn) -> bytes:
    """A valid pgoutput message, cut short, with some bytes changed, or both; or random bytes."""
    if draw(st.booleans()):
        kind = draw(st.sampled_from(b"BCORYIUDTMSEcAbPKrpz\x00"))
        return bytes([kind]) + draw(st.binary(max_size=48))
    payload = bytearray(draw(st.sampled_from(VALID_PAYLOADS)))
    for _ in range(draw(st.integers(0, 3))):
        payload[draw(st.integers(0, len(payload) - 1))] = draw(st.integers(0, 255))
    return bytes(payload[: draw(st.integers(0, len(payload)))])


@FUZZ
@given(damaged_payloads())
def test_pgoutput_decode_gives_a_message_or_a_decode_error(payload: bytes):
    try:
        pgoutput.decode(payload)
    except DecodeError as exc:
        _one_line_error(exc)


class _Keys:
    """A catalog whose answers vary: a key, no key, or no such relation (dropped)."""

    def __init__(self, answers: list[list[str] | None]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, relid: int) -> list[str] | None:
        self.calls += 1
        return self.answers[self.calls % len(self.answers)]


_FRAMES = st.one_of(
    damaged_payloads().map(lambda payload: xlogdata(0x155B420, 0x155B450, TS_US, payload)),
    st.sampled_from(VALID_PAYLOADS).map(lambda payload: xlogdata(0x155B420, 0x155B450, TS_US, payload)),
    st.builds(keepalive, st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1), st.integers(0, 255)),
    st.binary(max_size=40),
)
_KEY_ANSWERS = st.lists(st.sampled_from([["id"], ["id", "name"], [], None, ["gone"]]), min_size=1, max_size=3)


@FUZZ
@given(st.lists(_FRAMES, max_size=12), _KEY_ANSWERS, st.booleans())
def test_the_pg_translator_gives_items_or_a_source_error(frames: list[bytes], answers, captured: bool):
    translate = PgTranslator(WHERE, _Keys(answers), ValueDecoder(), {("public", "customers")} if captured else None)
    translate.missing, translate.backlog_end = {("public", "gone")}, 0x155B450
    items: list[SourceItem] = []
    try:
        for data in frames:
            translate.copy_data(data, items)
    except SourceError as exc:
        _one_line_error(exc)


# -- binlog ------------------------------------------------------------------------------

COLUMNS = [
    Column(name="id", type=FIELD_TYPE.LONG, is_primary=True),
    Column(name="seen", type=FIELD_TYPE.TIMESTAMP2),
    Column(name="flags", type=FIELD_TYPE.BIT),
    Column(name="tags", type=FIELD_TYPE.SET),
    Column(name="opens", type=FIELD_TYPE.TIME2),
    Column(name="doc", type=FIELD_TYPE.BLOB),
]
TABLES = {
    ("erp", "customers"): (["id"], [("id", "int"), ("seen", "timestamp"), ("doc", "json")]),
    ("erp", "keyless"): ([], [("note", "text")]),
    ("erp", "dropped"): ([], []),
}
_TEXT = st.text(max_size=24)
_VALUE = st.one_of(
    st.none(),
    st.integers(),
    _TEXT,
    st.binary(max_size=8),
    st.sampled_from(["0101", "12", "", "vip,old"]),
    st.datetimes(),
    st.timedeltas(),
    st.frozensets(_TEXT, max_size=2),
)
_IMAGE = st.dictionaries(st.sampled_from(["id", "seen", "flags", "tags", "opens", "doc", "target", "seq"]), _VALUE)
_ROW = st.dictionaries(st.sampled_from(["values", "before_values", "after_values", "none_sources"]), _IMAGE)
_LOG_POS = st.integers(-1, 2**40)
_TIMESTAMP = st.one_of(st.integers(0, 2_000_000_000), st.integers(-(2**70), 2**70))


def _rows_event(cls: type, log_pos: int, timestamp: int, table: tuple[str, str], rows: list[dict]) -> Any:
    event = _event(cls, log_pos, schema=table[0], table=table[1], table_id=21, columns=COLUMNS)
    event.timestamp = timestamp
    event._RowsEvent__rows = rows
    return event


def _simple(cls: type, log_pos: int, timestamp: int, **attributes: Any) -> Any:
    event = _event(cls, log_pos, **attributes)
    event.timestamp = timestamp
    return event


_EVENTS = st.one_of(
    st.builds(
        _rows_event,
        st.sampled_from([WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent]),
        _LOG_POS,
        _TIMESTAMP,
        st.sampled_from([*TABLES, ("cdc", "sync_positions"), ("erp", "other")]),
        st.lists(_ROW, max_size=3),
    ),
    st.builds(
        lambda name: _simple(RotateEvent, 0, 0, position=4, next_binlog=name), st.one_of(_TEXT, st.just("b.000002"))
    ),
    st.builds(
        lambda pos, ts, gtid: _simple(MariadbGtidEvent, pos, ts, gtid=gtid),
        _LOG_POS,
        _TIMESTAMP,
        st.one_of(_TEXT, st.just("0-1-43"), st.just("x-1")),
    ),
    st.builds(
        lambda pos, ts, gno: _simple(GtidEvent, pos, ts, sid=b"\x3e" * 16, gno=gno), _LOG_POS, _TIMESTAMP, st.integers()
    ),
    st.builds(
        lambda pos, ts, text: _simple(QueryEvent, pos, ts, query=text, schema=b"erp"),
        _LOG_POS,
        _TIMESTAMP,
        st.one_of(_TEXT, st.sampled_from(["BEGIN", "COMMIT", "DROP TABLE dropped"]), st.none()),
    ),
    st.builds(lambda pos, ts: _simple(XidEvent, pos, ts, xid=1), _LOG_POS, _TIMESTAMP),
    st.builds(
        lambda pos, ident: _simple(HeartbeatLogEvent, pos, 0, ident=ident),
        _LOG_POS,
        st.one_of(_TEXT, st.just("b.000003")),
    ),
)


@FUZZ
@given(
    st.lists(_EVENTS, max_size=10),
    st.sampled_from(["0-1-42", "", "b.000001:4", "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-42"]),
    st.booleans(),
)
def test_the_binlog_translator_gives_items_or_a_source_error(events: list[Any], position: str, is_mariadb: bool):
    translate = BinlogTranslator(WHERE, {*TABLES}, "sync-erp-1", lambda schema, table: TABLES[(schema, table)])
    translate.restart(position, is_mariadb, (2, 100), {("erp", "gone")}, (3, 0))
    items: list[SourceItem] = []
    try:
        for event in events:
            translate.handle(event, items)
    except SourceError as exc:
        _one_line_error(exc)
    assert all(not isinstance(item, datetime) for item in items)
