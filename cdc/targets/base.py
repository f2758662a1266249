"""What every target provides: apply versioned events idempotently and remember the last applied position.

A target's ``position(source)`` is the last ``(txn_key, seq)`` it holds for that source;
``apply`` writes a batch and that batch's last position atomically, so that after a crash
the pipeline resumes each target exactly after what it holds.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Protocol

from cdc.config import TargetSettings
from cdc.model import Event
from cdc.state.store import Position


class Target(Protocol):
    name: str
    batch_size: int

    def open(self) -> None: ...

    def position(self, source: str) -> Position | None: ...

    def apply(self, source: str, events: list[Event]) -> None: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


class DatabaseTarget:
    """What the database targets share: positions kept in the target database and written in
    the same transaction as each batch, so a checkpoint has nothing more to make durable."""

    def __init__(self, settings: TargetSettings, marks_writes: bool = False) -> None:
        self.name = settings.name
        self.batch_size = settings.batch_size
        self._settings = settings
        self._positions: dict[str, Position] = {}
        self._marks_writes = marks_writes  # a sync target: each transaction says it is cdc's own write

    def position(self, source: str) -> Position | None:
        return self._positions.get(source)

    def checkpoint(self) -> None:
        """Each batch is committed by ``apply``; nothing more to make durable."""


def consecutive_runs(
    actions: Iterable[tuple[Hashable, tuple[Any, ...]]],
) -> Iterator[tuple[Any, list[tuple[Any, ...]]]]:
    """Consecutive (statement, params) actions with the same statement, as (statement, [params...]),
    so that each run goes to the database in one ``executemany`` and the order is kept."""
    run: list[tuple[Any, ...]] = []
    current: Any = None
    for statement, params in actions:
        if run and statement != current:
            yield current, run
            run = []
        current = statement
        run.append(params)
    if run:
        yield current, run
