"""Tests for cdc.sources.postgres.pgoutput: decoding pgoutput proto_version 1 messages."""

from __future__ import annotations

import copy
import pickle
import struct
from datetime import UTC, datetime

import pytest

from cdc.sources.postgres import pgoutput
from cdc.sources.postgres.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    DecodeError,
    Delete,
    Insert,
    Message,
    Origin,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
)

UTC = UTC

# 2024-05-06 07:08:09.123456 UTC in microseconds since 2000-01-01 UTC.
TS = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
TS_US = 768_294_489_123_456

LSN = (0x16 << 32) | 0xB374D848  # "16/B374D848"


# --------------------------------------------------------------------------
# Hand-built wire format helpers (independent of the decoder's structs).


def cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def text_value(raw: bytes) -> bytes:
    return b"t" + struct.pack(">i", len(raw)) + raw


def binary_value(raw: bytes) -> bytes:
    return b"b" + struct.pack(">i", len(raw)) + raw


NULL = b"n"
TOAST = b"u"


def tuple_data(*columns: bytes) -> bytes:
    return struct.pack(">h", len(columns)) + b"".join(columns)


def relation_msg(relid, namespace, name, identity, columns) -> bytes:
    out = b"R" + struct.pack(">I", relid) + cstr(namespace) + cstr(name)
    out += identity.encode() + struct.pack(">h", len(columns))
    for flags, col_name, oid, typmod in columns:
        out += struct.pack(">B", flags) + cstr(col_name) + struct.pack(">Ii", oid, typmod)
    return out


ROW = tuple_data(
    text_value(b"42"),
    NULL,
    TOAST,
    text_value("héllo €😀".encode()),
    binary_value(b"\x00\x00\x00\x2a"),
    text_value(b""),
)
ROW_DECODED = (
    b"42",
    None,
    UNCHANGED_TOAST,
    "héllo €😀".encode(),
    b"\x00\x00\x00\x2a",
    b"",
)


# --------------------------------------------------------------------------
# Transaction framing


def test_begin():
    msg = decode(b"B" + struct.pack(">QqI", LSN, TS_US, 0xFFFFFFFE))
    assert msg == Begin(final_lsn=LSN, commit_ts=TS, xid=0xFFFFFFFE)


def test_commit():
    msg = decode(b"C" + struct.pack(">BQQq", 0, LSN, LSN + 0x30, TS_US))
    assert msg == Commit(flags=0, commit_lsn=LSN, end_lsn=LSN + 0x30, commit_ts=TS)


def test_origin():
    msg = decode(b"O" + struct.pack(">Q", LSN) + cstr("pg_16384_ørigin"))
    assert msg == Origin(commit_lsn=LSN, name="pg_16384_ørigin")


def test_real_begin_message_and_commit_from_postgres_15():
    # Captured with pg_logical_slot_peek_binary_changes on PostgreSQL 15.
    begin = decode(bytes.fromhex("42000000000155b420000303d37521c09c000002e7"))
    commit = decode(bytes.fromhex("4300000000000155b420000000000155b450000303d37521c09c"))
    stamp = datetime(2026, 11, 22, 3, 1, 8, 261020, tzinfo=UTC)
    assert begin == Begin(final_lsn=0x155B420, commit_ts=stamp, xid=743)
    assert commit == Commit(flags=0, commit_lsn=0x155B420, end_lsn=0x155B450, commit_ts=stamp)


# --------------------------------------------------------------------------
# Relation and Type


def test_relation_with_multibyte_names():
    payload = relation_msg(
        16391,
        "sché",
        "tàble",
        "d",
        [
            (1, "id", 23, -1),
            (0, "naïve", 25, -1),
            (0, "n", 1700, 655366),
            (0, "名前", 1043, 16),
        ],
    )
    msg = decode(payload)
    assert msg == Relation(
        relid=16391,
        namespace="sché",
        name="tàble",
        replica_identity="d",
        columns=(
            Column(flags=1, name="id", type_oid=23, type_modifier=-1),
            Column(flags=0, name="naïve", type_oid=25, type_modifier=-1),
            Column(flags=0, name="n", type_oid=1700, type_modifier=655366),
            Column(flags=0, name="名前", type_oid=1043, type_modifier=16),
        ),
    )
    assert [c.is_key for c in msg.columns] == [True, False, False, False]
    assert isinstance(msg.columns, tuple)


@pytest.mark.parametrize("identity", ["d", "n", "f", "i"])
def test_relation_replica_identity_codes(identity):
    msg = decode(relation_msg(1, "", "t", identity, [(1, "a", 23, -1)]))
    assert msg.replica_identity == identity
    assert msg.namespace == ""  # pg_catalog is sent as an empty string


def test_relation_without_columns():
    msg = decode(relation_msg(7, "public", "empty", "n", []))
    assert msg == Relation(7, "public", "empty", "n", ())


def test_relation_large_oid_is_unsigned():
    msg = decode(relation_msg(0xFFFFFFF0, "s", "t", "f", [(1, "c", 0xFFFFFFFF, -1)]))
    assert msg.relid == 0xFFFFFFF0
    assert msg.columns[0].type_oid == 0xFFFFFFFF


def test_real_relation_from_postgres_15():
    # CREATE TABLE "sché"."tàble" (id int PRIMARY KEY, "naïve" text, big text,
    #   m mood, n numeric(10,2), v varchar(12)); captured from PostgreSQL 15.
    payload = bytes.fromhex(
        "5200004007736368c3a90074c3a0626c65006400060169640000000017ffffffff"
        "006e61c3af76650000000019ffffffff006269670000000019ffffffff006d0000"
        "004002ffffffff006e00000006a4000a00060076000000041300000010"
    )
    assert decode(payload) == Relation(
        relid=16391,
        namespace="sché",
        name="tàble",
        replica_identity="d",
        columns=(
            Column(1, "id", 23, -1),
            Column(0, "naïve", 25, -1),
            Column(0, "big", 25, -1),
            Column(0, "m", 16386, -1),
            Column(0, "n", 1700, 655366),
            Column(0, "v", 1043, 16),
        ),
    )


def test_type():
    msg = decode(b"Y" + struct.pack(">I", 16386) + cstr("públic") + cstr("mood"))
    assert msg == Type(oid=16386, namespace="públic", name="mood")


def test_real_type_from_postgres_15():
    payload = bytes.fromhex("59000040027075626c6963006d6f6f6400")
    assert decode(payload) == Type(16386, "public", "mood")


# --------------------------------------------------------------------------
# Row changes


def test_insert_with_all_value_kinds():
    msg = decode(b"I" + struct.pack(">I", 16391) + b"N" + ROW)
    assert msg == Insert(relid=16391, new=ROW_DECODED)
    assert msg.new[1] is None
    assert msg.new[2] is UNCHANGED_TOAST
    assert msg.new[3].decode("utf-8") == "héllo €😀"
    assert all(type(v) is bytes for v in (msg.new[0], msg.new[3], msg.new[4], msg.new[5]))


def test_insert_with_zero_columns():
    assert decode(b"I" + struct.pack(">I", 5) + b"N" + tuple_data()) == Insert(5, ())


def test_insert_from_memoryview_and_bytearray():
    payload = b"I" + struct.pack(">I", 9) + b"N" + tuple_data(text_value(b"x"))
    framed = b"w" + bytes(24) + payload  # as inside an XLogData message
    assert decode(memoryview(framed)[25:]) == Insert(9, (b"x",))
    assert decode(bytearray(payload)) == Insert(9, (b"x",))


def test_insert_large_value():
    big = b"ab" * 100_000
    msg = decode(b"I" + struct.pack(">I", 1) + b"N" + tuple_data(text_value(big), NULL))
    assert msg.new == (big, None)


def test_update_without_old_tuple():
    new = tuple_data(text_value(b"1"), text_value(b"changed"), TOAST)
    msg = decode(b"U" + struct.pack(">I", 16391) + b"N" + new)
    assert msg == Update(relid=16391, new=(b"1", b"changed", UNCHANGED_TOAST), old=None, key=None)


def test_update_with_key_tuple():
    key = tuple_data(text_value(b"1"), NULL, NULL)
    new = tuple_data(text_value(b"2"), text_value("ü".encode()), TOAST)
    msg = decode(b"U" + struct.pack(">I", 16391) + b"K" + key + b"N" + new)
    assert msg == Update(
        relid=16391,
        new=(b"2", "ü".encode(), UNCHANGED_TOAST),
        old=None,
        key=(b"1", None, None),
    )


def test_update_with_full_old_tuple():
    # REPLICA IDENTITY FULL: the old tuple carries the TOASTed value even
    # though the new tuple marks it unchanged (as seen on PostgreSQL 15).
    big = b"x" * 5000
    old = tuple_data(text_value(b"1"), text_value(big), text_value(b"a"))
    new = tuple_data(text_value(b"1"), TOAST, text_value(b"b"))
    msg = decode(b"U" + struct.pack(">I", 16398) + b"O" + old + b"N" + new)
    assert msg == Update(
        relid=16398,
        new=(b"1", UNCHANGED_TOAST, b"b"),
        old=(b"1", big, b"a"),
        key=None,
    )


def test_delete_with_key_tuple():
    key = tuple_data(text_value(b"2"), NULL, NULL)
    msg = decode(b"D" + struct.pack(">I", 16391) + b"K" + key)
    assert msg == Delete(relid=16391, old=None, key=(b"2", None, None))


def test_delete_with_full_old_tuple():
    old = tuple_data(text_value(b"1"), binary_value(b"\xff\x00"), NULL)
    msg = decode(b"D" + struct.pack(">I", 16398) + b"O" + old)
    assert msg == Delete(relid=16398, old=(b"1", b"\xff\x00", None), key=None)


def test_truncate_several_relations_with_both_options():
    msg = decode(b"T" + struct.pack(">IBIII", 3, 1 | 2, 16409, 16403, 0xFFFFFFFF))
    assert msg == Truncate(relids=(16409, 16403, 0xFFFFFFFF), cascade=True, restart_identity=True)


@pytest.mark.parametrize(
    ("options", "cascade", "restart_identity"),
    [(0, False, False), (1, True, False), (2, False, True), (3, True, True)],
)
def test_truncate_option_bits(options, cascade, restart_identity):
    msg = decode(b"T" + struct.pack(">IBI", 1, options, 16398))
    assert msg == Truncate((16398,), cascade, restart_identity)


# --------------------------------------------------------------------------
# Logical decoding messages


def test_transactional_message():
    content = "ünïcode payload".encode() + b"\x00\xff"
    payload = b"M" + struct.pack(">BQ", 1, LSN) + cstr("cdc/héartbeat") + struct.pack(">i", len(content)) + content
    assert decode(payload) == Message(transactional=True, lsn=LSN, prefix="cdc/héartbeat", content=content)


def test_non_transactional_message_with_empty_content():
    payload = b"M" + struct.pack(">BQ", 0, 123) + cstr("p") + struct.pack(">i", 0)
    msg = decode(payload)
    assert msg == Message(transactional=False, lsn=123, prefix="p", content=b"")
    assert type(msg.content) is bytes


def test_real_messages_from_postgres_15():
    tx = bytes.fromhex("4d01000000000155b4207072656669780000000007636f6e74656e74")
    non_tx = bytes.fromhex("4d00000000000155b3e07072656669780000000007636f6e74656e74")
    assert decode(tx) == Message(True, 0x155B420, "prefix", b"content")
    assert decode(non_tx) == Message(False, 0x155B3E0, "prefix", b"content")


# --------------------------------------------------------------------------
# UNCHANGED_TOAST sentinel and dataclasses


def test_unchanged_toast_sentinel():
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"
    assert UNCHANGED_TOAST is not None
    assert UNCHANGED_TOAST != b""
    assert type(UNCHANGED_TOAST)() is UNCHANGED_TOAST
    assert copy.copy(UNCHANGED_TOAST) is UNCHANGED_TOAST
    assert copy.deepcopy(UNCHANGED_TOAST) is UNCHANGED_TOAST
    assert pickle.loads(pickle.dumps(UNCHANGED_TOAST)) is UNCHANGED_TOAST


def test_messages_are_frozen_and_slotted():
    msg = decode(b"I" + struct.pack(">I", 1) + b"N" + tuple_data(NULL))
    with pytest.raises(AttributeError):
        msg.relid = 2  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")
    col = Column(1, "id", 23, -1)
    assert not hasattr(col, "__dict__")
    assert Column(3, "x", 23, -1).is_key and not Column(2, "x", 23, -1).is_key


# --------------------------------------------------------------------------
# Errors


def test_decode_error_is_value_error():
    assert issubclass(DecodeError, ValueError)


def test_empty_message():
    with pytest.raises(DecodeError, match="empty"):
        decode(b"")


def test_unknown_message_type():
    with pytest.raises(DecodeError, match=r"unknown pgoutput message type b'Z' at offset 0"):
        decode(b"Z\x00\x00")


@pytest.mark.parametrize("kind", ["S", "E", "c", "A", "b", "P", "K", "r", "p"])
def test_later_protocol_messages_are_not_supported(kind):
    with pytest.raises(DecodeError, match=rf"'{kind}' .*not supported with proto_version 1"):
        decode(kind.encode() + bytes(30))


def _insert_payload() -> bytes:
    return b"I" + struct.pack(">I", 16391) + b"N" + ROW


def _update_payload() -> bytes:
    key = tuple_data(text_value(b"1"), NULL)
    return b"U" + struct.pack(">I", 3) + b"K" + key + b"N" + tuple_data(text_value(b"2"), TOAST)


VALID_MESSAGES = {
    "B": b"B" + struct.pack(">QqI", LSN, TS_US, 7),
    "C": b"C" + struct.pack(">BQQq", 0, LSN, LSN + 1, TS_US),
    "O": b"O" + struct.pack(">Q", LSN) + cstr("origin"),
    "R": relation_msg(1, "sché", "t", "d", [(1, "id", 23, -1), (0, "v", 25, -1)]),
    "Y": b"Y" + struct.pack(">I", 1) + cstr("s") + cstr("t"),
    "I": _insert_payload(),
    "U": _update_payload(),
    "D": b"D" + struct.pack(">I", 3) + b"O" + tuple_data(text_value(b"1"), NULL),
    "T": b"T" + struct.pack(">IBII", 2, 3, 10, 11),
    "M": b"M" + struct.pack(">BQ", 1, LSN) + cstr("p") + struct.pack(">i", 3) + b"abc",
}


@pytest.mark.parametrize("kind", sorted(VALID_MESSAGES))
def test_every_truncation_is_a_decode_error(kind):
    payload = VALID_MESSAGES[kind]
    decode(payload)  # the full message is valid
    for cut in range(1, len(payload)):
        with pytest.raises(DecodeError, match=rf"'{kind}' .*at offset \d+"):
            decode(payload[:cut])


@pytest.mark.parametrize("kind", sorted(VALID_MESSAGES))
def test_trailing_bytes_are_a_decode_error(kind):
    payload = VALID_MESSAGES[kind]
    with pytest.raises(DecodeError, match=rf"trailing bytes in pgoutput '{kind}'"):
        decode(payload + b"\x00")


def test_truncated_value_reports_offset():
    payload = b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 10) + b"abc"
    with pytest.raises(
        DecodeError,
        match=r"invalid length 10 in pgoutput 'I' \(Insert\) message at offset 8 \(message is 16 bytes\)",
    ):
        decode(payload)


def test_negative_value_length():
    payload = b"I" + struct.pack(">I", 1) + b"N" + tuple_data(b"t" + struct.pack(">i", -1))
    with pytest.raises(DecodeError, match="invalid length -1"):
        decode(payload)


def test_unknown_tuple_value_kind():
    payload = b"I" + struct.pack(">I", 1) + b"N" + tuple_data(NULL, b"x")
    with pytest.raises(DecodeError, match=r"unknown column value kind b'x' .* at offset 9"):
        decode(payload)


def test_insert_without_new_tuple_marker():
    with pytest.raises(DecodeError, match=r"expected b'N' tuple, got b'K'.*offset 5"):
        decode(b"I" + struct.pack(">I", 1) + b"K" + tuple_data(NULL))


def test_update_with_bad_submessage():
    with pytest.raises(DecodeError, match=r"expected b'K', b'O' or b'N'.*offset 5"):
        decode(b"U" + struct.pack(">I", 1) + b"X" + tuple_data(NULL))
    # 'K' must be followed by 'N'.
    bad = b"U" + struct.pack(">I", 1) + b"K" + tuple_data(NULL) + b"O" + tuple_data(NULL)
    with pytest.raises(DecodeError, match=r"got b'O'.*offset 9"):
        decode(bad)


def test_delete_requires_key_or_old_tuple():
    with pytest.raises(DecodeError, match=r"expected b'K' or b'O'.*'D' \(Delete\)"):
        decode(b"D" + struct.pack(">I", 1) + b"N" + tuple_data(NULL))


def test_unterminated_string():
    with pytest.raises(DecodeError, match=r"unterminated string in pgoutput 'Y' \(Type\) message at offset 5"):
        decode(b"Y" + struct.pack(">I", 1) + b"public")


def test_invalid_utf8_string():
    with pytest.raises(DecodeError, match=r"invalid UTF-8 .*'R' \(Relation\) message at offset 5"):
        decode(relation_msg(1, "x", "t", "d", []).replace(b"x\x00", b"\xff\x00", 1))


def test_truncate_count_mismatch():
    with pytest.raises(DecodeError, match=r"3 relation ids need 18 bytes.* at offset 14"):
        decode(b"T" + struct.pack(">IBII", 3, 0, 1, 2))


def test_message_content_length_too_long():
    payload = b"M" + struct.pack(">BQ", 0, 1) + cstr("p") + struct.pack(">i", 4) + b"abc"
    with pytest.raises(DecodeError, match=r"content of invalid length 4 in pgoutput 'M'"):
        decode(payload)


def test_public_api():
    assert set(pgoutput.__all__) >= {
        "Begin",
        "Commit",
        "Origin",
        "Column",
        "Relation",
        "Type",
        "Insert",
        "Update",
        "Delete",
        "Truncate",
        "Message",
        "UNCHANGED_TOAST",
        "DecodeError",
        "decode",
    }
