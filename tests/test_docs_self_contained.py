"""The repo stands on its own: no code or doc cites notes that live outside it.

The only outside path a file may name is the Calico source tarball's folder (``shared/peers``),
an input of the peer build with its git-clone fallback documented in docs/peers.md.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".load-results", ".hypothesis"}
SUFFIXES = {".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".go", ".cfg", ".txt", ""}

# Outside notes by path or by name, spelled in pieces so that this file names none of them.
_NOTES = ("felix" + "-model", "anch" + "ors", "se" + "ed")
_SHARED = "sha" + "red/"
OUTSIDE = re.compile(
    "|".join(
        [re.escape(_SHARED + "reference"), re.escape(_SHARED + "STY" + "LE"), "/work/" + _SHARED]
        + [rf"\b{re.escape(n)}\.md" for n in _NOTES]
    )
)
THIS_FILE = Path(__file__).resolve()


def outside_citations(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.parts):
            continue
        if not path.is_file() or path.suffix not in SUFFIXES or path.resolve() == THIS_FILE:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def test_nothing_in_the_repo_cites_notes_outside_it() -> None:
    assert outside_citations(ROOT) == []


def test_the_check_finds_a_planted_citation(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    planted = "see ../" + _SHARED + "reference/" + "typha.md"
    (tmp_path / "docs" / "a.md").write_text(f"fine\n{planted}\n")
    (tmp_path / "b.py").write_text(f"# the Calico tarball in ../{_SHARED}peers is allowed\n")
    assert outside_citations(tmp_path) == [f"docs/a.md:2: {planted}"]
