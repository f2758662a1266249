"""The conflict review page: plain server-rendered HTML, no script, no front-end build.

``listing`` shows open and recent conflicts with filters (type, status, table) and the
daemon's lag and throughput; ``detail`` shows the competing writes side by side, every
column of their rows with the ones that differ highlighted, and the three ways to resolve:
keep one write's row, merge, or edit the row (a form posting to ``/conflicts/<id>/resolve``,
handled by the same code as ``cdc conflicts resolve``). Each form carries the session's CSRF
token (``cdc.web.guard``) in a hidden field.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from cdc.web.guard import CSRF_FIELD

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.differs{background:#ffe08a}.pending{color:#b00}.muted{color:#777}
form.inline{display:inline}textarea{width:40em;height:10em;font-family:monospace}pre{margin:0}
"""
STATUSES = ("pending", "auto_resolved", "resolved_by_hand")


def _page(title: str, body: str) -> bytes:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    ).encode()


def _value(value: Any) -> str:
    return escape(json.dumps(value, ensure_ascii=False, default=str))


def listing(conflicts: list[dict[str, Any]], filters: dict[str, str], status: dict[str, Any]) -> bytes:
    rows = "".join(
        f"<tr><td><a href='/conflicts/{quote(c['id'], safe='')}'>{escape(c['id'])}</a></td>"
        f"<td>{escape(c['type'])}</td><td>{escape(c['table'])}</td><td>{escape(str(c['key']))}</td>"
        f"<td>{escape(', '.join(c['fields']))}</td><td class='{escape(c['status'])}'>{escape(c['status'])}</td>"
        f"<td>{escape(c['commit_ts'])}</td><td>{escape(c['explanation'])}</td></tr>"
        for c in conflicts
    )
    options = "".join(f"<option{' selected' if filters.get('status') == s else ''}>{s}</option>" for s in STATUSES)
    lag = ", ".join(f"{escape(name)}: lag {value:.1f}s" for name, value in sorted(status.get("lag", {}).items()))
    return _page(
        "cdc conflicts",
        f"""
<h1>Conflicts</h1>
<p class='muted'>{escape(lag) or "no source streaming yet"}; {status.get("events_per_second", 0):.1f} events/s;
{status.get("pending", 0)} pending</p>
<form method='get' action='/'>type <input name='type' value='{escape(filters.get("type", ""))}'>
table <input name='table' value='{escape(filters.get("table", ""))}'>
status <select name='status'><option value=''>any</option>{options}</select> <button>filter</button></form>
<table id='conflicts'><tr><th>id</th><th>type</th><th>table</th><th>key</th><th>fields</th><th>status</th>
<th>commit</th><th>explanation</th></tr>{rows}</table>""",
    )


def detail(record: dict[str, Any], docs: list[dict[str, Any] | None], csrf: str, message: str = "") -> bytes:
    """One conflict: its writes side by side (``docs``: their event documents, None if pruned).

    ``csrf`` is the page session's token, sent back with each resolving form."""
    present = [d for d in docs if d is not None]
    columns: list[str] = list(record["fields"])
    for doc in present:
        for name in doc.get("after") or doc.get("before") or {}:
            if name not in columns:
                columns.append(name)
    heads = "".join(
        f"<th>{escape(e['event_id'])}<br><span class='muted'>{escape(str(e.get('writer') or e.get('source')))}"
        f" at {escape(e['commit_ts'])}</span></th>"
        for e in record["events"]
    )
    body_rows = []
    for name in columns:
        values = [
            (d["after"] if d.get("after") is not None else d.get("before") or {}).get(name) if d is not None else None
            for d in docs
        ]
        differs = len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1
        cells = "".join(f"<td class='{'differs' if differs else ''}'><pre>{_value(v)}</pre></td>" for v in values)
        body_rows.append(f"<tr data-column='{escape(name)}'><th>{escape(name)}</th>{cells}</tr>")
    target = f"/conflicts/{quote(record['id'], safe='')}/resolve"
    # each resolving form's attributes, closed by its hidden CSRF field
    post = f"method='post' action='{target}'><input type='hidden' name='{CSRF_FIELD}' value='{escape(csrf)}'"
    keep = "".join(
        f"<form class='inline' {post}><input type='hidden' name='keep'"
        f" value='{escape(e['event_id'])}'><button name='action' value='keep'>keep {escape(e['event_id'])}</button>"
        f"</form> "
        for e in record["events"]
    )
    latest = present[-1].get("after") if present else None
    resolution = record.get("resolution")
    return _page(
        f"conflict {record['id']}",
        f"""
<p><a href='/'>all conflicts</a></p>
<h1>{escape(record["type"])} on {escape(record["table"])} {escape(str(record["key"]))}</h1>
<p>{escape(record["explanation"])}</p>
<p>status: <b id='status' class='{escape(record["status"])}'>{escape(record["status"])}</b>
{("<span class=muted>" + _value(resolution) + "</span>") if resolution else ""}</p>
{f"<p id='message'>{escape(message)}</p>" if message else ""}
<table id='writes'><tr><th>column</th>{heads}</tr>{"".join(body_rows)}</table>
<h2>Resolve</h2>
<p>{keep}<form class='inline' {post}><button name='action' value='merge'>merge</button>
</form></p>
<form {post}><p>edit the row:</p>
<textarea name='row'>{_value(latest) if latest is not None else ""}</textarea><br>
<button name='action' value='row'>save this row</button></form>""",
    )


def query_string(filters: dict[str, str]) -> str:
    return urlencode({k: v for k, v in filters.items() if v})
