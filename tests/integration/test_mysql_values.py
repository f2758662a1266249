"""MariaDB values that are easy to get wrong: binary keys in chunked reads, ``%`` in names,
latin1 text and zero dates, through ``cdc snapshot``, ``cdc backfill`` and the binlog stream."""

from __future__ import annotations

from tests.helpers import MysqlCdcSetup, add_mysql_mirror

BINARY_KEYS = [
    "CREATE TABLE ids (id VARBINARY(16) PRIMARY KEY, note VARCHAR(10))",
    "CREATE TABLE codes (code BINARY(1) PRIMARY KEY, note VARCHAR(10))",
    "CREATE TABLE pairs (a INT, b BINARY(16), note VARCHAR(10), PRIMARY KEY (a, b))",
    "INSERT INTO ids VALUES (x'01', 'one'), (x'C4', 'c4'), (x'FF', 'ff')",
    "INSERT INTO codes VALUES (x'80', '80'), (x'90', '90'), (x'C3', 'c3')",
    "INSERT INTO pairs VALUES (1, x'C4000000000000000000000000000000', 'a'), (1, x'FF', 'b'),"
    " (1, x'C3A9', 'c'), (2, x'00', 'd'), (2, x'80', 'e')",
]
BINARY_TARGET = """
CREATE TABLE public.ids (id bytea PRIMARY KEY, note text);
CREATE TABLE public.codes (code bytea PRIMARY KEY, note text);
CREATE TABLE public.pairs (a integer, b bytea, note text, PRIMARY KEY (a, b));
"""
BINARY_TABLES = {"ids": "id", "codes": "code", "pairs": "a, b"}


def _source_rows(erp: MysqlCdcSetup, table: str, order: str) -> list[tuple]:
    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM `{table}` ORDER BY {order}")
        return [tuple(row) for row in cur.fetchall()]


def _target_rows(erp: MysqlCdcSetup, table: str, order: str) -> list[tuple]:
    with erp.target() as dst:
        rows = dst.execute(f'SELECT * FROM public."{table}" ORDER BY {order}').fetchall()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def test_snapshot_and_backfill_page_binary_keys_by_their_bytes(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(mariadb_server, pg_server, tmp_path, BINARY_KEYS, list(BINARY_TABLES), BINARY_TARGET)
    erp.setup()
    result = erp.cdc("snapshot", "--chunk-rows", "1", timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    erp.drain()
    for table, order in BINARY_TABLES.items():
        assert _target_rows(erp, table, order) == _source_rows(erp, table, order), table
    snapshot = [event for event in erp.events() if event["op"] == "snapshot"]
    assert len(snapshot) == 11

    with erp.target() as dst:
        for table in BINARY_TABLES:
            dst.execute(f"DELETE FROM public.{table}")
    result = erp.cdc("backfill", "--source", "erp", "--chunk-rows", "1", timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "11 row(s) re-read" in result.stdout
    erp.drain()
    for table, order in BINARY_TABLES.items():
        assert _target_rows(erp, table, order) == _source_rows(erp, table, order), table


PERCENT_TABLE = "CREATE TABLE `pct%s` (`id%d` INT PRIMARY KEY, `50%` VARCHAR(10))"


def test_percent_signs_in_table_and_column_names(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(
        mariadb_server,
        pg_server,
        tmp_path,
        [PERCENT_TABLE, "INSERT INTO `pct%s` VALUES (1, 'a'), (2, 'b'), (3, 'c')"],
        ["pct%s"],
        targets_toml="",  # the mysql target only: its statements hold the names too
    )
    mirror_db = f"{erp.source_db}_mirror"
    with erp.config.open("a") as config:
        config.write(f"""
[[targets]]
name = "mirror"
kind = "mysql"
dsn = "{mariadb_server.dsn(mirror_db)}"
table_map = {{ "{erp.source_db}.pct%s" = "{mirror_db}.pct%s" }}
""")
    with erp.mysql() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{mirror_db}`")
        cur.execute(f"USE `{mirror_db}`")
        cur.execute(PERCENT_TABLE)

    def mirrored() -> list[tuple]:
        with erp.mysql(mirror_db) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM `pct%s` ORDER BY 1")
            return [tuple(row) for row in cur.fetchall()]

    erp.setup()
    planned = erp.cdc("snapshot", "--dry-run")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    result = erp.cdc("snapshot", "--chunk-rows", "2", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    erp.execute("INSERT INTO `pct%s` VALUES (4, 'd')", "UPDATE `pct%s` SET `50%` = 'B' WHERE `id%d` = 2")
    erp.drain()
    assert mirrored() == [(1, "a"), (2, "B"), (3, "c"), (4, "d")]
    with erp.mysql(mirror_db) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM `pct%s`")
    result = erp.cdc("backfill", "--source", "erp", "--chunk-rows", "2", "--where", "`50%` LIKE '%'", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 row(s) re-read" in result.stdout
    erp.drain()
    assert mirrored() == [(1, "a"), (2, "B"), (3, "c"), (4, "d")]


# every byte MariaDB's latin1 maps differently from ISO-8859-1, or leaves undefined in cp1252
LATIN1_BYTES = "x'8081828D8E8F909D9E9FA0C4E9FF'"


def test_latin1_text_is_decoded_as_mariadb_decodes_it(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(
        mariadb_server,
        pg_server,
        tmp_path,
        [
            "CREATE TABLE notes (id INT PRIMARY KEY, body VARCHAR(40) CHARACTER SET latin1,"
            " tag ENUM('a', 'b') CHARACTER SET latin1) CHARACTER SET latin1",
            f"INSERT INTO notes VALUES (1, {LATIN1_BYTES}, 'a')",
        ],
        ["notes"],
        "CREATE TABLE public.notes (id integer PRIMARY KEY, body text, tag text);",
    )
    erp.setup()
    result = erp.cdc("snapshot", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    erp.execute(f"INSERT INTO notes VALUES (2, {LATIN1_BYTES}, 'b')", "UPDATE notes SET body = x'81' WHERE id = 1")
    erp.execute(f"UPDATE notes SET body = {LATIN1_BYTES} WHERE id = 1")
    erp.drain()
    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, CONVERT(body USING utf8mb4), CONVERT(tag USING utf8mb4) FROM notes ORDER BY id")
        source = [tuple(row) for row in cur.fetchall()]
    assert source[0][1] == "€\x81‚\x8dŽ\x8f\x90\x9džŸ\xa0Äéÿ"
    assert _target_rows(erp, "notes", "id") == source
    bodies = {(event["op"], event["key"]["id"]): event["after"]["body"] for event in erp.events()}
    assert bodies[("snapshot", 1)] == bodies[("insert", 2)] == bodies[("update", 1)] == source[0][1]


ZERO_DATES = (
    "CREATE TABLE visits (id INT PRIMARY KEY, d DATE, d_text DATE, dt DATETIME, dt_text DATETIME(3),"
    " ts TIMESTAMP NULL, ts_text TIMESTAMP(3) NULL)"
)
ZERO_DATES_TARGET = (
    "CREATE TABLE public.visits (id integer PRIMARY KEY, d date, d_text text, dt timestamp, dt_text text,"
    " ts timestamptz, ts_text text);"
)
ZERO_ROW = (
    "INSERT INTO visits VALUES ({id}, '0000-00-00', '2020-00-15', '0000-00-00 00:00:00',"
    " '2020-05-00 10:11:12.5', '0000-00-00 00:00:00', '0000-00-00 00:00:00')"
)
GOOD_ROW = (
    "INSERT INTO visits VALUES ({id}, '2020-01-15', '2020-01-15', '2020-01-15 10:11:12',"
    " '2020-01-15 10:11:12.5', '2020-01-15 10:11:12', '2020-01-15 10:11:12.5')"
)
COLUMNS = ["d", "d_text", "dt", "dt_text", "ts", "ts_text"]


def test_zero_dates_travel_as_mariadb_prints_them(mariadb_server, pg_server, tmp_path):
    erp = MysqlCdcSetup(
        mariadb_server,
        pg_server,
        tmp_path,
        [ZERO_DATES, "SET SESSION sql_mode = ''", ZERO_ROW.format(id=1), GOOD_ROW.format(id=2)],
        ["visits"],
        ZERO_DATES_TARGET,
    )
    mirror = f"{erp.source_db}_mirror"
    add_mysql_mirror(erp, mariadb_server, mirror, ZERO_DATES, {f"{erp.source_db}.visits": "visits"})
    erp.setup()
    result = erp.cdc("snapshot", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    erp.execute(
        "SET SESSION sql_mode = ''",
        "SET time_zone = '+00:00'",
        ZERO_ROW.format(id=3),
        GOOD_ROW.format(id=4),
        "UPDATE visits SET d = '2021-01-01' WHERE id = 1",
        "UPDATE visits SET d = '0000-00-00' WHERE id = 1",
    )
    drained = erp.drain()

    texts = ", ".join(f"CAST({column} AS CHAR)" for column in COLUMNS)
    with erp.mysql(erp.source_db) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT id, {texts} FROM visits ORDER BY id")
        source = {row[0]: dict(zip(COLUMNS, row[1:])) for row in cur.fetchall()}
    assert source[1] == {
        "d": "0000-00-00",
        "d_text": "2020-00-15",
        "dt": "0000-00-00 00:00:00",
        "dt_text": "2020-05-00 10:11:12.500",
        "ts": "0000-00-00 00:00:00",
        "ts_text": "0000-00-00 00:00:00.000",
    }
    events = {(event["op"], event["key"]["id"]): event for event in erp.events()}
    assert events[("snapshot", 1)]["after"] == {"id": 1, **source[1]}
    assert events[("insert", 3)]["after"] == {"id": 3, **source[3]} and source[3] == source[1]
    update = [event for event in erp.events() if event["op"] == "update"][-1]
    assert update["before"]["d"] == "2021-01-01" and update["after"] == {"id": 1, **source[1]}

    with erp.mysql(mirror) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT id, {texts} FROM visits ORDER BY id")
        assert {row[0]: dict(zip(COLUMNS, row[1:])) for row in cur.fetchall()} == source

    with erp.target() as dst:
        rows = dst.execute(
            "SELECT id, d::text, d_text, dt::text, dt_text, ts::text, ts_text FROM public.visits ORDER BY id"
        ).fetchall()
    zero = (None, "2020-00-15", None, "2020-05-00 10:11:12.500", None, "0000-00-00 00:00:00.000")
    assert rows[0] == (1, *zero) and rows[2] == (3, *zero)
    assert [rows[1][i] for i in (1, 3, 5)] == ["2020-01-15", "2020-01-15 10:11:12", "2020-01-15 10:11:12+00"]
    assert rows[3][1:] == rows[1][1:]
    log = drained.stdout + drained.stderr
    assert "zero date" in log and "visits" in log and "'d'" in log
