"""`make demo`: a local cluster in one command — datastore, Typha and simulated nodes.

By default it starts a real etcd (data in ``.demo/``, loopback only), loads the sample cluster
from ``config/examples/`` (the seed's pods, pool and policies), runs Typha and several node
clients, changes pods and labels while it runs, and prints live status once a second.
Stops cleanly on Ctrl-C or after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import trio

from felix_client.sync_client import SyncClient
from load.local_etcd import LocalEtcd, find_etcd
from typha import logs
from typha.app import Typha
from typha.config import load_config
from typha.protocol import SyncStatus
from typha.resources import load_documents, validate_resources, workload_endpoint_for_pod
from typha.sync.base import ResourceExpander, Update
from typha.sync.convert import v3_to_updates

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "config" / "examples"
DEMO_DIR = ROOT / ".demo"


class ClusterWriter(Protocol):
    async def apply(self, resources: list[dict[str, Any]]) -> None: ...
    async def delete(self, resources: list[dict[str, Any]]) -> None: ...


class MemoryWriter:
    """Writes v3 resources into the in-memory datastore through the same conversion."""

    def __init__(self, datastore: Any) -> None:
        self.ds = datastore
        self.expander = ResourceExpander()

    @staticmethod
    def _source(r: dict[str, Any]) -> str:
        md = r["metadata"]
        return f"{r['kind']}/{md.get('namespace', '')}/{md['name']}"

    async def apply(self, resources: list[dict[str, Any]]) -> None:
        updates: list[Update] = []
        for r in validate_resources(resources):
            updates += self.expander.expand(self._source(r), v3_to_updates(r))
        self.ds.apply(updates)

    async def delete(self, resources: list[dict[str, Any]]) -> None:
        updates: list[Update] = []
        for r in resources:
            updates += self.expander.delete(self._source(r))
        self.ds.apply(updates)


class EtcdWriter:
    def __init__(self, url: str) -> None:
        from typha.sync.etcd_client import EtcdClient

        self.client = EtcdClient([url])

    async def aclose(self) -> None:
        await self.client.aclose()

    async def apply(self, resources: list[dict[str, Any]]) -> None:
        from typha.sync.etcd_writer import apply_resources

        await apply_resources(self.client, validate_resources(resources))

    async def delete(self, resources: list[dict[str, Any]]) -> None:
        from typha.sync.etcd_writer import delete_resources

        await delete_resources(self.client, resources)


class Churn:
    """Creates, relabels and deletes demo pods (as Calico's CNI plugin writes them)."""

    def __init__(self, writer: ClusterWriter, nodes: list[str]) -> None:
        self.writer = writer
        self.nodes = nodes
        self.pods: dict[str, dict[str, Any]] = {}
        self.rng = random.Random(1)
        self.writes = 0
        self.counter = 0

    def _pod(self, name: str, node: str, ip: str, role: str) -> dict[str, Any]:
        return workload_endpoint_for_pod(node, "demo", name, ip, {"app": "demo", "role": role})

    async def step(self) -> None:
        action = self.rng.random()
        if action < 0.4 or len(self.pods) < 5:
            self.counter += 1
            name = f"pod-{self.counter}"
            node = self.rng.choice(self.nodes)
            ip = f"192.168.200.{self.counter % 250 + 1}"
            wep = self._pod(name, node, ip, self.rng.choice(["frontend", "backend"]))
            self.pods[name] = wep
            await self.writer.apply([wep])
        elif action < 0.8:
            name = self.rng.choice(sorted(self.pods))
            wep = self.pods[name]
            labels = wep["spec"].setdefault("labels", {})
            labels["role"] = "backend" if labels.get("role") == "frontend" else "frontend"
            await self.writer.apply([wep])
        else:
            name = self.rng.choice(sorted(self.pods))
            await self.writer.delete([self.pods.pop(name)])
        self.writes += 1


def status_line(
    typha: Typha, clients: list[SyncClient], churn: Churn, elapsed: float, rate: float
) -> str:
    view = typha.feed.views["felix"]
    in_sync = sum(1 for c in clients if c.status is SyncStatus.IN_SYNC)
    lag = max((view.head_seq - c.seq for c in clients if c.seq >= 0), default=0)
    agree = sum(1 for c in clients if c.state == clients[0].state)
    return (
        f"[{elapsed:6.1f}s] nodes in sync {in_sync}/{len(clients)}  "
        f"same state {agree}/{len(clients)}  keys {len(view):4d}  seq {view.head_seq:5d}  "
        f"max lag {lag:3d}  writes {churn.writes:5d}  updates/s {rate:5.1f}  "
        f"skipped {view.stats.updates_skipped}  "
        f"snapshots {sum(c.stats.snapshots for c in clients)}"
    )


async def run_demo(args: argparse.Namespace) -> None:
    DEMO_DIR.mkdir(exist_ok=True)
    resources = validate_resources(load_documents(EXAMPLES))
    node_names = [r["metadata"]["name"] for r in resources if r["kind"] == "Node"]
    nodes = node_names + [f"sim-node-{i}" for i in range(max(0, args.nodes - len(node_names)))]
    etcd: LocalEtcd | None = None
    overrides: dict[str, Any] = {
        "ServerPort": -1,
        "ServerHost": "127.0.0.1",
        "HealthEnabled": "true",
        "HealthPort": -1,
        "HealthHost": "127.0.0.1",
        "LogFilePath": "none",
        "LogSeverityScreen": "WARNING",
    }
    binary = None if args.datastore == "memory" else find_etcd()
    if args.datastore == "etcd" and binary is None:
        raise SystemExit("demo: no etcd binary found (run `make setup`)")
    writer: ClusterWriter
    datastore = None
    if binary:
        etcd = LocalEtcd(binary, DEMO_DIR / "etcd-data")
        etcd.start()
        print(f"demo: etcd {etcd.url} (data in {etcd.data_dir})")
        overrides["EtcdEndpoints"] = etcd.url
        writer = EtcdWriter(etcd.url)
    else:
        from typha.sync.memory import MemoryDatastore

        print("demo: using the in-memory datastore")
        overrides["DatastoreInMemory"] = "true"
        datastore = MemoryDatastore()
        writer = MemoryWriter(datastore)
    try:
        await writer.apply(resources)
        cfg = load_config(environ={}, overrides=overrides)
        typha = Typha(cfg, datastore)
        churn = Churn(writer, nodes)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(typha.run)
            print(
                f"demo: Typha on 127.0.0.1:{port}, status at "
                f"http://127.0.0.1:{typha.health_port}/status; {len(nodes)} nodes"
            )
            clients = [SyncClient([f"127.0.0.1:{port}"], n) for n in nodes]
            for c in clients:
                nursery.start_soon(c.run)
            started = time.monotonic()

            async def churn_loop() -> None:
                while True:
                    await trio.sleep(1 / args.rate)
                    await churn.step()

            nursery.start_soon(churn_loop)
            view = typha.feed.views["felix"]
            last_total, last_t = view.stats.updates_total, time.monotonic()
            while True:
                await trio.sleep(1)
                now = time.monotonic()
                elapsed = now - started
                rate = (view.stats.updates_total - last_total) / max(now - last_t, 1e-9)
                last_total, last_t = view.stats.updates_total, now
                print(status_line(typha, clients, churn, elapsed, rate), flush=True)
                if args.duration and elapsed >= args.duration:
                    break
            nursery.cancel_scope.cancel()
        if isinstance(writer, EtcdWriter):
            await writer.aclose()
        ok = all(c.state == clients[0].state for c in clients)
        print(f"demo: done; all {len(clients)} nodes hold the same state: {ok}")
    finally:
        if etcd is not None:
            etcd.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="typha-demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=0, help="seconds (0: until Ctrl-C)")
    parser.add_argument("--nodes", type=int, default=6, help="simulated node clients")
    parser.add_argument("--rate", type=float, default=5.0, help="pod changes per second")
    parser.add_argument("--datastore", choices=("auto", "etcd", "memory"), default="auto")
    args = parser.parse_args(argv)
    logs.configure_logging(screen="WARNING", fmt="console")
    try:
        trio.run(run_demo, args)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopped cleanly")
    finally:
        logs.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
