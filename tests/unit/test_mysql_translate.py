"""Binlog events through ``cdc.sources.mysql.translate.Translator``, without a server.

The events are objects of mysql-replication's own classes, made without parsing a packet
(``object.__new__``), carrying the attributes a parsed event has: what the translator reads.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.errors import SourceError
from cdc.model import Idle, RowChange, TxnBegin, TxnCommit, WriteBack
from cdc.sources.base import SourceItem
from cdc.sources.mysql.translate import Translator

WHERE = "source erp (mysql://cdc@db/erp)"
SYNC_TARGET = "sync-erp-5001"
TS = 1_760_000_000
COMMIT_TS = datetime.fromtimestamp(TS, UTC)
MYSQL_UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
COLUMNS = [
    Column(name="id", type=FIELD_TYPE.LONG),
    Column(name="name", type=FIELD_TYPE.VARCHAR),
    Column(name="seen", type=FIELD_TYPE.TIMESTAMP2),
    Column(name="doc", type=FIELD_TYPE.BLOB),
]
DESCRIPTION = (["id"], [("id", "int"), ("name", "varchar"), ("seen", "timestamp"), ("doc", "json")])


# -- events ------------------------------------------------------------------------------


def _event(cls: type, log_pos: int, **attributes: Any) -> Any:
    event = object.__new__(cls)
    event.packet = SimpleNamespace(log_pos=log_pos)  # the packet's header: where the next event starts
    event.timestamp = TS
    for name, value in attributes.items():
        setattr(event, name, value)
    return event


def rotate(next_binlog: str) -> RotateEvent:
    return _event(RotateEvent, 0, position=4, next_binlog=next_binlog)


def mariadb_gtid(gtid: str, log_pos: int) -> MariadbGtidEvent:
    domain, server, seq = map(int, gtid.split("-"))
    return _event(MariadbGtidEvent, log_pos, gtid=gtid, domain_id=domain, server_id=server, gtid_seq_no=seq)


def mysql_gtid(gno: int, log_pos: int) -> GtidEvent:
    return _event(GtidEvent, log_pos, sid=uuid.UUID(MYSQL_UUID).bytes, gno=gno)


def query(text: str, log_pos: int) -> QueryEvent:
    return _event(QueryEvent, log_pos, query=text, schema=b"erp")


def xid(log_pos: int) -> XidEvent:
    return _event(XidEvent, log_pos, xid=77)


def heartbeat(ident: str, log_pos: int) -> HeartbeatLogEvent:
    return _event(HeartbeatLogEvent, log_pos, ident=ident)


def rows(
    cls: type[RowsEvent],
    rows: list[dict[str, Any]],
    table: str = "customers",
    schema: str = "erp",
    table_id: int = 21,
    columns: list[Column] = COLUMNS,
) -> RowsEvent:
    event = _event(cls, 0, schema=schema, table=table, table_id=table_id, columns=columns)
    event._RowsEvent__rows = rows  # what ``rows`` reads once the packet is parsed
    return event


def marker(target: str, seq: int, cls: type[RowsEvent] = WriteRowsEvent) -> RowsEvent:
    values = {"target": target.encode(), "source": b"crm", "txn_key": "0/16B3748", "seq": seq}
    row = {"before_values": values, "after_values": values} if cls is UpdateRowsEvent else {"values": values}
    return rows(cls, [row], table="sync_positions", schema="cdc", table_id=30, columns=[])


# -- the translator ----------------------------------------------------------------------


class Described:
    """A ``describe`` that answers from a dict, and counts its calls."""

    def __init__(self, tables: dict[tuple[str, str], tuple[list[str], list[tuple[str, str]]]]) -> None:
        self.tables = tables
        self.calls: list[tuple[str, str]] = []

    def __call__(self, schema: str, table: str) -> tuple[list[str], list[tuple[str, str]]]:
        self.calls.append((schema, table))
        return self.tables[(schema, table)]


@pytest.fixture
def described() -> Described:
    return Described({("erp", "customers"): DESCRIPTION, ("erp", "keyless"): ([], [("note", "text")])})


def translator(
    described: Described, position: str, is_mariadb: bool = True, drain_target: tuple[int, int] | None = None
) -> Translator:
    made = Translator(WHERE, {("erp", "customers"), ("erp", "keyless")}, SYNC_TARGET, described)
    made.restart(position, is_mariadb, drain_target)
    return made


def feed(made: Translator, *events: Any) -> list[SourceItem]:
    items: list[SourceItem] = []
    for event in events:
        made.handle(event, items)
    return items


def row(id_: int, name: str, seen: datetime | None = None) -> dict[str, Any]:
    return {"id": id_, "name": name, "seen": seen, "doc": None}


# -- tests -------------------------------------------------------------------------------


def test_a_mariadb_gtid_transaction_gives_its_row_changes_and_the_new_gtid_list(described):
    made = translator(described, "0-1-42,1-2-7")
    seen = datetime(2026, 1, 2, 3, 4, 5)  # the library's naive UTC TIMESTAMP
    items = feed(
        made,
        rotate("mariadb-bin.000002"),
        mariadb_gtid("0-1-43", 500),
        rows(WriteRowsEvent, [{"values": {**row(1, "Ann", seen), "doc": '{"a": 1}'}}]),
        rows(UpdateRowsEvent, [{"before_values": row(1, "Ann"), "after_values": row(1, "Bo")}]),
        rows(DeleteRowsEvent, [{"values": row(2, "Cy")}]),
        xid(900),
    )
    txn_key = "0000000002:000000000500"
    assert items[0] == TxnBegin(txn_key, "0-1-43", "0-1-43", COMMIT_TS)
    inserted = items[1]
    assert isinstance(inserted, RowChange) and inserted.after is not None
    assert (inserted.op, inserted.key, inserted.before) == ("insert", {"id": 1}, None)
    assert inserted.after["seen"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert inserted.after["doc"] == '{"a": 1}' and type(inserted.after["doc"]).__name__ == "RawJson"
    assert items[2] == RowChange("erp", "customers", "update", {"id": 1}, row(1, "Ann"), row(1, "Bo"))
    assert items[3] == RowChange("erp", "customers", "delete", {"id": 2}, row(2, "Cy"), None)
    assert items[4:] == [TxnCommit(txn_key, "0-1-43,1-2-7")]
    assert made.position == "0-1-43,1-2-7"
    assert described.calls == [("erp", "customers")]  # described once, then cached

    items = feed(made, mariadb_gtid("1-2-8", 1200), rows(WriteRowsEvent, [{"values": row(3, "Di")}]), xid(1400))
    assert items[-1] == TxnCommit("0000000002:000000001200", "0-1-43,1-2-8")
    assert made.position == "0-1-43,1-2-8" and len(described.calls) == 1


def test_a_mysql_gtid_transaction_adds_its_gtid_to_the_set(described):
    made = translator(described, f"{MYSQL_UUID}:1-42", is_mariadb=False)
    items = feed(
        made,
        rotate("mysql-bin.000004"),
        mysql_gtid(43, 300),
        query("BEGIN", 380),
        rows(WriteRowsEvent, [{"values": row(1, "Ann")}]),
        xid(600),
    )
    gtid = f"{MYSQL_UUID}:43"
    assert items[0] == TxnBegin("0000000004:000000000300", gtid, gtid, COMMIT_TS)
    assert items[-1] == TxnCommit("0000000004:000000000300", f"{MYSQL_UUID}:1-43")
    assert made.position == f"{MYSQL_UUID}:1-43"


def test_without_gtids_a_transaction_runs_from_begin_to_commit_and_ends_at_file_pos(described):
    made = translator(described, "mysql-bin.000003:100", is_mariadb=False)
    items = feed(
        made,
        rotate("mysql-bin.000003"),
        query("BEGIN", 200),
        rows(WriteRowsEvent, [{"values": row(1, "Ann")}, {"values": row(2, "Bo")}]),
        query("COMMIT", 400),
    )
    assert items[0] == TxnBegin("0000000003:000000000200", "mysql-bin.000003:200", None, COMMIT_TS)
    assert [item.key for item in items[1:3]] == [{"id": 1}, {"id": 2}]
    assert items[3:] == [TxnCommit("0000000003:000000000200", "mysql-bin.000003:400")]

    items = feed(made, query("BEGIN", 500), rows(WriteRowsEvent, [{"values": row(3, "Cy")}]), xid(700))
    assert items[-1] == TxnCommit("0000000003:000000000500", "mysql-bin.000003:700")
    assert made.position == "mysql-bin.000003:700"


def test_a_rotate_changes_the_file_of_the_next_transactions(described):
    made = translator(described, "0-1-1")
    items = feed(
        made,
        rotate("mariadb-bin.000009"),
        rotate("mariadb-bin.000010"),
        mariadb_gtid("0-1-2", 256),
        rows(WriteRowsEvent, [{"values": row(1, "Ann")}]),
        xid(400),
    )
    assert items[0].txn_key == "0000000010:000000000256"


def test_tables_not_captured_are_skipped_and_their_transaction_becomes_idle(described):
    made = translator(described, "0-1-42")
    items = feed(
        made,
        rotate("mariadb-bin.000002"),
        mariadb_gtid("0-1-43", 500),
        rows(WriteRowsEvent, [{"values": row(1, "Ann")}], table="invoices"),
        rows(WriteRowsEvent, [{"values": row(1, "Ann")}], schema="crm"),
        xid(900),
    )
    assert items == [Idle("0-1-43")]
    assert described.calls == []


def test_row_events_outside_a_transaction_and_commits_without_one_give_nothing(described):
    made = translator(described, "0-1-42")
    assert feed(made, rotate("mariadb-bin.000002"), rows(WriteRowsEvent, [{"values": row(1, "Ann")}]), xid(900)) == []
    assert made.position == "0-1-42"


def test_a_heartbeat_between_transactions_gives_idle_and_reports_the_stream_idle(described):
    made = translator(described, "0-1-42")
    items: list[SourceItem] = []
    assert made.handle(heartbeat("mariadb-bin.000002", 700), items) is True
    assert items == [Idle("0-1-42", "")]
    assert made.handle(rotate("mariadb-bin.000002"), items) is False


def test_a_heartbeat_inside_a_transaction_gives_nothing(described):
    made = translator(described, "0-1-42")
    items = feed(made, rotate("mariadb-bin.000002"), mariadb_gtid("0-1-43", 500), heartbeat("mariadb-bin.000002", 600))
    assert items == []


def test_the_drain_target_is_reported_once_reached(described):
    made = translator(described, "0-1-42", drain_target=(2, 900))
    assert feed(made, heartbeat("mariadb-bin.000002", 800)) == [Idle("0-1-42", "")]
    assert feed(made, heartbeat("mariadb-bin.000002", 900)) == [Idle("0-1-42", "drained")]
    assert feed(made, heartbeat("mariadb-bin.000003", 4)) == [Idle("0-1-42", "drained")]


def test_a_commit_reaching_the_drain_target_follows_its_txn_commit_with_drained(described):
    made = translator(described, "0-1-42", drain_target=(2, 900))
    first = feed(
        made,
        rotate("mariadb-bin.000002"),
        mariadb_gtid("0-1-43", 500),
        rows(WriteRowsEvent, [{"values": row(1, "Ann")}]),
        xid(700),
    )
    assert first[-1] == TxnCommit("0000000002:000000000500", "0-1-43")
    items = feed(made, mariadb_gtid("0-1-44", 750), rows(WriteRowsEvent, [{"values": row(2, "Bo")}]), xid(900))
    assert items[-2:] == [TxnCommit("0000000002:000000000750", "0-1-44"), Idle("0-1-44", "drained")]


def test_the_sync_marker_of_our_own_target_opens_a_write_back_transaction(described):
    made = translator(described, "0-1-42")
    items = feed(
        made,
        rotate("mariadb-bin.000002"),
        mariadb_gtid("0-1-43", 500),
        marker(SYNC_TARGET, 3),
        rows(WriteRowsEvent, [{"values": row(1, "Ann")}]),
        xid(900),
    )
    assert items[0] == TxnBegin("0000000002:000000000500", "0-1-43", "0-1-43", COMMIT_TS)
    assert items[1] == WriteBack(SYNC_TARGET, "crm", "0/16B3748", 3)
    assert isinstance(items[2], RowChange) and items[3] == TxnCommit("0000000002:000000000500", "0-1-43")

    updated = feed(made, mariadb_gtid("0-1-44", 1000), marker(SYNC_TARGET, 4, UpdateRowsEvent), xid(1100))
    assert updated[1:] == [
        WriteBack(SYNC_TARGET, "crm", "0/16B3748", 4),
        TxnCommit("0000000002:000000001000", "0-1-44"),
    ]


def test_the_sync_marker_of_another_target_is_ignored(described):
    made = translator(described, "0-1-42")
    items = feed(made, rotate("mariadb-bin.000002"), mariadb_gtid("0-1-43", 500), marker("sync-erp-9999", 3), xid(900))
    assert items == [Idle("0-1-43")]


def test_ddl_commits_its_transaction_and_forgets_the_table_descriptions(described):
    made = translator(described, "0-1-42")
    feed(
        made,
        rotate("mariadb-bin.000002"),
        mariadb_gtid("0-1-43", 500),
        rows(WriteRowsEvent, [{"values": row(1, "Ann")}]),
        xid(700),
    )
    items = feed(made, mariadb_gtid("0-1-44", 800), query("ALTER TABLE customers ADD COLUMN x INT", 950))
    assert items == [Idle("0-1-44")]
    feed(made, mariadb_gtid("0-1-45", 1000), rows(WriteRowsEvent, [{"values": row(2, "Bo")}], table_id=22), xid(1100))
    assert described.calls == [("erp", "customers"), ("erp", "customers")]
    assert made.position == "0-1-45"


def test_a_captured_table_without_a_primary_key_stops_the_source(described):
    made = translator(described, "0-1-42")
    with pytest.raises(SourceError) as raised:
        feed(
            made,
            rotate("mariadb-bin.000002"),
            mariadb_gtid("0-1-43", 500),
            rows(WriteRowsEvent, [{"values": {"note": "x"}}], table="keyless"),
        )
    assert raised.value.fatal
    assert str(raised.value) == (
        f"{WHERE}: table erp.keyless has no primary key: add one (ALTER TABLE ... ADD"
        " PRIMARY KEY (...)) or remove it from 'tables'"
    )


def test_restart_drops_the_transaction_being_read_and_resumes_at_the_given_position(described):
    made = translator(described, "0-1-42")
    feed(
        made, rotate("mariadb-bin.000002"), mariadb_gtid("0-1-43", 500), rows(WriteRowsEvent, [{"values": row(1, "A")}])
    )
    made.restart("0-1-42", True)
    assert feed(made, xid(900)) == [] and made.position == "0-1-42"
    items = feed(made, mariadb_gtid("0-1-43", 500), rows(WriteRowsEvent, [{"values": row(1, "A")}]), xid(900))
    assert items[0].txn_key == "0000000002:000000000500"  # the binlog file is kept
    assert items[-1] == TxnCommit("0000000002:000000000500", "0-1-43")
