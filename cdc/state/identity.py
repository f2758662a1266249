"""The state store's identity: a random id made with the store and kept with every target position.

A target's position is a place in one state store's event log, whose numbering a new
store starts again (the pseudo-sources ``sync:``, ``backfill:`` count their transactions
from 1). A position written by another installation of cdc (the state directory deleted
and cdc set up again against the same databases) must therefore never be taken for one
of this store: a target that finds one treats it as absent and applies that stream again
from nothing, which upserts and deletes by key make safe.

A store made before identities gets its identity the first time a cdc that has them opens
it for writing, and the positions it wrote until then, which carry no identity, are its own
(``upgraded``). A store made with an identity holds no position written without one.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Installation:
    """Who writes a position: ``id`` is kept with it (None: a cdc before identities)."""

    id: str | None
    upgraded: bool  # positions kept without an id are this installation's own

    def holds(self, marked: str | None) -> bool:
        """Whether a position kept with ``marked`` was written by this installation."""
        return marked == self.id or (marked is None and self.upgraded)

    def describe(self, marked: str | None) -> str:
        return f"installation {marked}" if marked is not None else "a cdc without installation identities"


# A store read-only before a cdc with identities has opened it, or a target made without a
# store: it writes positions without an id and holds every position without one.
WITHOUT_IDENTITY = Installation(None, upgraded=True)


def ensure_identity(db: sqlite3.Connection, new_store: bool) -> Installation:
    """The store's identity, made now if it has none (in one statement, so both keys or neither)."""
    found = read_identity(db)
    if found is not WITHOUT_IDENTITY:
        return found
    db.execute(
        "INSERT INTO meta VALUES ('installation', ?), ('installation_upgraded', ?)",
        (str(uuid.uuid4()), "0" if new_store else "1"),
    )
    return read_identity(db)


def read_identity(db: sqlite3.Connection) -> Installation:
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('installation', 'installation_upgraded')"))
    if "installation" not in meta:
        return WITHOUT_IDENTITY
    return Installation(meta["installation"], upgraded=meta.get("installation_upgraded") == "1")
