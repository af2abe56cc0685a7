"""Regenerate the tables the docs derive from the code, or check that they are current.

    python scripts/gen_docs.py          # rewrite them
    python scripts/gen_docs.py --check  # exit 1 if one is stale (tests/test_docs_generated.py)
    python scripts/gen_docs.py --root DIR  # the same on a copy of README.md and docs/

* docs/configuration.md, "All parameters": from ``typha.config.PARAMS`` (and ``NO_EFFECT``).
* README.md, "Metrics": from the Prometheus registry, every ``typha_*`` family that typha
  registers (``typha.metrics`` and ``typha.sync.metrics``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import typha.metrics
import typha.sync.metrics  # registers the datastore families
from typha.config import markdown_table

ROOT = Path(__file__).resolve().parent.parent


def typha_families() -> list[MetricWrapperBase]:
    """typha's own metric objects on the default registry, in registration order. (The
    client's public API does not list collectors; its registry's map of them is read.)"""
    collectors = list(REGISTRY._collector_to_names)
    return [
        c for c in collectors if isinstance(c, MetricWrapperBase) and c._name.startswith("typha_")
    ]


def metrics_table() -> str:
    bare = {c._name for c in typha.metrics.TYPHA_BARE_COUNTERS}
    rows = [
        "| metric | type | labels | in Calico Typha | meaning |",
        "|---|---|---|---|---|",
    ]
    for m in typha_families():
        name, kind = m._name, m._type
        shown = f"`{name}_total`" if kind == "counter" else f"`{name}`"
        if name in bare:
            shown += f" (also as `{name}`, Typha's name)"
        labels = ", ".join(m._labelnames) or "\u2013"
        ours = "yes" if name in typha.metrics.CALICO_TYPHA_FAMILIES else "ours"
        rows.append(f"| {shown} | {kind} | {labels} | {ours} | {m._documentation} |")
    return "\n".join(rows) + "\n"


def _replace_table(text: str, header: str, table: str) -> str:
    """Replace the markdown table that starts with the line ``header``."""
    start = text.index(header)
    end = start
    lines = text[start:].splitlines(keepends=True)
    for line in lines:
        if not line.startswith("|"):
            break
        end += len(line)
    return text[:start] + table + text[end:]


TARGETS = (
    ("docs/configuration.md", "| parameter | env var |", markdown_table),
    ("README.md", "| metric | type | labels |", metrics_table),
)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    root = Path(argv[argv.index("--root") + 1]) if "--root" in argv else ROOT
    stale = []
    for name, header, make in TARGETS:
        path = root / name
        text = path.read_text()
        new = _replace_table(text, header, make())
        if new != text:
            stale.append(name)
            if not check:
                path.write_text(new)
    if check and stale:
        print(f"stale: {', '.join(stale)}; run: python scripts/gen_docs.py")
        return 1
    for name in stale:
        print(f"rewrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
