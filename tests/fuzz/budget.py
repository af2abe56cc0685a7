"""The fuzzers' shared hypothesis settings: a fixed, derandomized budget of examples per test.

`make test` runs TYPHA_FUZZ_EXAMPLES' default of 3,000; `make fuzz` sets it to 100,000. Tests
whose examples are expensive take a share of it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

BUDGET = int(os.environ.get("TYPHA_FUZZ_EXAMPLES", "3000"))
FUZZ = settings(
    max_examples=BUDGET,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
