"""A connection does not keep the snapshot it was sent once it is streaming.

Each connection's writer runs as long as the client stays. When the snapshot was a local of
that long-lived frame (gob: ``_handshake_then_stream``; msgpack: ``_writer``, and
``_after_snapshot`` while idle), every snapshot generation built during a join stayed in
memory as long as any of its joiners: with 500 gob clients joining on 20,000 endpoints, tens
of MiB of stale snapshots (docs/benchmarks.md, "500 gob clients"). Here clients join in waves,
one snapshot generation per wave, and stay idle; only the current snapshot may remain.
"""

from __future__ import annotations

import gc

import pytest
import trio

from tests.protocol.gob.golike import GoLikeClientEncoder
from tests.protocol.gob.streams import hello as gob_hello
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha.cache.snapshot import Snapshot
from typha.model.keys import SyncerType
from typha.protocol import ClientSession
from typha.sync.memory import MemoryDatastore

WAVES = 4
PER_WAVE = 3
REUSE_SECS = 0.05


def live_snapshots() -> list[Snapshot]:
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is Snapshot]


def hello_bytes(protocol: str, i: int) -> bytes:
    if protocol == "gob":
        # Plain gob (no snappy): no ACK to wait for, the snapshot follows the ServerHello.
        return GoLikeClientEncoder().encode(gob_hello(False, hostname=f"node{i}"))
    session = ClientSession(f"node{i}", "felix", features=("goodbye",), keep_state=False)
    return session.connect()


@pytest.mark.parametrize("protocol", ["gob", "msgpack"])
async def test_idle_connections_do_not_keep_old_snapshots(protocol: str) -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(200)))
    felix = SyncerType("felix")
    async with run_typha(ds, make_config(SnapshotReuseSecs=REUSE_SECS)) as t:
        cache = t.server.snapshots[felix]
        view = t.feed.views[felix]
        socks = []
        held: list[Snapshot] = []
        try:
            for wave in range(WAVES):
                # A change and an expired snapshot: this wave's joiners get a new generation.
                key, value = wep(wave, rev=wave + 1)
                head = view.head_seq
                ds.set(key, value)
                await wait_until(lambda h=head: view.head_seq > h)
                await trio.sleep(REUSE_SECS * 2)
                for i in range(PER_WAVE):
                    # The clients never read: the small snapshot fits in the socket buffers.
                    sock = trio.socket.socket()
                    await sock.connect(("127.0.0.1", t.port))
                    await sock.send(hello_bytes(protocol, wave * PER_WAVE + i))
                    socks.append(sock)
                n = len(socks)
                # Streaming and idle (the writer gave the socket to the fan-out).
                await wait_until(
                    lambda n=n: (
                        len(t.server.connections) == n
                        and all(
                            c.streaming and c.write_token.free
                            for c in t.server.connections.values()
                        )
                    )
                )
                # Positive control: the count sees every generation while something references
                # it (as the connections did): here the test keeps each wave's snapshot.
                held += [s for s in live_snapshots() if all(s is not h for h in held)]
                assert cache.generated == wave + 1
                assert len(held) == wave + 1
                assert len(live_snapshots()) == wave + 1
            assert cache.generated == WAVES
            held.clear()
            await trio.sleep(0.05)
            # Only the current snapshot remains, however many generations the joiners got.
            assert len(live_snapshots()) == 1
            assert len(t.server.connections) == WAVES * PER_WAVE
        finally:
            for sock in socks:
                sock.close()
