"""What every target provides: apply versioned events idempotently and remember the last applied position.

A target's ``position(source)`` is the last ``(txn_key, seq)`` it holds for that source;
``apply`` writes a batch and that batch's last position atomically, so that after a crash
the pipeline resumes each target exactly after what it holds.

A database target keeps with each position the identity of the state store that wrote it
(the column ``installation``, ``cdc.state.identity``). A position of another installation
(the state directory deleted and cdc set up again) counts as absent, with a warning: the
target applies that stream again from this store's first event, upserts and deletes by key
that are safe to repeat, instead of skipping the new store's events, whose numbering
starts again. Refusing to start would lose nothing either, but would need a person for a
step that cdc can take safely on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Protocol

from cdc.config import TargetSettings
from cdc.model import Event
from cdc.state.identity import WITHOUT_IDENTITY, Installation
from cdc.state.store import Position

log = logging.getLogger("cdc.targets")


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

    def __init__(
        self, settings: TargetSettings, marks_writes: bool = False, installation: Installation = WITHOUT_IDENTITY
    ) -> None:
        self.name = settings.name
        self.batch_size = settings.batch_size
        self._settings = settings
        self._positions: dict[str, Position] = {}
        self._marks_writes = marks_writes  # a sync target: each transaction says it is cdc's own write
        self._installation = installation

    def _take_positions(self, rows: Iterable[tuple[str, str, int, str | None]]) -> None:
        """The positions read from the position table, (source, txn_key, seq, installation) each;
        those of another installation are left out, each with a warning."""
        self._positions = {}
        for source, txn_key, seq, marked in rows:
            if self._installation.holds(marked):
                self._positions[source] = (txn_key, int(seq))
            else:
                warn_foreign(self.name, source, marked, self._installation)

    def position(self, source: str) -> Position | None:
        return self._positions.get(source)

    def checkpoint(self) -> None:
        """Each batch is committed by ``apply``; nothing more to make durable."""


def warn_foreign(
    target: str,
    source: str,
    marked: str | None,
    installation: Installation,
    repeating: str = "upserts and deletes by key, safe to repeat",
) -> None:
    """Say that ``target`` held a position of ``source`` written by another installation (``marked``)."""
    log.warning(
        "target %s holds a position of %s written by another cdc installation (%s; this state store"
        " is %s): taken as absent, so %s is applied again from this installation's first event (%s)",
        target,
        source,
        installation.describe(marked),
        installation.describe(installation.id),
        source,
        repeating,
        extra={"target": target, "stream": source},
    )


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
