"""The ``jsonl`` target: one event per line, appended to a file, fsynced at each checkpoint.

Positions live beside the file in ``<path>.pos`` (written after each fsync, with the
file's size at that moment, and the state store's identity). On open, the lines written
after that size are read back to learn how far the file really got, and a torn last line is
cut off, so that a crash never writes an event twice. Positions of another installation
(the state directory deleted and cdc set up again) are taken as absent: the new store's
events are appended after the old ones, never skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

from cdc.config import TargetSettings
from cdc.errors import TargetError
from cdc.model import Event
from cdc.problems import Problem
from cdc.state.store import Position, StateStore
from cdc.targets.base import warn_foreign


class JsonlTarget:
    def __init__(self, settings: TargetSettings, store: StateStore) -> None:
        assert settings.path is not None
        self.name = settings.name
        self.batch_size = settings.batch_size
        self.path = Path(settings.path)
        self._positions_path = self.path.with_name(self.path.name + ".pos")
        self._store = store
        self._positions: dict[str, Position] = {}
        self._file: BinaryIO | None = None

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._recover()
            self._file = open(self.path, "ab")
        except OSError as exc:
            raise TargetError(f"target {self.name}: cannot open {self.path}: {exc.strerror}") from None

    def _recover(self) -> None:
        offset, foreign = 0, False
        if self._positions_path.exists():
            saved = json.loads(self._positions_path.read_text())
            offset = saved["offset"]
            foreign = not self._store.installation.holds(saved.get("installation"))
            for source, pos in saved["positions"].items():
                if foreign:
                    warn_foreign(self.name, source, saved.get("installation"), self._store.installation, "appended")
                else:
                    self._positions[source] = (pos[0], pos[1])
        if not self.path.exists():
            return
        with open(self.path, "r+b") as file:
            file.seek(min(offset, os.path.getsize(self.path)))
            good_end = file.tell()
            for line in file:
                if not line.endswith(b"\n"):
                    break
                if foreign:  # the earlier installation's, kept as they are
                    good_end += len(line)
                    continue
                event_id = json.loads(line)["event_id"]
                found = self._store.position_of(event_id)
                if found is None:
                    raise TargetError(
                        f"target {self.name}: {self.path} holds event {event_id} "
                        "that the state store does not know; was the state directory replaced?"
                    )
                self._positions[found[0]] = found[1]
                good_end += len(line)
            file.truncate(good_end)

    def position(self, source: str) -> Position | None:
        return self._positions.get(source)

    def apply(self, source: str, events: list[Event]) -> None:
        if not events:
            return
        assert self._file is not None
        self._file.write(b"".join(event.doc.encode("utf-8") + b"\n" for event in events))
        self._positions[source] = (events[-1].txn_key, events[-1].seq)

    def checkpoint(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        saved = {
            "offset": self._file.tell(),
            "installation": self._store.installation.id,
            "positions": {source: list(pos) for source, pos in self._positions.items()},
        }
        temp = self._positions_path.with_name(self._positions_path.name + ".tmp")
        temp.write_text(json.dumps(saved))
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, self._positions_path)

    def close(self) -> None:
        if self._file is not None:
            self.checkpoint()
            self._file.close()
            self._file = None


def make(settings: TargetSettings, store: StateStore, marks_writes: bool = False) -> JsonlTarget:
    return JsonlTarget(settings, store)


def check(settings: TargetSettings) -> list[Problem]:
    """Whether the cdc user can create and write the log file."""
    if settings.path is None:
        return []
    folder = settings.path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if os.access(folder, os.W_OK):
        return []
    return [Problem(f"{settings.path} is not writable", f"create {settings.path.parent} writable by the cdc user")]
