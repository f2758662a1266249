"""What every source provides: the stream interface the pipeline reads, and the preflight
``Problem`` that ``cdc check`` reports. It imports no concrete source (see ``cdc.sources``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from cdc.errors import SourceError  # noqa: F401 (re-exported)
from cdc.model import Idle, RowChange, TableShape, TxnBegin, TxnCommit, WriteBack
from cdc.problems import Problem  # noqa: F401 (re-exported)

SourceItem = TxnBegin | RowChange | TxnCommit | Idle | WriteBack | TableShape


class Source(Protocol):
    name: str

    def start(self, resume_position: str | None, drain: bool = False) -> None:
        """Connect and stream from just after ``resume_position`` (None: where the slot is)."""

    def read(self, timeout: float) -> list[SourceItem]:
        """The items available now, waiting up to ``timeout`` seconds for the first one.

        With ``drain``, an ``Idle`` whose ``reached`` is ``"drained"`` says that everything
        up to the source's end position at start has been read.
        """

    def acknowledge(self, resume_position: str) -> None:
        """Everything up to ``resume_position`` is durable in the state store and every target."""

    def keepalive(self) -> None:
        """Keep the connection alive while the pipeline is not reading (a full queue)."""

    def close(self) -> None: ...


class SnapshotReader(Protocol):
    """A consistent read of a source's tables in primary-key chunks, and the stream position it matches."""

    def begin(self, resume: dict[str, Any] | None) -> dict[str, Any]: ...

    def begin_read(self) -> str: ...

    def count(self, schema: str, table: str, where: str | None = None) -> int: ...

    def chunks(
        self, schema: str, table: str, after: list[Any] | None, size: int, where: str | None = None
    ) -> Iterator[tuple[list[RowChange], list[Any]]]: ...

    def close(self) -> None: ...
