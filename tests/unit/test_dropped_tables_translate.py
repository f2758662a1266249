"""Tables dropped while cdc is behind, tables not captured and tables that do not exist, in both translators."""

from __future__ import annotations

import logging
import re

import pytest
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.row_event import WriteRowsEvent

from cdc.errors import SourceError
from cdc.model import Idle, RowChange
from cdc.sources.mysql.translate import Translator as BinlogTranslator
from cdc.sources.postgres.translate import Translator as PgTranslator
from cdc.sources.postgres.values import ValueDecoder
from tests.unit.test_mysql_translate import feed as feed_binlog
from tests.unit.test_mysql_translate import heartbeat, mariadb_gtid, rotate, rows, xid
from tests.unit.test_pg_translate import RELID, ROW_1, WHERE, changes, feed, frame, in_txn, insert, logical_message, row


def _pg(key: list[str] | None, captured=None) -> PgTranslator:
    return PgTranslator(WHERE, lambda relid: key, ValueDecoder(), captured)


def test_a_dropped_table_keeps_the_primary_key_read_while_it_existed(caplog):
    translate = _pg(None)
    translate.remember_key(RELID, ["id"])
    with caplog.at_level(logging.WARNING):
        [change] = changes(feed(translate, *in_txn(insert(row(*ROW_1)))))
    assert change.key == {"id": 1}
    assert "table public.customers was dropped: its changes are applied with the primary key ['id'] (at 0/155B420)" in (
        caplog.text
    )


def test_a_dropped_table_of_unknown_key_is_skipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        items = feed(_pg(None), *in_txn(insert(row(*ROW_1))))
    assert changes(items) == []
    assert "table public.customers was dropped and its primary key is unknown: its changes are skipped" in caplog.text


def test_a_relation_not_in_tables_is_ignored(caplog):
    with caplog.at_level(logging.WARNING):
        items = feed(_pg(["id"], {("public", "invoices")}), *in_txn(insert(row(*ROW_1))))
    assert changes(items) == [] and "table public.customers is not in 'tables'" in caplog.text


def test_a_missing_table_is_fatal_at_the_backlog_end_unless_the_stream_held_its_changes():
    translate = _pg(None)
    translate.missing, translate.backlog_end = {("public", "customers"), ("public", "nope")}, 0x2000000
    feed(translate, *in_txn(insert(row(*ROW_1))))
    assert translate.missing == {("public", "nope")}
    assert feed(translate, frame(logical_message(False, 0x1FFFFFF, "cdc.heartbeat", b""))) == [Idle("0/1FFFFFF", "")]
    with pytest.raises(
        SourceError, match=re.escape("table public.nope does not exist: create it, or remove 'public.nope' from")
    ):
        feed(translate, frame(logical_message(False, 0x2000000, "cdc.heartbeat", b"")))


KEYED = [Column(name="id", type=FIELD_TYPE.LONG, is_primary=True), Column(name="body", type=FIELD_TYPE.VARCHAR)]
UNKEYED = [Column(name="id", type=FIELD_TYPE.LONG), Column(name="body", type=FIELD_TYPE.VARCHAR)]


def _binlog(missing=None) -> BinlogTranslator:
    made = BinlogTranslator(WHERE, {("erp", "notes"), ("erp", "nope")}, "sync-erp-1", lambda schema, table: ([], []))
    made.restart("0-1-42", True, None, missing, (2, 1000) if missing else None)
    return made


def test_a_dropped_binlog_table_is_applied_with_the_table_maps_key_else_skipped(caplog):
    made = _binlog()
    with caplog.at_level(logging.WARNING):
        items = feed_binlog(
            made,
            rotate("mariadb-bin.000002"),
            mariadb_gtid("0-1-43", 500),
            rows(WriteRowsEvent, [{"values": {"id": 1, "body": "x"}}], table="notes", columns=KEYED),
            xid(600),
        )
    assert [item for item in items if isinstance(item, RowChange)] == [
        RowChange("erp", "notes", "insert", {"id": 1}, None, {"id": 1, "body": "x"})
    ]
    assert "table erp.notes was dropped: its rows are applied with the binlog's primary key ['id'] (at 0-1-43)" in (
        caplog.text
    )
    made = _binlog()
    with caplog.at_level(logging.WARNING):
        items = feed_binlog(
            made,
            rotate("mariadb-bin.000002"),
            mariadb_gtid("0-1-43", 500),
            rows(WriteRowsEvent, [{"values": {"id": 1, "body": "x"}}], table="notes", columns=UNKEYED),
            xid(600),
        )
    assert items == [Idle("0-1-43")] and "the binlog holds no primary key for it: its rows are skipped" in caplog.text


def test_a_missing_binlog_table_is_fatal_once_the_binlog_is_read_to_its_end():
    made = _binlog({("erp", "nope")})
    assert feed_binlog(made, heartbeat("mariadb-bin.000002", 900)) == [Idle("0-1-42", "")]
    with pytest.raises(
        SourceError, match=re.escape("table erp.nope does not exist: create it, or remove 'erp.nope' from 'tables'")
    ):
        feed_binlog(made, heartbeat("mariadb-bin.000002", 1000))
