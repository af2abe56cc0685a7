"""Our light clients behind the same JSON-line interface as the Go ``gobload`` helper.

    python -m load.lightload --addr 127.0.0.1:5473 --clients 100

``load.bench_vs_go`` drives either program the same way: stdout gets ``{"event": "started"}``,
then ``{"event": "all_in_sync"}`` once every client is in sync; a ``report`` line on stdin is
answered by one JSON line (per-client in-sync times, updates received in sync, disconnects,
latency samples taken since the previous report); ``quit`` or EOF ends it. Clients retry
every ``--retry`` seconds until the server accepts, so one is already retrying when a server
is exec'd (the cold-start measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .lightclient import LIGHT, ClientOptions, Engine


def report(engine: Engine) -> dict[str, Any]:
    return {
        "event": "report",
        "wall": time.time(),
        "clients": [
            {
                "index": i,
                "in_sync_at": c.first_sync_at,
                "disconnects": c.disconnects,
            }
            for i, c in enumerate(engine.clients)
        ],
        # Per-client delta counts are not kept by the engine; the sum is what the bench uses.
        "updates_in_sync_total": engine.kvs_delta,
        "latencies_ms": engine.take_latencies(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", required=True)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--retry", type=float, default=0.02, help="seconds between connect attempts")
    p.add_argument("--sample", type=float, default=0.01)
    p.add_argument("--node-prefix", default="lightload-")
    args = p.parse_args(argv)

    opts = ClientOptions(
        addresses=[args.addr],
        mode=LIGHT,
        sample_prob=args.sample,
        backoff_base=args.retry,
        backoff_cap=args.retry,
    )
    engine = Engine(opts, args.clients, node_prefix=args.node_prefix)
    out = sys.stdout

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    done = False
    buf = b""

    def on_stdin() -> None:
        nonlocal done, buf
        data = os.read(0, 4096)
        if not data:
            done = True
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd = line.strip().decode()
            if cmd == "report":
                emit(report(engine))
            elif cmd == "quit":
                done = True

    emit({"event": "started", "wall": time.time(), "clients": args.clients})
    engine.add_reader(0, on_stdin)
    engine.start()
    announced = False
    while not done:
        engine.poll(0.05)
        if not announced and all(c.first_sync_at is not None for c in engine.clients):
            announced = True
            emit({"event": "all_in_sync", "wall": time.time()})
    engine.close()


if __name__ == "__main__":
    main()
