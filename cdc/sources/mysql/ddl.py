"""What an ``ALTER TABLE`` statement of the binlog does to a table's existing rows (pure).

MariaDB logs DDL as the statement's text (a query event) before the next table map of the
table. Its columns are in that table map; what it cannot show is read here: the columns an
``ADD`` fills in existing rows without row events (a ``DEFAULT``, ``NOT NULL`` and so the
type's implicit default, ``AUTO_INCREMENT``, a generated column), the columns a ``MODIFY``
or ``CHANGE`` makes ``NOT NULL`` (NULLs become the implicit default where the SQL mode is
not strict), and the clauses that change stored values otherwise (``CONVERT TO CHARACTER
SET``, a column's character set, dropping, truncating, exchanging or importing data). Index,
default and table-option clauses change no rows. A clause not understood raises
``UnparsableAlter``, for the caller to assume the worst.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cdc.sources.mysql.column_types import MapShape

_TOKEN = re.compile(
    r"""\s+|/\*M?!\d*|/\*.*?\*/|\*/|--[ \t][^\n]*|\#[^\n]*
    |`(?:[^`]|``)*`
    |'(?:[^'\\]|\\.|'')*'
    |"(?:[^"\\]|\\.|"")*"
    |[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?
    |[\w$]+
    |.""",
    re.VERBOSE | re.DOTALL,
)
_NO_ROWS_ADDED = {"INDEX", "KEY", "PRIMARY", "UNIQUE", "FULLTEXT", "SPATIAL", "CONSTRAINT", "FOREIGN", "CHECK"}
_DATA_PARTITION_OPS = {"DROP", "TRUNCATE", "EXCHANGE", "IMPORT", "DISCARD"}
_TABLE_OPTIONS = {
    "ALGORITHM", "ANALYZE", "AUTO_INCREMENT", "AVG_ROW_LENGTH", "CHARACTER", "CHARSET", "CHECKSUM",
    "COALESCE", "COLLATE", "COMMENT", "COMPRESSION", "CONNECTION", "DATA", "DEFAULT", "DELAY_KEY_WRITE",
    "DISABLE", "ENABLE", "ENCRYPTED", "ENCRYPTION", "ENCRYPTION_KEY_ID", "ENGINE", "FORCE", "IETF_QUOTES",
    "INSERT_METHOD", "KEY_BLOCK_SIZE", "LOCK", "MAX_ROWS", "MIN_ROWS", "OPTIMIZE", "ORDER", "PACK_KEYS",
    "PAGE_CHECKSUM", "PAGE_COMPRESSED", "PAGE_COMPRESSION_LEVEL", "PARTITION", "PARTITIONS", "PASSWORD",
    "REBUILD", "REMOVE", "REORGANIZE", "REPAIR", "ROW_FORMAT", "SEQUENCE", "STATS_AUTO_RECALC",
    "STATS_PERSISTENT", "STATS_SAMPLE_PAGES", "TABLESPACE", "TRANSACTIONAL", "UNION", "WITH", "WITHOUT",
}  # fmt: skip


class UnparsableAlter(ValueError):
    """An ALTER TABLE of a known table with a clause this module does not understand."""

    def __init__(self, schema: str, table: str, reason: str) -> None:
        super().__init__(reason)
        self.schema, self.table = schema, table


@dataclass(slots=True)
class AlterTable:
    """What one ALTER TABLE statement does to ``schema.table``'s existing rows (column names lower case)."""

    schema: str
    table: str
    filled: set[str] = field(default_factory=set)  # added columns given values in every existing row
    not_null: set[str] = field(default_factory=set)  # existing columns made NOT NULL
    renamed: dict[str, str] = field(default_factory=dict)  # old name -> new name
    rewrites: bool = False  # stored values changed otherwise


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "word", "name" (`quoted`), "string", "number" or "punct"
    text: str  # as written; a name or string unquoted
    upper: str = ""  # a word's text upper case

    def word(self, *words: str) -> bool:
        return self.kind == "word" and self.upper in words

    def punct(self, text: str) -> bool:
        return self.kind == "punct" and self.text == text


def parse_alter(statement: str, default_schema: str) -> AlterTable | None:
    """What an ALTER TABLE statement does; None for any other statement (or one naming no table)."""
    tokens = _tokens(statement)
    at = _skip(tokens, 0, "ALTER")
    if at == 0:
        return None
    at = _skip(tokens, _skip(tokens, at, "ONLINE"), "IGNORE")
    if at >= len(tokens) or not tokens[at].word("TABLE"):
        return None
    at = at + 3 if _words(tokens, at + 1, "IF", "EXISTS") else at + 1
    if at >= len(tokens) or tokens[at].kind not in ("word", "name", "string"):
        return None
    schema, table, at = default_schema, tokens[at].text, at + 1
    if at + 1 < len(tokens) and tokens[at].punct("."):
        schema, table, at = table, tokens[at + 1].text, at + 2
    alter = AlterTable(schema, table)
    if at < len(tokens) and tokens[at].word("WAIT", "NOWAIT"):
        at += 2 if tokens[at].upper == "WAIT" else 1
    for clause in _split(tokens[at:]):
        if clause:
            _clause(alter, clause)
    return alter


def _clause(alter: AlterTable, clause: list[_Token]) -> None:
    first, second = clause[0], clause[1] if len(clause) > 1 else _Token("punct", "")
    if first.word("ADD"):
        _add(alter, clause[1:])
    elif first.word("MODIFY", "CHANGE"):
        _modify(alter, first.upper, clause[1:])
    elif first.word("RENAME"):
        if len(clause) >= 5 and second.word("COLUMN") and clause[3].word("TO"):
            alter.renamed[_name(clause[2])] = _name(clause[4])
    elif first.word("CONVERT", "IMPORT"):
        alter.rewrites = True  # every text value converted; or the data replaced from a file
    elif first.word("TRUNCATE", "EXCHANGE") or (first.word("DROP") and second.word("PARTITION")):
        alter.rewrites = True  # rows removed or swapped without row events
    elif not first.word("DROP", "ALTER", "DISCARD", *_TABLE_OPTIONS):
        raise UnparsableAlter(alter.schema, alter.table, f"the clause {first.text!r} is not understood")


def _add(alter: AlterTable, rest: list[_Token]) -> None:
    explicit = bool(rest) and rest[0].word("COLUMN")
    rest = rest[1:] if explicit else rest
    rest = rest[3:] if _words(rest, 0, "IF", "NOT", "EXISTS") else rest
    if not rest:
        raise UnparsableAlter(alter.schema, alter.table, "ADD without a column")
    if not explicit and (
        rest[0].word(*_NO_ROWS_ADDED)
        or _words(rest, 0, "PERIOD", "FOR")
        or _words(rest, 0, "SYSTEM", "VERSIONING")
        or (rest[0].word("PARTITION") and len(rest) > 1 and rest[1].punct("("))
    ):
        return
    definitions = _split(_parenthesized(rest)) if rest[0].punct("(") else [rest]
    for definition in definitions:
        if not definition or definition[0].kind == "punct":
            raise UnparsableAlter(alter.schema, alter.table, "ADD without a column name")
        if not definition[0].word(*_NO_ROWS_ADDED) and _fills(_top_level(definition[1:])):
            alter.filled.add(_name(definition[0]))


def _modify(alter: AlterTable, verb: str, rest: list[_Token]) -> None:
    rest = rest[1:] if rest and rest[0].word("COLUMN") else rest
    rest = rest[2:] if _words(rest, 0, "IF", "EXISTS") else rest
    if len(rest) < (3 if verb == "CHANGE" else 2):
        raise UnparsableAlter(alter.schema, alter.table, f"{verb} without a column and its type")
    if verb == "CHANGE":
        alter.renamed[_name(rest[0])] = _name(rest[1])
        rest = rest[1:]
    top = _top_level(rest[1:])
    if _says_not_null(top):
        alter.not_null.add(_name(rest[0]))
    if any(token.word("CHARACTER", "CHARSET", "COLLATE") for token in top) or _generated(top):
        alter.rewrites = True  # values converted to another character set, or computed


def _fills(top: list[_Token]) -> bool:
    """Whether a new column's definition (its top-level tokens) gives existing rows a value."""
    if _generated(top) or _says_not_null(top) or any(token.word("AUTO_INCREMENT", "SERIAL") for token in top):
        return True
    for token, following in zip(top, top[1:]):
        if token.word("DEFAULT"):
            return not following.word("NULL")
    # a TIMESTAMP without NULL is NOT NULL with a default where explicit_defaults_for_timestamp is off
    return bool(top) and top[0].word("TIMESTAMP") and not any(token.word("NULL") for token in top)


def _generated(top: list[_Token]) -> bool:
    return any(token.word("AS") for token in top)


def _says_not_null(top: list[_Token]) -> bool:
    return any(token.word("NOT") and following.word("NULL") for token, following in zip(top, top[1:]))


def _top_level(tokens: list[_Token]) -> list[_Token]:
    """The tokens outside parentheses (a type's length, an ENUM's values, an expression), each
    parenthesized part kept as its opening parenthesis."""
    depth, top = 0, []
    for token in tokens:
        if token.punct(")"):
            depth -= 1
        elif depth == 0:
            top.append(token)
        if token.punct("("):
            depth += 1
    return top


def _parenthesized(tokens: list[_Token]) -> list[_Token]:
    """The tokens inside the parentheses that ``tokens`` starts with."""
    depth = 0
    for index, token in enumerate(tokens):
        depth += 1 if token.punct("(") else -1 if token.punct(")") else 0
        if depth == 0:
            return tokens[1:index]
    return tokens[1:]


def _split(tokens: list[_Token]) -> list[list[_Token]]:
    """Tokens split at the commas (and a statement's end) outside parentheses."""
    parts: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        depth += 1 if token.punct("(") else -1 if token.punct(")") else 0
        if depth == 0 and (token.punct(",") or token.punct(";")):
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _tokens(statement: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(statement):
        text = match.group()
        if text[0].isspace() or text.startswith(("/*", "*/", "--", "#")):
            continue  # a comment; an executable comment's text is read as the statement's
        if text[0] == "`":
            tokens.append(_Token("name", text[1:-1].replace("``", "`")))
        elif text[0] in "'\"":
            tokens.append(_Token("string", text[1:-1]))
        elif text[0].isdigit():
            tokens.append(_Token("number", text))
        elif text[0].isalnum() or text[0] in "_$":
            tokens.append(_Token("word", text, text.upper()))
        else:
            tokens.append(_Token("punct", text))
    return tokens


def _name(token: _Token) -> str:
    """A column's name as the catalog compares it (case-insensitively)."""
    return token.text.lower()


def _skip(tokens: list[_Token], at: int, word: str) -> int:
    return at + 1 if at < len(tokens) and tokens[at].word(word) else at


def _words(tokens: list[_Token], at: int, *words: str) -> bool:
    return len(tokens) >= at + len(words) and all(tokens[at + i].word(w) for i, w in enumerate(words))


def merged(earlier: AlterTable | None, later: AlterTable) -> AlterTable:
    """Two ALTER TABLE statements of one table, one after the other, as one."""
    if earlier is None:
        return later
    rename = later.renamed.get
    return AlterTable(
        later.schema,
        later.table,
        {rename(name, name) for name in earlier.filled} | later.filled,
        {rename(name, name) for name in earlier.not_null} | later.not_null,
        {**earlier.renamed, **later.renamed},
        earlier.rewrites or later.rewrites,
    )


def row_effects(altered: AlterTable, before: MapShape | None, after: MapShape) -> tuple[bool, frozenset[str]]:
    """A TableShape's ``rewrites`` and ``filled`` for the table map ``after`` that follows the
    ALTER TABLE statements ``altered``, ``before`` being the table's previous table map (None:
    unknown). A column made NOT NULL rewrites rows if it could hold NULL before (or that is unknown)."""
    names = {column.name.lower(): column.name for column in after.columns}
    filled = frozenset(names[name] for name in altered.filled if name in names)
    nullable_before = None if before is None else {name.lower() for name in before.nullable}
    tightened = any(nullable_before is None or name in nullable_before for name in altered.not_null if name in names)
    return altered.rewrites or tightened, filled
