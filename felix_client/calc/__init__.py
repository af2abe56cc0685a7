"""Felix's calculation for a lightweight node agent: model updates in, desired dataplane out.

The public surface is small:

* ``CalcEngine(node_name)`` — ``apply_updates([(key, value_or_None)])``, ``snapshot_done()``,
  ``in_sync``, ``flush() -> DataplaneDelta``, ``state() -> DataplaneState``;
* ``DataplaneState`` / ``DataplaneDelta`` (and ``IPSet``, ``Route``, ``Neighbour``, ``FdbEntry``)
  — plain data for the kernel applier;
* ``render_files(state)`` — dry-run ``ipsets``, ``iptables-filter``, ``iptables-nat``, ``routes``
  and ``neighbours`` files; ``HOOKS`` — the kernel-chain jumps to ensure with ``-C``/``-I``.

See docs/felix-calc.md for what is computed and what is simplified.
"""

from felix_client.calc.engine import CalcEngine, render_files
from felix_client.calc.render.chains import HOOKS, Hook
from felix_client.calc.state import (
    DataplaneDelta,
    DataplaneState,
    FdbEntry,
    IPSet,
    Neighbour,
    Route,
)

__all__ = [
    "HOOKS",
    "CalcEngine",
    "DataplaneDelta",
    "DataplaneState",
    "FdbEntry",
    "Hook",
    "IPSet",
    "Neighbour",
    "Route",
    "render_files",
]
