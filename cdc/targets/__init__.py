"""The targets' registry: a target ``kind`` names the module that implements it.

Each module (``cdc.targets.postgres``, ``cdc.targets.mysql``, ``cdc.targets.jsonl``) offers
``make(settings, store, marks_writes)`` and ``check(settings)`` (what ``cdc check`` reports).
Nothing outside this registry imports a concrete target; the interface is ``cdc.targets.base``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, cast

from cdc.errors import TargetError
from cdc.targets.base import DatabaseTarget, Target, consecutive_runs

if TYPE_CHECKING:
    from cdc.config import TargetSettings
    from cdc.problems import Problem
    from cdc.state.store import StateStore

__all__ = ["DatabaseTarget", "Target", "TargetError", "check_target", "consecutive_runs", "make_target"]

KINDS = {"postgres": "cdc.targets.postgres", "mysql": "cdc.targets.mysql", "jsonl": "cdc.targets.jsonl"}


class TargetKind(Protocol):
    """What a target module offers, as module-level functions."""

    def make(self, settings: TargetSettings, store: StateStore, marks_writes: bool = False) -> Target: ...

    def check(self, settings: TargetSettings) -> list[Problem]: ...


def _module(settings: TargetSettings) -> TargetKind:
    module = KINDS.get(settings.kind)
    if module is None:
        raise TargetError(f"target {settings.name}: unknown kind {settings.kind!r}")
    return cast("TargetKind", importlib.import_module(module))


def make_target(settings: TargetSettings, store: StateStore, marks_writes: bool = False) -> Target:
    """The target of ``settings``; ``marks_writes`` for a sync target (a database source written back)."""
    return _module(settings).make(settings, store, marks_writes)


def check_target(settings: TargetSettings) -> list[Problem]:
    """What stops the target from working, each problem with its fix (``cdc check``)."""
    return _module(settings).check(settings)
