"""Fixtures for the dataplane tests: namespaces that are always deleted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dataplane.nstools import NetnsPool, can_use_netns


@pytest.fixture
def netns() -> Iterator[NetnsPool]:
    """Create namespaces with ``netns.create("n1")``; all are deleted after the test."""
    why = can_use_netns()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    pool = NetnsPool()
    try:
        yield pool
    finally:
        pool.cleanup()
