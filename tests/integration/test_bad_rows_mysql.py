"""A mysql target that cannot take a change (a value too long, JSON nested deeper than MariaDB
allows) says which one; held as a ``bad_row`` conflict, the rest of the batch lands."""

from __future__ import annotations

import pytest

from cdc.errors import BadRowError
from cdc.pipeline import bad_rows
from cdc.state.store import StateStore
from cdc.values import RawJson, allow_deep_json
from tests.integration.test_mysql_target import Events, mydb, mysql_target  # noqa: F401 (mydb: a fixture)

TABLE = "CREATE TABLE `{db}`.customers (id INT PRIMARY KEY, name VARCHAR(5), doc JSON)"


def _batch(events: Events, deep: str) -> list:
    return events.txn_events(
        ("customers", "insert", {"id": 1}, None, {"id": 1, "name": "ann", "doc": None}),
        ("customers", "insert", {"id": 2}, None, {"id": 2, "name": "bartholomew", "doc": None}),
        ("customers", "insert", {"id": 3}, None, {"id": 3, "name": "cy", "doc": RawJson(deep)}),
        ("customers", "insert", {"id": 4}, None, {"id": 4, "name": "dee", "doc": RawJson("[1]")}),
        ("customers", "update", {"id": 2}, None, {"id": 2, "name": "bo", "doc": None}),
    )


@pytest.mark.parametrize("holding", [False, True])
def test_a_mysql_target_names_the_change_it_cannot_take(mariadb_server, mydb, tmp_path, holding):  # noqa: F811
    allow_deep_json()
    db = mydb.db
    mydb(TABLE.format(db=db))
    target = mysql_target(mariadb_server, db)
    store = StateStore(tmp_path / "state")
    events = _batch(Events("erp", db), "[" * 3000 + "1" + "]" * 3000)
    with store.transaction():
        store.append(events)
    held: dict = {}
    if not holding:
        with pytest.raises(BadRowError) as refused:
            bad_rows.apply(target, "erp", events, held, store, None, holding=False)
        message = str(refused.value)
        assert "\n" not in message
        for part in ("target mirror", f"{db}.customers", '{"id":2}', events[1].event_id, "on_bad_row"):
            assert part in message, message
        assert mydb(f"SELECT id, name FROM `{db}`.customers ORDER BY id") == [(1, "ann")]  # applied before it
    else:
        bad_rows.apply(target, "erp", events, held, store, None, holding=True)
        assert mydb(f"SELECT id, name FROM `{db}`.customers ORDER BY id") == [(1, "ann"), (4, "dee")]
        found = store.conflicts(type="bad_row")
        assert sorted((c["key"], c["status"]) for c in found) == [('{"id":2}', "pending"), ('{"id":3}', "pending")]
        assert set(store.held_keys()) == {("erp", db, "customers", '{"id":2}'), ("erp", db, "customers", '{"id":3}')}
        assert target.position("erp") == events[-1].position
    target.close()
    store.close()
