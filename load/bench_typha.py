"""A real Typha (``typha.app.Typha``: CacheFeed + SyncServer) over the generator datastore, in
its own process, driven by JSON lines on stdin.

    python -m load.bench_typha --endpoints 20000 --config '{"ServerFanoutIntervalSecs": 0.02}'

Prints one JSON line to stdout once it listens and its cache is in sync::

    {"event": "ready", "pid": ..., "port": ..., "http_port": ...}

and answers commands (one JSON object per line on stdin) with one JSON line each:

* ``{"cmd": "rate", "rate": 2000}`` — set the generator's update rate;
* ``{"cmd": "stats"}`` — generator counters;
* ``{"cmd": "profile_start"}`` / ``{"cmd": "profile_stop", "path": "x.prof"}`` — cProfile the
  process between the two (only when ``TYPHA_BENCH_PROFILE=1`` is set, so that a normal run
  never pays for the profiler hooks);
* ``{"cmd": "quit"}``.

The HTTP port serves Typha's /status, /liveness, /readiness plus ``/metrics`` (the Prometheus
text of the ``typha_*`` metrics) and ``/bench`` (generator counters), so the parent reads
the server's own numbers without a separate metrics listener. Logs go to stderr at WARNING.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

from typha.app import Typha
from typha.config import load_config

from .gen_datastore import GenDatastore
from .harness import control_channel


def bench_config(overrides: dict[str, Any] | None = None) -> Any:
    """The Typha config used by benchmarks: loopback, random ports, quiet logs."""
    base: dict[str, Any] = {
        "ServerPort": -1,
        "ServerHost": "127.0.0.1",
        "HealthEnabled": True,
        "HealthHost": "127.0.0.1",
        "HealthPort": -1,
        "LogFilePath": "none",
        "LogSeverityScreen": "WARNING",
        "LogSeveritySys": "none",
        "MaxConnectionsUpperLimit": 20000,
        "MaxConnectionsLowerLimit": 400,
    }
    base.update(overrides or {})
    return load_config(environ={}, overrides=base)


class BenchTypha(Typha):
    """Typha with two extra read-only routes for the benchmark driver."""

    gen: GenDatastore
    lag: LagMonitor | None = None
    slow: SlowSteps | None = None

    def routes(self) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        routes = super().routes()
        routes["/metrics"] = lambda: (200, CONTENT_TYPE_LATEST, generate_latest())
        routes["/bench"] = lambda: (200, "application/json", json.dumps(gen_stats(self)).encode())
        return routes


class LagMonitor:
    """Event-loop lag: how late a 5 ms sleep wakes up (what every timer in Typha suffers), and
    the garbage collector's pauses by generation."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.gc: dict[int, list[float]] = {}
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_started
            self.gc.setdefault(info["generation"], []).append(pause)

    async def run(self) -> None:
        period = 0.005
        while True:
            t = trio.current_time()
            await trio.sleep(period)
            self.samples.append(trio.current_time() - t - period)

    def take(self) -> dict[str, Any]:
        xs, self.samples = sorted(self.samples), []
        gcs, self.gc = self.gc, {}
        out: dict[str, Any] = {
            "gc": {
                str(gen): {"n": len(p), "max_ms": round(max(p) * 1000, 2)}
                for gen, p in sorted(gcs.items())
            }
        }
        if xs:
            pick = lambda q: round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 3)  # noqa: E731
            out.update(lag_p50_ms=pick(0.5), lag_p99_ms=pick(0.99), lag_max_ms=pick(1.0))
        return out


class SlowSteps(trio.abc.Instrument):
    """Records task steps that hold the event loop for more than ``threshold`` seconds."""

    def __init__(self, threshold: float = 0.002) -> None:
        self.threshold = threshold
        self.steps: dict[str, list[float]] = {}
        self._t = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._t = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        dt = time.perf_counter() - self._t
        if dt > self.threshold:
            self.steps.setdefault(task.name.rsplit(".", 1)[-1], []).append(round(dt * 1000, 2))

    def take(self) -> dict[str, Any]:
        out, self.steps = self.steps, {}
        return {k: {"n": len(v), "max_ms": max(v)} for k, v in out.items()}


def gen_stats(typha: BenchTypha) -> dict[str, Any]:
    s = typha.gen.stats
    lag = typha.lag.take() if typha.lag is not None else {}
    if typha.slow is not None:
        lag["slow_steps"] = typha.slow.take()
    return {
        "t": time.time(),
        **lag,
        "rate": typha.gen.rate,
        "written": s.written,
        "batches": s.batches,
        "max_batch": s.max_batch,
        "max_lag_secs": round(s.max_lag_secs, 4),
        "revision": typha.gen.revision,
        "connections": len(typha.server.connections),
    }


async def _commands(typha: BenchTypha, out: Any, profiler: cProfile.Profile | None) -> None:
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = b""
    while True:
        data = await stream.receive_some(65536)
        if not data:  # the driver went away: stop
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            cmd = json.loads(line)
            reply: dict[str, Any] = {"ok": True, "cmd": cmd.get("cmd")}
            match cmd.get("cmd"):
                case "rate":
                    typha.gen.set_rate(float(cmd["rate"]))
                case "stats":
                    reply.update(gen_stats(typha))
                case "gcinfo":
                    reply.update(
                        objects=[len(gc.get_objects(g)) for g in range(3)],
                        frozen=gc.get_freeze_count(),
                        thresholds=gc.get_threshold(),
                    )
                case "profile_start" if profiler is not None:
                    profiler.enable()
                case "profile_stop" if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(cmd["path"])
                case "quit":
                    out.write(json.dumps(reply) + "\n")
                    out.flush()
                    return
                case _:
                    reply = {"ok": False, "cmd": cmd.get("cmd"), "error": "unknown command"}
            out.write(json.dumps(reply) + "\n")
            out.flush()


async def main_async(args: argparse.Namespace, out: Any) -> None:
    cfg = bench_config(json.loads(args.config) if args.config else {})
    gen = GenDatastore(args.endpoints, args.rate, batch_secs=args.batch_ms / 1000.0)
    typha = BenchTypha(cfg, gen)
    typha.gen = gen
    if args.lag_monitor:
        typha.lag = LagMonitor()
        typha.extra_tasks.append(typha.lag.run)
        typha.slow = SlowSteps()
        trio.lowlevel.add_instrument(typha.slow)
    profiler = cProfile.Profile() if os.environ.get("TYPHA_BENCH_PROFILE") == "1" else None
    async with trio.open_nursery() as nursery:
        port = await nursery.start(typha.run)
        with trio.fail_after(600):
            while not typha.feed.in_sync or typha.health_port is None:
                await trio.sleep(0.01)
        out.write(
            json.dumps(
                {"event": "ready", "pid": os.getpid(), "port": port, "http_port": typha.health_port}
            )
            + "\n"
        )
        out.flush()
        await _commands(typha, out, profiler)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=10000)
    p.add_argument("--rate", type=float, default=0.0, help="updates/s (0: idle until told)")
    p.add_argument("--batch-ms", type=float, default=5.0, help="generator batching window")
    p.add_argument("--config", default="", help="JSON object of Typha config overrides")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    p.add_argument("--lag-monitor", action="store_true", help="measure event-loop lag")
    args = p.parse_args(argv)
    out = control_channel(args.cpu)
    trio.run(main_async, args, out)


if __name__ == "__main__":
    main()
