"""The privileges of the account a MySQL/MariaDB source connects as, read from ``SHOW GRANTS``.

``parse_grants`` turns the ``GRANT ... ON db.table TO ...`` lines into ``Grant`` s (role,
routine and proxy grants are left out), ``has_privilege`` says whether they cover a
privilege on a database or table (database names may be ``LIKE`` patterns), and the
checks report what the account lacks to read the binlog (``check_privileges``) or to
write the tables cdc keeps in sync (``check_writes``), each with the ``GRANT`` that fixes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cdc.model import SYNC_POSITION_TABLE
from cdc.sources.base import Problem
from cdc.sources.mysql.server import Server, quote_identifier

_REPLICATION_CLIENT = {"REPLICATION CLIENT", "BINLOG MONITOR"}  # MariaDB 10.5 renamed it
_ALIASES = {"ALL": "ALL PRIVILEGES", "REPLICATION REPLICA": "REPLICATION SLAVE"}
_IDENT = r"(?:\*|`(?:[^`]|``)*`|[\w$]+)"
_OBJECT = re.compile(
    rf"^(?:(?P<routine>FUNCTION|PROCEDURE|PACKAGE(?:\s+BODY)?)\s+|TABLE\s+)?"
    rf"(?P<db>{_IDENT})(?:\.(?P<table>{_IDENT}))?\s+TO\s",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``GRANT privs ON db.table`` line; ``None`` stands for ``*``."""

    privileges: frozenset[str]
    db: str | None
    table: str | None


def _unquote(identifier: str) -> str | None:
    if identifier == "*":
        return None
    return identifier[1:-1].replace("``", "`") if identifier.startswith("`") else identifier


def _split_on(text: str) -> tuple[str, str] | None:
    """``privs`` and the rest after the top-level `` ON `` of a GRANT's body."""
    depth, quoted = 0, False
    for i, char in enumerate(text):
        if char == "`":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and text[i : i + 4].upper() == " ON ":
            return text[:i], text[i + 4 :].lstrip()
    return None


def _privileges(text: str) -> frozenset[str]:
    """Privilege names of a GRANT; column privileges (``SELECT (`a`)``) are left out."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    names = {" ".join(part.split()).upper() for part in [*parts, current] if "(" not in part}
    return frozenset(_ALIASES.get(name, name) for name in names if name)


def parse_grants(lines: Any) -> list[Grant]:
    """The privilege grants among ``SHOW GRANTS`` lines (role grants and routine grants are skipped)."""
    grants = []
    for line in lines:
        body = str(line).strip()
        if not body.upper().startswith("GRANT "):
            continue
        split = _split_on(body[6:])
        match = _OBJECT.match(split[1]) if split else None
        if split is None or match is None or match["routine"] or "PROXY" in _privileges(split[0]):
            continue
        grants.append(
            Grant(_privileges(split[0]), _unquote(match["db"]), _unquote(match["table"]) if match["table"] else None)
        )
    return grants


def _like(pattern: str, name: str) -> bool:
    """Whether a database-level grant's name (with ``%``, ``_`` and ``\\`` escapes) covers ``name``."""
    regex = "".join(
        ".*" if part == "%" else "." if part == "_" else re.escape(part[-1])
        for part in re.findall(r"\\.|.", pattern, re.S)
    )
    return re.fullmatch(regex, name, re.S) is not None


def has_privilege(grants: list[Grant], wanted: set[str], db: str | None = None, table: str | None = None) -> bool:
    """Whether one of ``wanted`` is granted globally, on ``db``, or on ``db.table``."""
    for grant in grants:
        if not (grant.privileges & (wanted | {"ALL PRIVILEGES"})):
            continue
        if grant.db is None:
            return True
        if db is not None and grant.table is None and _like(grant.db, db):
            return True
        if db is not None and grant.db == db and grant.table == table:
            return True
    return False


def check_privileges(server: Server, grants: list[Grant], account: str) -> list[Problem]:
    """The global privileges the account lacks to read the binlog and its position."""
    missing = []
    if not has_privilege(grants, {"REPLICATION SLAVE"}):
        missing.append("REPLICATION SLAVE")
    if not has_privilege(grants, _REPLICATION_CLIENT):
        missing.append("BINLOG MONITOR" if server.mariadb and server.version >= (10, 5) else "REPLICATION CLIENT")
    if not missing:
        return []
    return [
        Problem(
            f"account {account} lacks {' and '.join(missing)} (needed to read the binlog and its position)",
            f"GRANT {', '.join(missing)} ON *.* TO {account};",
        )
    ]


def check_writes(written: list[tuple[str, str]], grants: list[Grant], account: str) -> list[Problem]:
    """The privileges the account lacks to write the ``written`` tables and cdc's own write markers."""
    problems = []
    wanted = ("INSERT", "UPDATE", "DELETE")
    for db, table in written:
        missing = [p for p in wanted if not has_privilege(grants, {p}, db, table)]
        if missing:
            quoted = f"{quote_identifier(db)}.{quote_identifier(table)}"
            problems.append(
                Problem(
                    f"account {account} cannot {', '.join(missing)} {db}.{table}, which cdc keeps in sync",
                    f"GRANT {', '.join(missing)} ON {quoted} TO {account};",
                )
            )
    positions_db = SYNC_POSITION_TABLE.split(".", 1)[0]
    missing = [p for p in ("CREATE", "SELECT", *wanted[:2]) if not has_privilege(grants, {p}, positions_db)]
    if missing:
        problems.append(
            Problem(
                f"account {account} cannot {', '.join(missing)} in database {positions_db}, where"
                " cdc marks its own writes",
                f"GRANT {', '.join(missing)} ON {quote_identifier(positions_db)}.* TO {account};",
            )
        )
    return problems
