"""1,000 clients lose their connections at the same instant (toxiproxy reset_peer on the client
leg) and reconnect at once, twice:

1. with resume tokens: every client resumes, Typha builds no snapshot at all;
2. without (``resume=False``, as a client that lost its state would): every client needs a
   snapshot, and Typha builds it ONCE for all of them (read from ``typha_snapshots_generated``
   on its /metrics), not once per client.

Typha is a real ``typha serve`` process on a real etcd under churn; the clients are
``load.lightclient`` in full mode (every client keeps its whole state, checked exactly at the
end) on one selector loop in a worker thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import trio

from load.lightclient import FULL, ClientOptions, Engine, state_digest

from .harness import (
    EtcdChurn,
    TyphaProcess,
    blocking,
    diff_state,
    etcd_felix_state,
    figure,
    ms,
    normalise,
    wait_until,
)

pytestmark = pytest.mark.toxiproxy

N_CLIENTS = 1000


class EngineThread:
    """Drives a lightclient Engine in a worker thread until stopped; the trio side only reads
    integer counters (safe under the GIL) or runs ``call`` in between."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stop = threading.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drive)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:  # cancelled (the test ended or failed): let the thread return
                self._stop.set()

    async def _drive(self) -> None:
        # Not abandoned on cancel: the engine must not be touched while the thread runs it.
        await trio.to_thread.run_sync(
            lambda: self.engine.run(until=self._stop.is_set, tick=0.05), abandon_on_cancel=False
        )

    def stop(self) -> None:
        self._stop.set()

    def count(self, attr: str) -> int:
        return sum(getattr(c, attr) for c in list(self.engine.clients))

    def all(self, pred: Any) -> bool:
        return all(pred(c) for c in list(self.engine.clients))


def throttled(pred: Any, every: float) -> Any:
    """``pred``, evaluated at most every ``every`` seconds (False in between)."""
    last = [0.0]

    def check() -> bool:
        now = time.monotonic()
        if now - last[0] < every:
            return False
        last[0] = now
        return bool(pred())

    return check


async def mass_reset(toxi: Any, proxy: str, et: EngineThread) -> tuple[float, float]:
    """Reset every connection at once; returns (seconds until all were cut, seconds from the
    toxic's removal until all were back in sync)."""
    marks = {c.index: c.disconnects for c in et.engine.clients}
    await blocking(toxi.client.add_toxic, proxy, "reset_peer", timeout=0)
    cut = await wait_until(
        lambda: et.all(lambda c: c.disconnects > marks[c.index]), 30, "every client cut"
    )
    await trio.sleep(0.5)
    await blocking(toxi.client.remove_toxic, proxy, "reset_peer_downstream")
    back = await wait_until(lambda: et.all(lambda c: c.in_sync), 90, "every client back in sync")
    return cut, back


async def test_1000_clients_reconnect_at_once(etcd_server, toxiproxy_server, tmp_path) -> None:
    churn = EtcdChurn(etcd_server.client_url, rate=10.0)
    await churn.populate()
    typha = TyphaProcess(
        "mass",
        tmp_path,
        env={
            "TYPHA_DATASTORETYPE": "etcdv3",
            "TYPHA_ETCDENDPOINTS": etcd_server.client_url,
            "TYPHA_LOGSEVERITYSCREEN": "WARNING",
        },
    )
    engine: Engine | None = None
    try:
        typha.start()
        await typha.wait_ready()
        proxy = await blocking(toxiproxy_server.client.create_proxy, "typha", typha.address)
        # zstd, as Felix offers it: the snapshot is compressed once and the same bytes go to
        # every client (uncompressed, 1,000 x 200 kB takes ~30 s on 2 busy cores, not ~3 s).
        opts = ClientOptions(
            [proxy.listen], mode=FULL, compression=True, backoff_base=0.05, backoff_cap=1.0
        )
        engine = Engine(opts, N_CLIENTS, node_prefix="mass-", seed=5)
        et = EngineThread(engine)
        async with trio.open_nursery() as nursery:
            await nursery.start(churn.run)
            engine.start(spread=2.0)
            await nursery.start(et.run)
            joined = await wait_until(lambda: et.all(lambda c: c.in_sync), 120, "1,000 joined")
            initial_built = await typha.snapshots_generated()
            await trio.sleep(1.0)

            # 1. With resume tokens.
            snaps0, resumes0 = await typha.snapshots_generated(), et.count("resumes")
            received0 = et.count("snapshots")
            cut1, back1 = await mass_reset(toxiproxy_server, proxy.name, et)
            built1 = await typha.snapshots_generated() - snaps0
            resumed1 = et.count("resumes") - resumes0
            received1 = et.count("snapshots") - received0

            # 2. Without: every client needs a snapshot.
            opts.resume = False
            await trio.sleep(1.0)
            snaps1, received1b = await typha.snapshots_generated(), et.count("snapshots")
            cut2, back2 = await mass_reset(toxiproxy_server, proxy.name, et)
            built2 = await typha.snapshots_generated() - snaps1
            received2 = et.count("snapshots") - received1b

            # Exact convergence of all 1,000 states.
            await churn.halt()
            expected, _ = await blocking(etcd_felix_state, etcd_server)
            want = state_digest(expected)

            def all_match() -> bool:
                return all(c.digest() == want for c in engine.clients)

            t0 = time.monotonic()
            et.stop()
            nursery.cancel_scope.cancel()
        # The engine thread has returned: drive it here until every digest matches.
        converged = await trio.to_thread.run_sync(
            lambda: engine.run(duration=30, until=throttled(all_match, 0.5), tick=0.2)
        )
        conv_secs = time.monotonic() - t0
        lost = ghost = stale = 0
        for c in engine.clients:
            lo, gh, st = diff_state({k: normalise(v) for k, v in c.state.items()}, expected)
            lost, ghost, stale = lost + lo, ghost + gh, stale + st
        summary = engine.summary()
        figure(
            "1,000 clients reconnect at once",
            initial_join=ms(joined),
            initial_snapshots_built=initial_built,
            resume_wave_cut=ms(cut1),
            resume_wave_back=ms(back1),
            resume_wave_resumes=resumed1,
            resume_wave_snapshots_sent=received1,
            resume_wave_snapshots_built=built1,
            snapshot_wave_cut=ms(cut2),
            snapshot_wave_back=ms(back2),
            snapshot_wave_snapshots_sent=received2,
            snapshot_wave_snapshots_built=built2,
            converge=f"{N_CLIENTS} clients x {len(expected)} keys in {conv_secs:.2f}s: "
            f"lost={lost} ghost={ghost} stale={stale}",
            protocol_errors=summary["protocol_errors"],
        )
        assert converged and (lost, ghost, stale) == (0, 0, 0), (lost, ghost, stale)
        assert summary["protocol_errors"] == 0
        assert resumed1 >= N_CLIENTS and received1 == 0 and built1 == 0
        assert received2 >= N_CLIENTS
        # 1,000 snapshots sent, built at most once (twice if the wave straddled a reuse
        # window) — or not at all when the initial join's snapshot is still within its reuse
        # window (SnapshotReuseSecs) and the history still covers it.
        assert built2 <= 2, built2
        assert 1 <= initial_built + built2 <= 3, (initial_built, built2)
    finally:
        if engine is not None:
            engine.close()
        typha.reap()
