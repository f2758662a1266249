"""Resolution by policy (pure): what happens to a conflict, and the rows a merge makes.

A single source's row is the truth: a conflict there is resolved automatically to the
latest write, unless its policy is ``manual`` (the key is held, targets keep the last
agreed row until a person resolves it) or the table asks for ``repair = "propose"`` (a
lost update gets the merged row that restores the lost change as a proposal in the review
queue, or with ``repair = "write"`` written back into the source). A stream gap is never
resolved automatically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cdc.conflicts.model import Conflict


@dataclass(frozen=True, slots=True)
class Decision:
    status: str  # auto_resolved or pending
    hold: bool  # targets keep the last agreed row of the key until the conflict is resolved
    resolution: dict[str, Any] | None


def policy_for(conflict: Conflict, table_policy: str | None, field_policies: Mapping[str, str], default: str) -> str:
    """The field's policy when one of the conflict's fields has one (``manual`` first), else the table's."""
    policies = [field_policies[f] for f in conflict.fields if f in field_policies]
    if "manual" in policies:
        return "manual"
    if policies:
        return policies[0]
    return table_policy or default


def decide(conflict: Conflict, policy: str, repair: str = "off") -> Decision:
    latest = conflict.events[-1]
    if conflict.type == "stream_gap":
        return Decision("pending", False, None)
    if policy == "manual":
        return Decision("pending", True, {"policy": "manual"})
    if repair in ("propose", "write") and conflict.type == "lost_update" and len(conflict.events) == 2:
        proposed = merged_row(conflict)
        if proposed is not None and repair == "propose":
            return Decision("pending", False, {"policy": policy, "proposed_row": proposed})
        if proposed is not None:
            return Decision(
                "auto_resolved",
                False,
                {"policy": policy, "winner": "merged", "resolved_row": proposed, "written_back": True},
            )
    return Decision("auto_resolved", False, {"policy": policy, "winner": latest.event_id, "resolved_row": latest.after})


def merged_row(conflict: Conflict) -> dict[str, Any] | None:
    """Three-way merge of the conflict's two writes against the row before the first one."""
    first, last = conflict.events[0], conflict.events[-1]
    if first.before is None or first.after is None or last.after is None:
        return None
    return three_way_merge(first.before, first.after, last.after)


def three_way_merge(base: dict[str, Any], mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Fields changed on one side only keep that change; fields changed on both take ``theirs``
    (the later write: last writer wins for the overlap)."""
    merged = dict(theirs)
    for name, value in mine.items():
        if base.get(name) != value and theirs.get(name) == base.get(name):
            merged[name] = value
    return merged
