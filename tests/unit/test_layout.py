"""The shape of the code as a checked contract: the import layers and registries of
pyproject.toml (import-linter), no import cycle, and no module past ~400 lines without a
reason written at its top."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
LONG_MODULE = 420
REASON = "Why this module is long:"


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--config", str(PROJECT / "pyproject.toml")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_module_says_what_it_is_for() -> None:
    missing = [
        str(path.relative_to(PROJECT))
        for path in sorted((PROJECT / "cdc").rglob("*.py"))
        if path.stat().st_size and not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert missing == []


def test_a_long_module_says_why() -> None:
    unexplained = []
    for path in sorted([*(PROJECT / "cdc").rglob("*.py"), *(PROJECT / "devtools").rglob("*.py")]):
        text = path.read_text()
        if text.count("\n") > LONG_MODULE and REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{path.relative_to(PROJECT)}: {text.count(chr(10))} lines")
    assert unexplained == []
