"""The workload-endpoint network fast path gives exactly what the `ipaddress` path gives, and
leaves everything that is not a canonical IPv4 host network to that path (errors included)."""

from __future__ import annotations

import random

import pytest

from typha.sync.convert._common import parse_network
from typha.sync.convert.endpoints import _CANONICAL_V4_HOST, _workload_nets
from typha.sync.convert.errors import InvalidResource


def test_fast_path_equals_ipaddress_for_host_networks() -> None:
    rng = random.Random(7)
    nets = [f"{'.'.join(str(rng.randrange(256)) for _ in range(4))}/32" for _ in range(5000)]
    nets += ["0.0.0.0/32", "255.255.255.255/32", "10.0.0.0/32", "100.99.9.199/32"]
    for net in nets:
        assert _CANONICAL_V4_HOST.fullmatch(net), net  # it takes the fast path...
        assert _workload_nets([net], "f") == ([str(parse_network(net, "f", strict=True))], [])


@pytest.mark.parametrize("net", ["10.0.0.0/24", "fd00::1/128", "10.0.0.0/31"])
def test_other_networks_take_the_ipaddress_path(net: str) -> None:
    assert not _CANONICAL_V4_HOST.fullmatch(net)
    v4, v6 = _workload_nets([net], "f")
    assert v4 + v6 == [str(parse_network(net, "f", strict=True))]


@pytest.mark.parametrize("net", ["010.0.0.1/32", "256.0.0.1/32", "10.0.0.5/24", "10.0.0.1/33"])
def test_invalid_networks_still_fail(net: str) -> None:
    assert not _CANONICAL_V4_HOST.fullmatch(net)
    with pytest.raises(InvalidResource):
        _workload_nets([net], "f")
