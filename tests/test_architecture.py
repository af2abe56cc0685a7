"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they can fail.

Each negative control copies the sources to a temporary directory, adds one forbidden import
and runs the same ``lint-imports`` there: the contract that guards against it must break.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("typha", "felix_client", "load", "demo", "tests")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert "Contracts: 5 kept" in result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the Python sources and the contracts, to break on purpose."""

    def not_python(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if not n.endswith(".py") and not os.path.isdir(f"{directory}/{n}")]

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=not_python)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def broken_by(tree: Path, module: str, text: str) -> str:
    """Append ``text`` to ``module`` (a path under the copy), run the contracts, expect them
    to fail; their report."""
    path = tree / module
    path.write_text(path.read_text() + "\n" + text + "\n")
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    return result.stdout


TYPE_ONLY_SERVER_IMPORT = (
    "from typing import TYPE_CHECKING\n"
    "if TYPE_CHECKING:\n"
    "    from typha.server.server import SyncServer  # noqa"
)


def test_the_copy_passes_before_it_is_broken(tree: Path) -> None:
    # Positive control for the tests below: the copy itself is clean.
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_product_importing_the_node_agent_breaks_a_contract(tree: Path) -> None:
    out = broken_by(tree, "typha/cache/view.py", "import felix_client.agent  # noqa")
    assert "typha (the product) imports neither" in out
    assert "typha.cache.view -> felix_client.agent" in out


def test_a_type_checking_import_against_the_layers_counts(tree: Path) -> None:
    out = broken_by(tree, "typha/cache/snapshot.py", TYPE_ONLY_SERVER_IMPORT)
    assert "typha: app > server > cache > sync > shared bottom BROKEN" in out
    assert "typha.cache.snapshot -> typha.server.server" in out


def test_a_connection_reaching_for_the_server_breaks_the_cycle_and_layer_rules(tree: Path) -> None:
    # The old shape: the connection held the server, imported for its type only.
    out = broken_by(tree, "typha/server/connection.py", TYPE_ONLY_SERVER_IMPORT)
    assert "no import cycles between sibling modules or packages BROKEN" in out
    assert "typha.server: server > fanout" in out
    assert "typha.server.connection -> typha.server.server" in out


def test_the_node_agent_reaching_into_the_server_breaks_a_contract(tree: Path) -> None:
    out = broken_by(tree, "felix_client/agent.py", "import typha.server.transport  # noqa")
    assert "felix_client uses only typha's shared bottom" in out


# --- No imports by string ---------------------------------------------------------------------

_STRING_IMPORTERS = {"import_module", "__import__", "spec_from_file_location", "find_spec"}


def string_imports(source: str) -> list[str]:
    """Calls that import a module named by a string (which the import graph cannot see)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if "importlib" in names or (module or "").startswith("importlib"):
                found.append(f"line {node.lineno}: imports importlib")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in _STRING_IMPORTERS:
                found.append(f"line {node.lineno}: {name}()")
    return found


def test_the_string_import_check_finds_one() -> None:
    assert string_imports("import importlib\nm = importlib.import_module('felix_client')\n")
    assert string_imports("m = __import__('felix_client')\n")
    assert not string_imports("import felix_client.agent\n")


def test_the_product_and_the_node_agent_import_nothing_by_string() -> None:
    offenders = {}
    for pkg in ("typha", "felix_client"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found = string_imports(path.read_text())
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}
