"""CopyData messages through ``cdc.sources.postgres.translate.Translator``, without a server.

The messages are real wire bytes: pgoutput payloads built with the helpers of
``tests.unit.test_pgoutput``, framed as XLogData / keepalive CopyData with those of
``tests.unit.test_pg_protocol``.
"""

from __future__ import annotations

import json
import re
import struct
from decimal import Decimal
from types import EllipsisType

import pytest

from cdc.errors import SourceError
from cdc.model import SYNC_MESSAGE_PREFIX, Idle, RowChange, TxnBegin, TxnCommit, WriteBack
from cdc.sources.base import SourceItem
from cdc.sources.postgres.protocol import format_lsn
from cdc.sources.postgres.translate import Translator
from cdc.sources.postgres.values import ValueDecoder
from cdc.values import RawJson
from tests.unit.test_pg_protocol import keepalive, xlogdata
from tests.unit.test_pgoutput import NULL, TOAST, TS, TS_US, cstr, relation_msg, text_value, tuple_data

WHERE = "source app (postgresql://cdc@db/app)"
RELID = 16391
FINAL_LSN = 0x155B420
END_LSN = 0x155B450
XID = 743
TXN_KEY = f"{FINAL_LSN:016X}"
# id int4, name text, amount numeric, doc jsonb, seen timestamptz
COLUMNS = [(1, "id", 23, -1), (0, "name", 25, -1), (0, "amount", 1700, -1), (0, "doc", 3802, -1), (0, "seen", 1184, -1)]
ROW_1 = (b"1", "Zoë".encode(), b"12.50", b'{"a": 1}', b"2024-05-06 07:08:09.123456+00")
ROW_1_PYTHON = {"id": 1, "name": "Zoë", "amount": Decimal("12.50"), "doc": RawJson('{"a": 1}'), "seen": TS}
ROW_1_NATIVE = {"id": "1", "name": "Zoë", "amount": "12.50", "doc": '{"a": 1}', "seen": "2024-05-06 07:08:09.123456+00"}


# -- wire messages -----------------------------------------------------------------------


def row(*values: bytes | EllipsisType | None) -> bytes:
    """TupleData of text values; None is NULL, ... an unchanged TOAST value."""
    return tuple_data(*(NULL if value is None else TOAST if value is ... else text_value(value) for value in values))


def begin(final_lsn: int = FINAL_LSN, xid: int = XID) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, TS_US, xid)


def commit(end_lsn: int = END_LSN) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, FINAL_LSN, end_lsn, TS_US)


def relation(relid: int = RELID, identity: str = "f", namespace: str = "public", name: str = "customers") -> bytes:
    return relation_msg(relid, namespace, name, identity, COLUMNS)


def insert(new: bytes, relid: int = RELID) -> bytes:
    return b"I" + struct.pack(">I", relid) + b"N" + new


def update(old: bytes | None, new: bytes, relid: int = RELID) -> bytes:
    return b"U" + struct.pack(">I", relid) + (b"O" + old if old is not None else b"") + b"N" + new


def delete(old: bytes, relid: int = RELID) -> bytes:
    return b"D" + struct.pack(">I", relid) + b"O" + old


def truncate(*relids: int) -> bytes:
    return b"T" + struct.pack(f">IB{len(relids)}I", len(relids), 0, *relids)


def logical_message(transactional: bool, lsn: int, prefix: str, content: bytes) -> bytes:
    return b"M" + struct.pack(">BQ", transactional, lsn) + cstr(prefix) + struct.pack(">i", len(content)) + content


def frame(payload: bytes, wal_end: int = END_LSN) -> bytes:
    return xlogdata(FINAL_LSN, wal_end, TS_US, payload)


# -- helpers -----------------------------------------------------------------------------


class Keys:
    """The injected primary-key lookup, recording the relids it was asked about."""

    def __init__(self, key: list[str]) -> None:
        self.key = key
        self.asked: list[int] = []

    def __call__(self, relid: int) -> list[str]:
        self.asked.append(relid)
        return self.key


def translator(key: list[str] | None = None) -> Translator:
    return Translator(WHERE, Keys(["id"] if key is None else key), ValueDecoder())


def feed(translate: Translator, *messages: bytes) -> list[SourceItem]:
    items: list[SourceItem] = []
    for message in messages:
        translate.copy_data(message, items)
    return items


def in_txn(*payloads: bytes) -> list[bytes]:
    return [frame(begin()), frame(relation()), *map(frame, payloads), frame(commit())]


def changes(items: list[SourceItem]) -> list[RowChange]:
    return [item for item in items if isinstance(item, RowChange)]


# -- transactions and row changes --------------------------------------------------------


def test_an_insert_is_a_transaction_with_its_row_change():
    items = feed(translator(), *in_txn(insert(row(*ROW_1))))
    assert items == [
        TxnBegin(TXN_KEY, format_lsn(FINAL_LSN), str(XID), TS),
        RowChange("public", "customers", "insert", {"id": 1}, None, ROW_1_PYTHON, None, ROW_1_NATIVE),
        TxnCommit(TXN_KEY, format_lsn(END_LSN)),
    ]


def test_an_update_has_both_images():
    new = (b"1", b"Zoe", b"13", None, b"2024-05-06 07:08:09.123456+00")
    [change] = changes(feed(translator(), *in_txn(update(row(*ROW_1), row(*new)))))
    assert (change.op, change.key, change.before, change.native_before) == (
        "update",
        {"id": 1},
        ROW_1_PYTHON,
        ROW_1_NATIVE,
    )
    assert change.after == {"id": 1, "name": "Zoe", "amount": Decimal(13), "doc": None, "seen": TS}
    assert change.native_after == {
        "id": "1",
        "name": "Zoe",
        "amount": "13",
        "doc": None,
        "seen": "2024-05-06 07:08:09.123456+00",
    }


def test_an_update_of_the_key_keys_the_change_by_the_new_row():
    [change] = changes(feed(translator(), *in_txn(update(row(*ROW_1), row(b"40", *ROW_1[1:])))))
    assert change.key == {"id": 40}
    assert change.before is not None and change.before["id"] == 1


def test_an_unchanged_toast_value_is_taken_from_the_old_row():
    big = b"x" * 5000
    old = row(b"1", big, b"1", None, None)
    [change] = changes(feed(translator(), *in_txn(update(old, row(b"1", ..., b"2", None, None)))))
    assert change.after is not None and change.native_after is not None
    assert change.after["name"] == change.native_after["name"] == big.decode()
    assert change.after["amount"] == Decimal(2)


def test_an_unchanged_toast_value_without_the_old_row_is_fatal():
    translate = translator()
    feed(translate, frame(begin()), frame(relation()))
    with pytest.raises(SourceError) as caught:
        feed(translate, frame(update(None, row(b"1", ..., b"2", None, None))))
    assert caught.value.fatal
    assert str(caught.value) == (
        f"{WHERE}: table public.customers: an unchanged TOAST value of 'name' came "
        f"without the old row; set REPLICA IDENTITY FULL"
    )


def test_a_delete_has_the_before_image_only():
    [change] = changes(feed(translator(), *in_txn(delete(row(*ROW_1)))))
    assert change == RowChange("public", "customers", "delete", {"id": 1}, ROW_1_PYTHON, None, ROW_1_NATIVE, None)


def test_a_composite_key_is_in_key_order():
    translate = translator(["name", "id"])
    [change] = changes(feed(translate, *in_txn(insert(row(*ROW_1)))))
    assert list(change.key.items()) == [("name", "Zoë"), ("id", 1)]


def test_a_truncate_is_one_change_per_table():
    other = relation_msg(16400, "sales", "orders", "f", COLUMNS)
    items = feed(translator(), frame(begin()), frame(relation()), frame(other), frame(truncate(RELID, 16400)))
    assert items[1:] == [
        RowChange("public", "customers", "truncate", {}, None, None),
        RowChange("sales", "orders", "truncate", {}, None, None),
    ]


def test_the_primary_key_is_looked_up_once_per_relation_message():
    translate = translator()
    feed(translate, *in_txn(insert(row(*ROW_1)), insert(row(b"2", None, None, None, None))))
    assert translate._primary_key.asked == [RELID]  # type: ignore[attr-defined]


def test_restart_forgets_the_relations_and_the_transaction():
    translate = translator()
    feed(translate, frame(begin()), frame(relation()))
    translate.restart()
    assert not translate.in_transaction
    with pytest.raises(SourceError, match="an insert of relation 16391 came before its Relation message"):
        feed(translate, frame(insert(row(*ROW_1))))


# -- relations cdc cannot capture --------------------------------------------------------


def test_a_relation_without_a_primary_key_is_fatal():
    with pytest.raises(SourceError) as caught:
        feed(translator([]), frame(relation()))
    assert caught.value.fatal
    assert str(caught.value) == (
        f"{WHERE}: table public.customers has no primary key: add one "
        f"(ALTER TABLE ... ADD PRIMARY KEY (...)) or remove it from 'tables'"
    )


@pytest.mark.parametrize("identity", ["d", "n", "i"])
def test_a_relation_without_replica_identity_full_is_fatal(identity: str):
    with pytest.raises(SourceError) as caught:
        feed(translator(), frame(relation(identity=identity, namespace="Sales", name="order items")))
    assert caught.value.fatal
    assert str(caught.value) == (
        f"{WHERE}: table Sales.order items is not REPLICA IDENTITY FULL: run "
        f'ALTER TABLE "Sales"."order items" REPLICA IDENTITY FULL;'
    )


# -- idle positions, drain, write-back markers -------------------------------------------


def test_a_non_transactional_message_outside_a_transaction_is_idle():
    items = feed(translator(), frame(logical_message(False, 0x2000, "cdc.heartbeat", b"")))
    assert items == [Idle(format_lsn(0x2000), "")]


def test_a_non_transactional_message_inside_a_transaction_is_not_idle():
    translate = translator()
    items = feed(translate, frame(begin()), frame(logical_message(False, 0x2000, "cdc.heartbeat", b"")))
    assert [type(item) for item in items] == [TxnBegin]


@pytest.mark.parametrize("reply", [0, 1])
def test_a_keepalive_outside_a_transaction_is_idle(reply: int):
    translate = translator()
    items: list[SourceItem] = []
    assert translate.copy_data(keepalive(0x3000, TS_US, reply), items) is bool(reply)
    assert items == [Idle(format_lsn(0x3000), "")]
    assert translate.received == 0x3000


def test_a_keepalive_inside_a_transaction_asks_for_a_reply_without_idle():
    translate = translator()
    items = feed(translate, frame(begin()))
    assert translate.copy_data(keepalive(0x3000, TS_US, 1), items) is True
    assert [type(item) for item in items] == [TxnBegin]


def test_received_is_the_highest_wal_end_seen():
    translate = translator()
    feed(translate, frame(begin(), wal_end=0x5000), keepalive(0x4000, TS_US, 0), frame(relation(), wal_end=0x4800))
    assert translate.received == 0x5000


def test_the_drain_target_reached_by_a_keepalive_is_drained():
    translate = translator()
    translate.restart(drain_target=0x3000)
    items = feed(translate, keepalive(0x2FFF, TS_US, 0), keepalive(0x3000, TS_US, 0))
    assert items == [Idle(format_lsn(0x2FFF), ""), Idle(format_lsn(0x3000), "drained")]


def test_a_commit_reaching_the_drain_target_is_followed_by_drained():
    translate = translator()
    translate.restart(drain_target=END_LSN)
    items = feed(translate, *in_txn(insert(row(*ROW_1))))
    assert items[-2:] == [TxnCommit(TXN_KEY, format_lsn(END_LSN)), Idle(format_lsn(END_LSN), "drained")]


def test_a_commit_before_the_drain_target_is_not_followed_by_idle():
    translate = translator()
    translate.restart(drain_target=END_LSN + 1)
    items = feed(translate, *in_txn(insert(row(*ROW_1))))
    assert isinstance(items[-1], TxnCommit)


def test_a_write_back_marker_is_passed_on():
    marker = WriteBack("sync-app", "crm", "0000000000000042", 7)
    items = feed(
        translator(),
        *in_txn(logical_message(True, FINAL_LSN, SYNC_MESSAGE_PREFIX, marker.to_json().encode()), insert(row(*ROW_1))),
    )
    assert [type(item) for item in items] == [TxnBegin, WriteBack, RowChange, TxnCommit]
    assert items[1] == marker


@pytest.mark.parametrize(
    ("prefix", "content"),
    [
        (SYNC_MESSAGE_PREFIX, b"not json"),
        (SYNC_MESSAGE_PREFIX, json.dumps({"target": "t"}).encode()),
        ("other.prefix", WriteBack("t", "s", "k", 1).to_json().encode()),
    ],
)
def test_other_transactional_messages_are_ignored(prefix: str, content: bytes):
    items = feed(translator(), *in_txn(logical_message(True, FINAL_LSN, prefix, content)))
    assert [type(item) for item in items] == [TxnBegin, TxnCommit]


# -- what cannot be decoded --------------------------------------------------------------


def test_an_unknown_copy_data_frame_is_a_fatal_one_line_error():
    with pytest.raises(SourceError) as caught:
        feed(translator(), b"x" + bytes(24))
    assert caught.value.fatal
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: cannot decode the stream: unknown replication CopyData message type b'x'")
    assert "\n" not in message


@pytest.mark.parametrize(
    "data", [b"", b"w" + bytes(10), keepalive(1, 2, 0) + b"\x00", frame(b"Z\x00\x00"), frame(begin()[:-1])]
)
def test_an_undecodable_frame_or_message_is_fatal(data: bytes):
    with pytest.raises(SourceError, match=f"^{re.escape(WHERE)}: cannot decode the stream: ") as caught:
        feed(translator(), data)
    assert caught.value.fatal
    assert "\n" not in str(caught.value)
