"""A preflight problem (``cdc check``) and the statement or setting that fixes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """A preflight problem (``cdc check``) and the statement or setting that fixes it.

    A ``warning`` does not stop cdc yet (a stored position close to being purged); an
    ``error`` does.
    """

    what: str
    fix: str
    severity: str = "error"
