"""The event document (the README's form) as compact JSON text, for the events cdc makes itself.

Synced rows, rows resolved by hand and backfilled rows are events too; they are rendered here
with the same fields, in the same order, as the versioner's (which renders its own inline,
as the hot path), plus fields of their own (``extra``, already rendered).
"""

from __future__ import annotations

from typing import Any

from cdc.values import compact_json, dumps_row


def render(
    *,
    event_id: str,
    source: str,
    schema: str,
    table: str,
    op: str,
    key: str,
    version: int,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    commit_ts: str,
    position: str,
    writer: Any = None,
    conflicts: list[str] | None = None,
    changed: list[str] | None = None,
    txid: str | None = None,
    extra: str = "",
) -> str:
    """``key`` is the key's JSON text; ``extra`` more fields, as ``,"name":value`` text."""
    return (
        f'{{"event_id":{compact_json(event_id)},"source":{compact_json(source)},'
        f'"schema":{compact_json(schema)},"table":{compact_json(table)},"op":"{op}","key":{key},'
        f'"version":{version},"before":{dumps_row(before)},"after":{dumps_row(after)},'
        f'"changed":{compact_json(changed or [])},"txid":{compact_json(txid)},'
        f'"commit_ts":{compact_json(commit_ts)},"position":{compact_json(position)},'
        f'"writer":{compact_json(writer)},"conflicts":{compact_json(conflicts or [])}{extra}}}'
    )
