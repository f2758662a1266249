"""The DBA's row filter (``cdc backfill --where``) as it goes into PostgreSQL queries.

The condition is SQL the DBA wrote, so it is put in a query only as one expression: it must
close every parenthesis it opens and no more, and hold no ``;`` (outside its strings,
quoted names and comments, which are skipped as PostgreSQL's lexer reads them, with
``standard_conforming_strings`` on). ``where_clause`` is the one place that turns it into
the body of a WHERE, in parentheses of its own and on lines of its own (a trailing ``--``
comment ends with its line), so that the count of ``--dry-run`` and the read see the same
rows. The queries holding it are run as prepared statements, which the server refuses to
make of more than one statement, in the read-only transaction of the read.
"""

from __future__ import annotations

import re

from psycopg import sql

from cdc.errors import CommandError, ExitCode

_DOLLAR_QUOTE = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_NAME_CHAR = re.compile(r"[\w$]")


def where_clause(where: str | None) -> sql.Composable:
    """The WHERE body that keeps the rows of ``where`` (every row when None), for a query
    executed with parameters (its ``%`` doubled)."""
    if not where or not where.strip():
        return sql.SQL("true")
    problem = _shape_problem(where)
    if problem:
        raise CommandError(f"--where {where!r}: {problem}", ExitCode.USAGE)
    return sql.SQL("(\n{}\n)").format(sql.SQL(where.replace("%", "%%")))


def _shape_problem(text: str) -> str | None:
    """Why ``text`` is not one SQL expression (None when it is)."""
    depth, at = 0, 0
    while at < len(text):
        char = text[at]
        if char == "'":
            escapes = at > 0 and text[at - 1] in "eE" and (at < 2 or not _NAME_CHAR.match(text[at - 2]))
            at = _string_end(text, at, escapes)
        elif char == '"':
            at = _closing(text, at + 1, '"')
        elif char == "$" and not (at > 0 and _NAME_CHAR.match(text[at - 1])) and _DOLLAR_QUOTE.match(text, at):
            tag = _DOLLAR_QUOTE.match(text, at)
            assert tag is not None
            end = text.find(tag.group(), tag.end())
            at = -1 if end < 0 else end + len(tag.group())
        elif text.startswith("--", at):
            end = text.find("\n", at)
            at = len(text) if end < 0 else end + 1
        elif text.startswith("/*", at):
            at = _comment_end(text, at)
        else:
            if char == ";":
                return "holds a ';': give one condition, not statements"
            depth += (char == "(") - (char == ")")
            if depth < 0:
                return "closes a parenthesis it did not open: give one condition"
            at += 1
        if at < 0:
            return "a string, quoted name or comment is not closed"
    return "leaves a parenthesis open" if depth else None


def _closing(text: str, at: int, quote: str) -> int:
    """Just after the ``quote`` closing what starts at ``at`` (a doubled one stays inside); -1 if none."""
    while True:
        end = text.find(quote, at)
        if end < 0:
            return -1
        if not text.startswith(quote * 2, end):
            return end + 1
        at = end + 2


def _string_end(text: str, at: int, escapes: bool) -> int:
    """Just after the string literal opened at ``at``; an ``E'...'`` one has backslash escapes."""
    if not escapes:
        return _closing(text, at + 1, "'")
    at += 1
    while at < len(text):
        if text[at] == "\\" or text.startswith("''", at):
            at += 2
        elif text[at] == "'":
            return at + 1
        else:
            at += 1
    return -1


def _comment_end(text: str, at: int) -> int:
    """Just after the block comment opened at ``at`` (they nest); -1 if it is not closed."""
    depth = 0
    while at < len(text):
        if text.startswith("/*", at):
            depth, at = depth + 1, at + 2
        elif text.startswith("*/", at):
            depth, at = depth - 1, at + 2
            if not depth:
                return at
        else:
            at += 1
    return -1
