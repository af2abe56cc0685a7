"""docs/faults.md's table of hostile cases names a test for every row, and every test it names
exists, so the table cannot rot when tests move or are renamed."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ROOT / "docs" / "faults.md"

# `tests/x/test_y.py`, `tests/x/test_y.py::test_z`, `…::test_z` (the file named last), `tests/x/`
_REF = re.compile(r"`((?:tests/[\w/]+?\.py|…)(?:::[\w*\[\]-]+)*|tests/[\w/]+/)`")


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows (cells) of the first table under ``## heading``."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split(" | ")] for row in rows[2:]]


def _test_names(path: Path) -> set[str]:
    """``test_x`` and ``TestClass::test_x`` for every test function in ``path``."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}::{f.name}"
                for f in node.body
                if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return {n for n in names if n.split("::")[-1].startswith("test")}


def check_test_column(rows: list[list[str]], root: Path) -> list[str]:
    """Problems with the last column of ``rows``: a row naming no test, a file or directory
    that does not exist, a test (or pattern) that matches no test function in its file."""
    problems: list[str] = []
    last_file: str | None = None
    for row in rows:
        cell = row[-1]
        refs = _REF.findall(cell)
        if not refs:
            if cell != "same":
                problems.append(f"no test named for {row[0]!r}")
            continue
        for ref in refs:
            file, _, name = ref.partition("::")
            if file == "…":
                if last_file is None:
                    problems.append(f"{ref!r} with no file named before it")
                    continue
                file = last_file
            last_file = file if file.endswith(".py") else last_file
            path = root / file
            if not path.exists():
                problems.append(f"{file} does not exist")
                continue
            if name:
                name = re.sub(r"\[.*\]$", "", name)  # a parametrized case: the function
                if not fnmatch.filter(_test_names(path), name):
                    problems.append(f"{file}::{name} is not a test in that file")
    return problems


def test_every_hostile_case_names_existing_tests() -> None:
    rows = table_rows(FAULTS.read_text(), "Hostile cases")
    assert len(rows) >= 20, len(rows)
    assert check_test_column(rows, ROOT) == []


def test_the_check_finds_missing_and_unnamed_tests() -> None:
    """Positive control: the check does report what would make the table wrong."""
    doc = (
        "# x\n\n## Hostile cases\n\n| case | what | test |\n|---|---|---|\n"
        "| a | b | `tests/test_docs_faults.py::test_every_hostile_case_names_existing_tests` |\n"
        "| c | d | `…::test_no_such_test`, `tests/no_such_file.py` |\n"
        "| e | f | nothing |\n"
        "| g | h | same |\n"
        "| i | j | `tests/test_docs_faults.py::test_the_check_*`, `tests/calc/` |\n"
    )
    problems = check_test_column(table_rows(doc, "Hostile cases"), ROOT)
    assert problems == [
        "tests/test_docs_faults.py::test_no_such_test is not a test in that file",
        "tests/no_such_file.py does not exist",
        "no test named for 'e'",
    ]
