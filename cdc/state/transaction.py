"""One write transaction of the state store, and the one-line error of an SQLite failure.

A full disk (or a file size limit) makes SQLite roll the transaction back by itself; the
error then says what to do, and nothing that was not stored has been acknowledged.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Any

from cdc.errors import StateStoreError


class StoreTransaction:
    """``with store.transaction():`` — one SQLite write transaction."""

    def __init__(self, store: Any) -> None:  # a StateStore, which imports this module
        self._store = store

    def __enter__(self) -> None:
        try:
            self._store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_failure(self._store.path, exc) from None
        self._store.transaction_serial += 1
        self._store._before_commit = []
        self._store._appended = {}

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        store = self._store
        callbacks, store._before_commit = store._before_commit, []
        try:
            if exc_type is None:
                for callback in callbacks:
                    callback()
                store._write_pending()
                store._db.execute("COMMIT")
        except sqlite3.Error as failure:
            self._roll_back()
            raise store_failure(store.path, failure) from None
        except BaseException:
            self._roll_back()
            raise
        finally:
            store._appended, store._unwritten = {}, []
            store._unwritten_rows.clear()
            store._versions.forget()
        if exc_type is not None:
            self._roll_back()
            if isinstance(exc, sqlite3.Error):
                raise store_failure(store.path, exc) from None

    def _roll_back(self) -> None:
        """Roll back what is open (SQLite has rolled back by itself after a full disk)."""
        db = self._store._db
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is unusable; the error that brought us here is reported


def store_failure(path: Path, exc: sqlite3.Error) -> StateStoreError:
    """A one-line error for an SQLite failure of the store at ``path``, saying what to do."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("disk is full" in text or "disk I/O error" in text):
        return StateStoreError(
            f"state store {path}: cannot write ({text}): free space on {path.parent} (or raise the service's"
            " file size limit), then start cdc again; nothing that was not stored has been acknowledged"
        )
    return StateStoreError(f"state store {path}: {text}")
