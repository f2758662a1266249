"""``cdc check`` for MySQL/MariaDB sources, against real throwaway MariaDB servers.

Every fix a check proposes is asserted verbatim, and where it is a statement it is run
to show that it really fixes the problem.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import pymysql
import pytest

from cdc.config import SourceSettings
from cdc.sources.base import Problem
from cdc.sources.mysql import admin as mysql_admin
from cdc.sources.mysql.admin import SERVER_ID_FIX, SNAPSHOT_FIX, WarningProblem
from devtools.servers import ThrowawayMariaDB

_counter = itertools.count(1)


def connect(server: ThrowawayMariaDB, user: str = "root", password: str = "") -> pymysql.connections.Connection:
    return pymysql.connect(host=server.host, port=server.port, user=user, password=password, autocommit=True)


def run(server: ThrowawayMariaDB, *statements: str) -> list[tuple]:
    with connect(server) as conn, conn.cursor() as cur:
        rows: list[tuple] = []
        for statement in statements:
            cur.execute(statement)
            rows = list(cur.fetchall())
        return rows


def settings(server: ThrowawayMariaDB, db: str, tables: list[str], server_id: int = 4242) -> SourceSettings:
    return SourceSettings(
        name="erp", kind="mysql", dsn=server.dsn(db), server_id=server_id, tables=[f"{db}.{t}" for t in tables]
    )


def check(
    server: ThrowawayMariaDB,
    source: SourceSettings,
    acked: str | None = None,
    user: str = "root",
    password: str = "",
    written: list[tuple[str, str]] | None = None,
) -> list[Problem]:
    with connect(server, user, password) as conn:
        problems = mysql_admin.check(conn, source, acked, written)
    for problem in problems:
        assert problem.what and "\n" not in problem.what, problem
        assert problem.fix and "\n" not in problem.fix, problem
    return problems


def statement(fix: str) -> str:
    """The SQL part of a fix (what comes before the ``--`` comment)."""
    return fix.split(" -- ")[0]


@pytest.fixture
def db(mariadb_server: ThrowawayMariaDB) -> Iterator[str]:
    name = f"check_{os.getpid()}_{next(_counter)}"
    run(
        mariadb_server,
        f"CREATE DATABASE `{name}`",
        f"CREATE TABLE `{name}`.customers (id int PRIMARY KEY, email varchar(100) NOT NULL UNIQUE)",
        f"CREATE TABLE `{name}`.deals (id int PRIMARY KEY, stage varchar(20))",
    )
    yield name
    run(mariadb_server, f"DROP DATABASE `{name}`")


@pytest.fixture
def accounts(mariadb_server: ThrowawayMariaDB) -> Iterator[list[str]]:
    """Names of users the test creates (as 'name'@'%'); they are dropped afterwards."""
    created: list[str] = []
    yield created
    with connect(mariadb_server) as conn, conn.cursor() as cur:
        for user in created:
            cur.execute(f"DROP USER IF EXISTS {conn.escape(user)}@'%'")


def create_user(server: ThrowawayMariaDB, accounts: list[str], name: str, *grants: str) -> str:
    with connect(server) as conn, conn.cursor() as cur:
        account = f"{conn.escape(name)}@'%'"
        cur.execute(f"CREATE USER {account} IDENTIFIED BY 'pw'")
        accounts.append(name)
        for grant in grants:
            cur.execute(f"GRANT {grant} TO {account}")
    return name


# -- a correct setup -------------------------------------------------------------------------


def test_correct_setup_passes_as_root(mariadb_server: ThrowawayMariaDB, db: str) -> None:
    gtid = run(mariadb_server, "SELECT @@gtid_binlog_pos")[0][0]
    assert check(mariadb_server, settings(mariadb_server, db, ["customers", "deals"]), acked=gtid) == []


def test_correct_setup_passes_with_least_privileges(
    mariadb_server: ThrowawayMariaDB, db: str, accounts: list[str]
) -> None:
    user = create_user(
        mariadb_server,
        accounts,
        f"cdc_ok_{next(_counter)}",
        "REPLICATION SLAVE, BINLOG MONITOR ON *.*",
        f"SELECT ON `{db}`.*",
    )
    source = settings(mariadb_server, db, ["customers", "deals"])
    gtid = run(mariadb_server, "SELECT @@gtid_binlog_pos")[0][0]
    assert check(mariadb_server, source, acked=gtid, user=user, password="pw") == []
    with connect(mariadb_server, user, "pw") as conn:  # the account may not list replicas: skipped, not a problem
        assert not mysql_admin.purged(conn, gtid)


# -- tables ------------------------------------------------------------------------------------


def test_table_without_primary_key(mariadb_server: ThrowawayMariaDB, db: str) -> None:
    run(
        mariadb_server,
        f"CREATE TABLE `{db}`.notes (body text)",
        f"CREATE TABLE `{db}`.`we``ird` (code varchar(10) NOT NULL, other int, UNIQUE KEY (code))",
    )
    problems = check(mariadb_server, settings(mariadb_server, db, ["customers", "notes", "we`ird"]))
    assert problems == [
        Problem(
            f"table {db}.notes has no primary key: events and targets are keyed by it",
            f"ALTER TABLE `{db}`.`notes` ADD PRIMARY KEY (<key columns>);",
        ),
        Problem(
            f"table {db}.we`ird has no primary key: events and targets are keyed by it",
            f"ALTER TABLE `{db}`.`we``ird` ADD PRIMARY KEY (`code`);",
        ),
    ]
    run(mariadb_server, problems[1].fix)
    assert len(check(mariadb_server, settings(mariadb_server, db, ["we`ird"]))) == 0


def test_missing_table(mariadb_server: ThrowawayMariaDB, db: str) -> None:
    problems = check(mariadb_server, settings(mariadb_server, db, ["customers", "nope"]))
    assert problems == [
        Problem(f"table {db}.nope does not exist", f"create it, or remove '{db}.nope' from 'tables' of source erp")
    ]


# -- privileges --------------------------------------------------------------------------------


def test_user_without_replication_and_select(mariadb_server: ThrowawayMariaDB, db: str, accounts: list[str]) -> None:
    user = create_user(mariadb_server, accounts, f"cdc'lim_{next(_counter)}", f"SELECT ON `{db}`.customers")
    quoted = "'" + user.replace("'", "\\'") + "'@'%'"
    source = settings(mariadb_server, db, ["customers", "deals"])
    problems = check(mariadb_server, source, user=user, password="pw")
    assert problems == [
        Problem(
            f"account {quoted} lacks REPLICATION SLAVE and BINLOG MONITOR (needed to read the binlog and its position)",
            f"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO {quoted};",
        ),
        Problem(f"account {quoted} cannot SELECT from {db}.deals", f"GRANT SELECT ON `{db}`.`deals` TO {quoted};"),
    ]
    run(mariadb_server, *(p.fix for p in problems))
    assert check(mariadb_server, source, user=user, password="pw") == []


def test_tables_cdc_writes_need_write_privileges_and_the_cdc_database(
    mariadb_server: ThrowawayMariaDB, db: str, accounts: list[str]
) -> None:
    user = create_user(
        mariadb_server,
        accounts,
        f"cdc_sync_{next(_counter)}",
        "REPLICATION SLAVE, BINLOG MONITOR ON *.*",
        f"SELECT, UPDATE ON `{db}`.*",
    )
    quoted = f"'{user}'@'%'"
    source = settings(mariadb_server, db, ["customers"])
    problems = check(mariadb_server, source, user=user, password="pw", written=[(db, "customers")])
    assert problems == [
        Problem(
            f"account {quoted} cannot INSERT, DELETE {db}.customers, which cdc keeps in sync",
            f"GRANT INSERT, DELETE ON `{db}`.`customers` TO {quoted};",
        ),
        Problem(
            f"account {quoted} cannot CREATE, SELECT, INSERT, UPDATE in database cdc, where cdc marks its own writes",
            f"GRANT CREATE, SELECT, INSERT, UPDATE ON `cdc`.* TO {quoted};",
        ),
    ]
    run(mariadb_server, *(p.fix for p in problems))
    assert check(mariadb_server, source, user=user, password="pw", written=[(db, "customers")]) == []


def test_replication_client_alias_and_all_privileges(
    mariadb_server: ThrowawayMariaDB, db: str, accounts: list[str]
) -> None:
    user = create_user(
        mariadb_server,
        accounts,
        f"cdc_alias_{next(_counter)}",
        "REPLICATION REPLICA, REPLICATION CLIENT ON *.*",
        f"ALL PRIVILEGES ON `{db}`.`deals`",
        f"SELECT (`id`) ON `{db}`.`customers`",
    )
    problems = check(mariadb_server, settings(mariadb_server, db, ["customers", "deals"]), user=user, password="pw")
    assert [p.fix for p in problems] == [f"GRANT SELECT ON `{db}`.`customers` TO '{user}'@'%';"]


def test_parse_grants() -> None:
    grants = mysql_admin.parse_grants(
        [
            "GRANT USAGE ON *.* TO `cdc`@`%` IDENTIFIED BY PASSWORD '*D82'",
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`",  # MySQL's words
            "GRANT SELECT ON `crm\\_%`.* TO `cdc`@`%`",
            "GRANT SELECT (`a`, `b`), INSERT ON `x`.`t``q` TO `cdc`@`%`",
            "GRANT EXECUTE ON PROCEDURE `x`.`p` TO `cdc`@`%`",
            "GRANT PROXY ON ''@'%' TO 'cdc'@'%'",
            "GRANT `reader` TO `cdc`@`%`",
        ]
    )
    assert [(sorted(g.privileges), g.db, g.table) for g in grants] == [
        (["USAGE"], None, None),
        (["REPLICATION CLIENT", "REPLICATION SLAVE"], None, None),
        (["SELECT"], "crm\\_%", None),
        (["INSERT"], "x", "t`q"),
    ]
    assert mysql_admin.has_privilege(grants, {"SELECT"}, "crm_eu", "customers")
    assert not mysql_admin.has_privilege(grants, {"SELECT"}, "crmXeu", "customers")
    assert not mysql_admin.has_privilege(grants, {"SELECT"}, "x", "t`q")
    assert mysql_admin.has_privilege(grants, {"REPLICATION CLIENT", "BINLOG MONITOR"})
    assert mysql_admin.quote_identifier("a`b") == "`a``b`"


# -- server_id ---------------------------------------------------------------------------------


def test_server_id_equal_to_the_servers(mariadb_server: ThrowawayMariaDB, db: str) -> None:
    own = run(mariadb_server, "SELECT @@server_id")[0][0]
    problems = check(mariadb_server, settings(mariadb_server, db, ["customers"], server_id=own))
    assert problems == [
        Problem(f"server_id {own} of source erp is the server's own server_id", f"{SERVER_ID_FIX} (not {own})")
    ]


def test_missing_server_id(mariadb_server: ThrowawayMariaDB, db: str) -> None:
    source = settings(mariadb_server, db, ["customers"]).model_copy(update={"server_id": None})
    assert check(mariadb_server, source) == [
        Problem("source erp has no server_id: a binlog reader needs one of its own", SERVER_ID_FIX)
    ]
    assert SERVER_ID_FIX == "set server_id = <a number unique among the server's replicas> in the [[sources]] entry"


# -- server settings ---------------------------------------------------------------------------


@pytest.mark.server
def test_statement_format_and_minimal_metadata() -> None:
    with ThrowawayMariaDB(settings={"binlog_format": "STATEMENT", "binlog_row_metadata": "MINIMAL"}) as server:
        run(server, "CREATE DATABASE erp", "CREATE TABLE erp.customers (id int PRIMARY KEY)")
        source = settings(server, "erp", ["customers"])
        problems = check(server, source)
        assert problems == [
            Problem(
                "binlog_format is STATEMENT, cdc needs ROW (row events)",
                "SET GLOBAL binlog_format = 'ROW'; -- and in my.cnf [mysqld]: binlog_format = ROW",
            ),
            Problem(
                "binlog_row_metadata is MINIMAL, cdc needs FULL (column names and primary keys in the binlog)",
                "SET GLOBAL binlog_row_metadata = 'FULL'; -- and in my.cnf [mysqld]: binlog_row_metadata = FULL",
            ),
        ]
        run(server, *(statement(p.fix) for p in problems))
        assert check(server, source) == []


# -- binlog retention --------------------------------------------------------------------------


@pytest.mark.server
def test_purged_position() -> None:
    with ThrowawayMariaDB() as server:

        def gtid(*statements: str) -> str:
            return run(server, *statements, "SELECT @@gtid_binlog_pos")[0][0]

        run(
            server,
            "CREATE DATABASE erp",
            "CREATE TABLE erp.customers (id int PRIMARY KEY)",
            "SET GLOBAL binlog_expire_logs_seconds = 86400",
        )
        source = settings(server, "erp", ["customers"])
        first = gtid("INSERT INTO erp.customers VALUES (1)")  # in mysql-bin.000001
        end_of_first = gtid("INSERT INTO erp.customers VALUES (2)")  # the last GTID of mysql-bin.000001
        run(server, "FLUSH BINARY LOGS")
        second = gtid("INSERT INTO erp.customers VALUES (3)")  # in mysql-bin.000002
        run(server, "FLUSH BINARY LOGS")
        third = gtid("INSERT INTO erp.customers VALUES (4)")  # in mysql-bin.000003
        files = [row[0] for row in run(server, "SHOW BINARY LOGS")]
        assert len(files) == 3

        # Before the purge: the changes after `first` start in the oldest file, which expires next.
        assert check(server, source, acked=end_of_first) == []
        warning = WarningProblem(
            f"the stored position {first} of source erp is close to being purged: the changes after it"
            f" start in {files[0]}, the oldest binlog, which expires after 86400s",
            "SET GLOBAL binlog_expire_logs_seconds = 604800;"
            " -- and in my.cnf [mysqld]: binlog_expire_logs_seconds = 604800",
        )
        assert check(server, source, acked=first) == [warning]
        assert check(server, source, acked=f"{files[0]}:4") == [replace_what(warning, first, f"{files[0]}:4")]
        with connect(server) as conn:
            assert not mysql_admin.purged(conn, first)

        purge_to(server, files[2])
        with connect(server) as conn:
            for position in (first, end_of_first, f"{files[1]}:4"):
                assert mysql_admin.purged(conn, position), position
            for position in (second, third, f"{files[2]}:4", ""):
                assert not mysql_admin.purged(conn, position), position
            assert mysql_admin.retention(conn, second).oldest_start == second
        assert check(server, source, acked=first) == [
            Problem(
                f"the stored position {first} of source erp has been purged from the binlog (the oldest binlog"
                f" is {files[2]}, after {second}): changes after it were lost",
                SNAPSHOT_FIX,
            )
        ]
        assert check(server, source, acked=f"{files[0]}:4") == [
            Problem(
                f"the stored position {files[0]}:4 of source erp has been purged from the binlog (the oldest binlog"
                f" is {files[2]}): changes after it were lost",
                SNAPSHOT_FIX,
            )
        ]
        assert check(server, source, acked=third) == []
        assert check(server, source, acked=second) == []  # the only file left is the one being written

        # A domain the position has never seen, whose changes are gone, is lost as well.
        run(server, "SET SESSION gtid_domain_id = 7", "INSERT INTO erp.customers VALUES (5)", "FLUSH BINARY LOGS")
        purge_to(server, "mysql-bin.000004")
        with connect(server) as conn:
            assert mysql_admin.purged(conn, third)
            assert not mysql_admin.purged(conn, gtid())


def purge_to(server: ThrowawayMariaDB, file: str) -> None:
    """PURGE BINARY LOGS TO ``file``; MariaDB silently keeps the file before it until that file's
    binlog checkpoint is written (crash recovery may still need it), so try again for a while."""
    for _ in range(100):
        if run(server, f"PURGE BINARY LOGS TO '{file}'", "SHOW BINARY LOGS")[0][0] == file:
            return
        time.sleep(0.1)
    raise AssertionError(f"the binlogs before {file} were not purged")


def replace_what(problem: Problem, old: str, new: str) -> Problem:
    return WarningProblem(problem.what.replace(old, new), problem.fix)


def test_position_of_another_server_kind(mariadb_server: ThrowawayMariaDB, db: str) -> None:
    acked = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-42"
    problems = check(mariadb_server, settings(mariadb_server, db, ["customers"]), acked=acked)
    assert problems == [
        Problem(
            f"the stored position {acked} of source erp is a mysql gtid position, but the server is MariaDB",
            SNAPSHOT_FIX,
        )
    ]


def test_binlog_status(mariadb_server: ThrowawayMariaDB, db: str) -> None:
    run(mariadb_server, f"INSERT INTO `{db}`.deals VALUES (1, 'lead')")
    with connect(mariadb_server) as conn:
        status = mysql_admin.binlog_status(conn)
    files = run(mariadb_server, "SHOW BINARY LOGS")
    master = run(mariadb_server, "SHOW MASTER STATUS")[0]
    assert status == {
        "server": "mariadb",
        "file": master[0],
        "position": master[1],
        "gtid_position": run(mariadb_server, "SELECT @@gtid_binlog_pos")[0][0],
        "binlog_files": [{"name": name, "size": size} for name, size in files],
        "binlog_bytes": sum(size for _, size in files),
    }
    assert status["binlog_bytes"] > 0 and status["gtid_position"]
