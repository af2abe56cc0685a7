"""The ``felix-client`` command: sync from Typha and (with the dataplane) program the node."""

from __future__ import annotations

import argparse
import json
import sys
import time

import structlog
import trio

from felix_client.config import ClientConfigError, from_env
from felix_client.sync_client import SyncClient
from typha.tls import client_ssl_context

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="felix-client", description="Lightweight Felix: sync from Typha, program the node."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="sync from Typha (and apply the dataplane)")
    run.add_argument("--node", required=True, help="this node's name")
    run.add_argument(
        "--typha",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="Typha address (repeatable; overrides FELIX_TYPHAADDR and discovery)",
    )
    run.add_argument("--syncer", default="felix", help="syncer type (default felix)")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9091,
        help="Prometheus port (Felix's default 9091; 0 disables)",
    )
    run.add_argument("--metrics-host", default="127.0.0.1")
    run.add_argument(
        "--dry-run",
        metavar="DIR",
        default=None,
        help="apply nothing; keep DIR up to date with the rendered state",
    )
    run.add_argument("--netns", default=None, help="apply into this named network namespace")
    run.add_argument(
        "--status-interval", type=float, default=5.0, help="seconds between status lines (0: none)"
    )
    run.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    return parser


async def _status_loop(client: SyncClient, interval: float) -> None:
    started = time.monotonic()
    while True:
        await trio.sleep(interval)
        print(
            json.dumps(
                {
                    "node": client.node,
                    "connected_to": client.connected_to,
                    "status": client.status.name.lower() if client.status is not None else None,
                    "keys": len(client.state),
                    "seq": client.seq,
                    "revision": client.revision,
                    "snapshots": client.stats.snapshots,
                    "resumes": client.stats.resumes,
                    "reconnects": client.stats.disconnects,
                    "uptime_s": round(time.monotonic() - started, 1),
                }
            ),
            flush=True,
        )


async def run_client(args: argparse.Namespace) -> int:
    try:
        env = from_env()
    except ClientConfigError as exc:
        print(f"felix-client: {exc}", file=sys.stderr)
        return 2
    addrs = list(args.typha) or env.addrs
    ssl_ctx = None
    if env.tls_enabled:
        ssl_ctx = client_ssl_context(env.cert_file, env.key_file, env.ca_file)
    if not addrs and env.k8s_service_name:
        from typha.k8s.discovery import DiscoveryError, discover_typha

        def addresses() -> list[str]:
            # Re-discovered before each connection attempt, as Felix does; a failed lookup
            # means "try again after the backoff", not "give up".
            try:
                return discover_typha(env.k8s_service_name, env.k8s_namespace, args.node)
            except DiscoveryError as exc:
                log.warning("Typha discovery failed", error=str(exc))
                return []

        source: object = addresses
    elif addrs:
        source = addrs
    else:
        print(
            "felix-client: no Typha address (--typha, FELIX_TYPHAADDR or "
            "FELIX_TYPHAK8SSERVICENAME)",
            file=sys.stderr,
        )
        return 2
    dataplane = None
    if args.dry_run or args.netns:
        from felix_client.agent import NodeAgent

        dataplane = NodeAgent(
            args.node,
            dry_run_dir=args.dry_run,
            netns=args.netns,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    client = SyncClient(
        source,  # type: ignore[arg-type]
        args.node,
        args.syncer,
        callbacks=dataplane,
        ssl_context=ssl_ctx,
        server_cn=env.cn,
        server_uri_san=env.uri_san,
        read_timeout=env.read_timeout,
        write_timeout=env.write_timeout,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        if dataplane is not None:
            nursery.start_soon(dataplane.run)
        if args.status_interval > 0:
            nursery.start_soon(_status_loop, client, args.status_interval)
        if args.duration:
            await trio.sleep(args.duration)
            nursery.cancel_scope.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return trio.run(run_client, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
