"""The tables the docs derive from the code are current (scripts/gen_docs.py regenerates them):
the parameter table of docs/configuration.md and the metrics table of the README."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_docs.py"


def _gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_generated_tables_are_current() -> None:
    result = _gen("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_on_a_stale_table_and_the_generator_fixes_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "docs" / "configuration.md", tmp_path / "docs" / "configuration.md")
    assert _gen("--check", "--root", str(tmp_path)).returncode == 0
    readme = tmp_path / "README.md"
    # A family the registry has, dropped from the README's table, as if added without docs.
    text = readme.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `typha_kvs_per_msg`"))
    readme.write_text(text.replace(row + "\n", ""))
    stale = _gen("--check", "--root", str(tmp_path))
    assert stale.returncode == 1 and "README.md" in stale.stdout
    assert _gen("--root", str(tmp_path)).returncode == 0
    assert readme.read_text() == text
