"""Preflight checks and set-up for a PostgreSQL source: what ``cdc check`` and ``cdc setup`` do.

Every problem found comes with the SQL (or setting) that fixes it; ``setup_statements``
is the idempotent list of statements that create what cdc needs (publication, replica
identity, slot), composed with psycopg's ``sql`` module. ``cdc snapshot`` runs the same
statements but the slot's (``stream_statements``) before it creates its slot, once
``snapshot_blockers`` finds nothing that only a person can fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Query

from cdc.config import SourceSettings
from cdc.logs import one_line
from cdc.sources.base import Problem, SourceError


def _table(schema: str, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table)


def _text(conn: psycopg.Connection, statement: sql.Composable) -> str:
    return statement.as_string(conn)


def _one(conn: psycopg.Connection, query: Query) -> tuple[Any, ...]:
    """The row of a query that always returns one (a setting, the current role)."""
    row = conn.execute(query).fetchone()
    assert row is not None
    return row


def check(
    conn: psycopg.Connection, settings: SourceSettings, written: list[tuple[str, str]] | None = None
) -> list[Problem]:
    """Everything that would stop the source from streaming, or cdc from writing the ``written``
    tables (synced entity members, repairs), with its fix."""
    role = _one(conn, "SELECT current_user")[0]
    problems = _check_server(conn, role)
    problems += _check_tables(conn, settings, role)
    problems += _check_replica_identity(conn, settings)
    problems += _check_publication(conn, settings)
    problems += _check_slot(conn, settings)
    if written:
        problems += _check_writes(conn, written, role)
    return problems


def snapshot_blockers(conn: psycopg.Connection, settings: SourceSettings) -> list[Problem]:
    """What would stop the stream that neither ``cdc setup`` nor ``cdc snapshot`` makes right
    (server settings, the role, the tables, a publication or slot of another kind): checked
    before a snapshot creates anything."""
    role = _one(conn, "SELECT current_user")[0]
    problems = _check_server(conn, role) + _check_tables(conn, settings, role)
    if _publication_exists(conn, settings.publication_name):
        problems += _check_publish(conn, settings.publication_name)
    return problems + _check_slot_kind(conn, settings)


def _check_server(conn: psycopg.Connection, role: str) -> list[Problem]:
    problems: list[Problem] = []
    wal_level = _one(conn, "SHOW wal_level")[0]
    if wal_level != "logical":
        problems.append(
            Problem(
                f"wal_level is {wal_level!r}, logical decoding needs 'logical'",
                "ALTER SYSTEM SET wal_level = logical; -- then restart PostgreSQL",
            )
        )
    for setting in ("max_replication_slots", "max_wal_senders"):
        if int(_one(conn, sql.SQL("SHOW {}").format(sql.Identifier(setting)))[0]) < 1:
            problems.append(Problem(f"{setting} is 0", f"ALTER SYSTEM SET {setting} = 10; -- then restart PostgreSQL"))
    superuser, replication = _one(conn, "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user")
    if not (superuser or replication):
        problems.append(
            Problem(
                f"role {role!r} lacks the REPLICATION attribute",
                _text(conn, sql.SQL("ALTER ROLE {} REPLICATION;").format(sql.Identifier(role))),
            )
        )
    return problems


def _check_writes(conn: psycopg.Connection, written: list[tuple[str, str]], role: str) -> list[Problem]:
    problems = []
    for schema, table in written:
        row = conn.execute(
            "SELECT has_table_privilege(c.oid, 'INSERT') AND has_table_privilege(c.oid, 'UPDATE')"
            " AND has_table_privilege(c.oid, 'DELETE') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, table),
        ).fetchone()
        if row is not None and not row[0]:
            problems.append(
                Problem(
                    f"role {role!r} cannot write {schema}.{table}, which cdc keeps in sync",
                    _text(
                        conn,
                        sql.SQL("GRANT INSERT, UPDATE, DELETE ON {} TO {};").format(
                            _table(schema, table), sql.Identifier(role)
                        ),
                    ),
                )
            )
    can_mark, can_keep_positions = _one(
        conn,
        "SELECT has_function_privilege('pg_logical_emit_message(boolean, text, text)', 'EXECUTE'),"
        " coalesce((SELECT has_schema_privilege(n.oid, 'USAGE') AND has_schema_privilege(n.oid, 'CREATE')"
        " FROM pg_namespace n WHERE n.nspname = 'cdc'), has_database_privilege(current_database(), 'CREATE'))",
    )
    if not can_mark:
        problems.append(
            Problem(
                f"role {role!r} cannot call pg_logical_emit_message, which marks cdc's own writes",
                _text(
                    conn,
                    sql.SQL("GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {};").format(
                        sql.Identifier(role)
                    ),
                ),
            )
        )
    if not can_keep_positions:
        problems.append(
            Problem(
                f"role {role!r} cannot create the schema cdc, where cdc keeps what it wrote",
                _text(conn, sql.SQL("CREATE SCHEMA IF NOT EXISTS cdc AUTHORIZATION {};").format(sql.Identifier(role))),
            )
        )
    return problems


def _check_tables(conn: psycopg.Connection, settings: SourceSettings, role: str) -> list[Problem]:
    problems = []
    for schema, table in settings.qualified_tables:
        name = f"{schema}.{table}"
        row = conn.execute(
            "SELECT has_table_privilege(c.oid, 'SELECT'),"
            " EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, table),
        ).fetchone()
        if row is None:
            problems.append(
                Problem(
                    f"table {name} does not exist",
                    f"create it, or remove {name!r} from 'tables' of source {settings.name}",
                )
            )
            continue
        can_select, has_pk = row
        if not has_pk:
            problems.append(
                Problem(
                    f"table {name} has no primary key",
                    _text(
                        conn, sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (<key columns>);").format(_table(schema, table))
                    ),
                )
            )
        if not can_select:
            problems.append(
                Problem(
                    f"role {role!r} cannot SELECT from {name}",
                    _text(
                        conn, sql.SQL("GRANT SELECT ON {} TO {};").format(_table(schema, table), sql.Identifier(role))
                    ),
                )
            )
    return problems


def _check_replica_identity(conn: psycopg.Connection, settings: SourceSettings) -> list[Problem]:
    return [
        Problem(
            f"table {schema}.{table} is not REPLICA IDENTITY FULL (before-images would be incomplete)",
            _text(conn, statement),
        )
        for (schema, table), statement in _replica_identity_statements(conn, settings)
    ]


def _replica_identity_statements(
    conn: psycopg.Connection, settings: SourceSettings
) -> list[tuple[tuple[str, str], sql.Composed]]:
    """``ALTER TABLE ... REPLICA IDENTITY FULL`` for each existing table that is not."""
    statements = []
    for schema, table in settings.qualified_tables:
        row = conn.execute(
            "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, table),
        ).fetchone()
        if row is not None and row[0] != "f":
            statement = sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL;").format(_table(schema, table))
            statements.append(((schema, table), statement))
    return statements


def _publication_exists(conn: psycopg.Connection, publication: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone() is not None


def _check_publication(conn: psycopg.Connection, settings: SourceSettings) -> list[Problem]:
    publication = settings.publication_name
    if not _publication_exists(conn, publication):
        return [
            Problem(
                f"publication {publication!r} does not exist",
                _text(conn, _create_publication(settings)) + " -- or run 'cdc setup'",
            )
        ]
    problems = _check_publish(conn, publication)
    for (schema, table), statement in _publication_additions(conn, settings):
        problems.append(
            Problem(f"publication {publication!r} does not include {schema}.{table}", _text(conn, statement))
        )
    return problems


def _check_publish(conn: psycopg.Connection, publication: str) -> list[Problem]:
    """An existing publication that leaves out inserts, updates or deletes ('cdc setup' leaves it so)."""
    row = conn.execute(
        "SELECT pubinsert AND pubupdate AND pubdelete FROM pg_publication WHERE pubname = %s", (publication,)
    ).fetchone()
    if row is None or row[0]:
        return []
    return [
        Problem(
            f"publication {publication!r} does not publish inserts, updates and deletes",
            _text(
                conn,
                sql.SQL("ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');").format(
                    sql.Identifier(publication)
                ),
            ),
        )
    ]


def _publication_additions(
    conn: psycopg.Connection, settings: SourceSettings
) -> list[tuple[tuple[str, str], sql.Composed]]:
    """``ALTER PUBLICATION ... ADD TABLE`` for each configured table the existing publication lacks."""
    publication = settings.publication_name
    published = set(
        conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (publication,)
        ).fetchall()
    )
    return [
        (
            (schema, table),
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {};").format(sql.Identifier(publication), _table(schema, table)),
        )
        for schema, table in settings.qualified_tables
        if (schema, table) not in published
    ]


def _check_slot(conn: psycopg.Connection, settings: SourceSettings) -> list[Problem]:
    if slot_kind(conn, settings) is None:
        return [
            Problem(
                f"replication slot {settings.slot_name!r} does not exist",
                _text(conn, _create_slot(settings)) + " -- or run 'cdc setup'",
            )
        ]
    return _check_slot_kind(conn, settings)


def slot_kind(conn: psycopg.Connection, settings: SourceSettings) -> tuple[bool, bool] | None:
    """Whether the source's slot is a pgoutput slot of this database, and whether it is in use;
    None when there is no such slot."""
    row = conn.execute(
        "SELECT plugin = 'pgoutput' AND database = current_database(), active"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (settings.slot_name,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _check_slot_kind(conn: psycopg.Connection, settings: SourceSettings) -> list[Problem]:
    """A slot of that name made for something else (another plugin or database)."""
    slot = settings.slot_name
    kind = slot_kind(conn, settings)
    if kind is None or kind[0]:
        return []
    return [
        Problem(
            f"replication slot {slot!r} exists but is not a pgoutput slot of this database",
            _text(conn, sql.SQL("SELECT pg_drop_replication_slot({});").format(sql.Literal(slot)))
            + " -- then run 'cdc setup' (or set another 'slot')",
        )
    ]


def _create_publication(settings: SourceSettings) -> sql.Composed:
    tables = sql.SQL(", ").join(_table(schema, table) for schema, table in settings.qualified_tables)
    return sql.SQL("CREATE PUBLICATION {} FOR TABLE {};").format(sql.Identifier(settings.publication_name), tables)


def _create_slot(settings: SourceSettings) -> sql.Composed:
    return sql.SQL("SELECT pg_create_logical_replication_slot({}, 'pgoutput');").format(sql.Literal(settings.slot_name))


def stream_statements(conn: psycopg.Connection, settings: SourceSettings) -> list[sql.Composed]:
    """The statements still needed for the stream besides its slot (replica identity, the
    publication with every configured table): what ``cdc setup`` and ``cdc snapshot`` run first."""
    statements = [statement for _, statement in _replica_identity_statements(conn, settings)]
    if not _publication_exists(conn, settings.publication_name):
        return [*statements, _create_publication(settings)]
    return statements + [statement for _, statement in _publication_additions(conn, settings)]


def setup_statements(conn: psycopg.Connection, settings: SourceSettings) -> list[sql.Composed]:
    """The statements still needed for this source; none when everything exists."""
    statements = stream_statements(conn, settings)
    if slot_kind(conn, settings) is None:
        statements.append(_create_slot(settings))
    return statements


def run_statements(
    conn: psycopg.Connection,
    settings: SourceSettings,
    statements: list[sql.Composed],
    say: Callable[[str], None],
    on_failure: str = "",
) -> None:
    """Run set-up statements one by one, saying each; the first that fails stops with its
    error and ``on_failure`` (what to do instead), as a fatal error."""
    for statement in statements:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            raise SourceError(
                f"source {settings.name}: {statement.as_string(conn)} failed: {one_line(exc)}{on_failure}", fatal=True
            ) from None
        say(f"[{settings.name}] {statement.as_string(conn)}")


def slot_status(conn: psycopg.Connection, settings: SourceSettings) -> dict | None:
    """Server-side position and lag of the slot, for ``cdc status``."""
    row = conn.execute(
        "SELECT confirmed_flush_lsn::text, restart_lsn::text, active,"
        " pg_current_wal_lsn()::text,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (settings.slot_name,),
    ).fetchone()
    if row is None:
        return None
    return {
        "confirmed_flush_lsn": row[0],
        "restart_lsn": row[1],
        "active": row[2],
        "current_wal_lsn": row[3],
        "lag_bytes": row[4],
        "retained_wal_bytes": row[5],
    }
