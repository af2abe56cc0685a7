"""etcd stops promptly while Typha is connected over gRPC (the default EtcdAPI), and Typha's
calls work after etcd comes back.

etcd's graceful stop sends GOAWAY and a PING on every connection and waits for each client to
answer and close: an idle unary connection that nobody reads held it ~5 s (an etcd restart in
tests took 7.3 s). The datastore now reads its unary connection between calls
(``GrpcEtcdClient.read_idle_connection``). The positive control is a bare client that leaves
its unary connection idle and unread: etcd's stop still waits for it, so the timing below can
tell the two apart.
"""

from __future__ import annotations

import time

import trio

from tests.peers.etcd import EtcdServer
from tests.sync.test_etcd_datastore import (
    ReferenceSink,
    assert_converged,
    datastore_for,
    model_keys,
    running,
    wep,
)
from typha.sync.etcd_client import EtcdClient
from typha.sync.etcd_grpc import GrpcEtcdClient
from typha.sync.etcd_writer import apply_resources

# etcd's own wait for a client that does not answer its GOAWAY/PING is ~5 s; a stop with every
# client answering takes well under a second on loopback.
PROMPT_STOP_SECS = 2.5
STUCK_STOP_SECS = 4.0


async def _timed_stop(etcd: EtcdServer) -> float:
    t0 = time.monotonic()
    await trio.to_thread.run_sync(etcd.stop)
    return time.monotonic() - t0


async def test_etcd_stops_promptly_with_the_datastore_connected(etcd_server: EtcdServer) -> None:
    etcd = etcd_server
    async with EtcdClient([etcd.client_url]) as writer:
        await apply_resources(writer, [wep(i) for i in range(20)])
    sink = ReferenceSink()
    # The probe every second keeps the unary connection in use, as in production (30 s / 3).
    ds = datastore_for(etcd, hang_detection_secs=3.0)
    assert ds.api == "grpc"  # the default
    async with running(ds, sink):
        await assert_converged(sink, etcd)
        await trio.sleep(1.5)  # a probe or two on the unary connection, then idle between
        took = await _timed_stop(etcd)
        await trio.to_thread.run_sync(etcd.start)
        await sink.wait_for(lambda: sink.connected is not False, "still or again connected")
        # Calls work after the restart: a change made now arrives through a new watch.
        async with EtcdClient([etcd.client_url]) as writer:
            await apply_resources(writer, [wep(20)])
        added = model_keys(wep(20))
        await sink.wait_for(lambda: added <= sink.state.keys(), "the endpoint added after")
        await assert_converged(sink, etcd)
    assert took < PROMPT_STOP_SECS, f"etcd took {took:.1f} s to stop with Typha connected"


async def test_control_an_unread_idle_unary_connection_holds_etcds_stop(
    etcd_server: EtcdServer,
) -> None:
    """Positive control: the same stop, with a gRPC client whose unary connection is open and
    idle and that nobody reads, takes etcd's full wait."""
    etcd = etcd_server
    async with GrpcEtcdClient([etcd.client_url]) as client:
        await client.revision()  # opens the unary connection; then it idles, unread
        took = await _timed_stop(etcd)
        await trio.to_thread.run_sync(etcd.start)
        # The client notices the dead connection at its next call and reconnects.
        assert await client.revision() > 0
    assert took > STUCK_STOP_SECS, f"etcd stopped in {took:.1f} s: the control did not hold it"
