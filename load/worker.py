"""A load worker process: K clients of one :class:`load.lightclient.Engine`, reporting to its
parent as JSON lines on stdout, taking commands as JSON lines on stdin.

    python -m load.worker --addr 127.0.0.1:5473 --clients 250 --mode light --cpu 1

Reports (one line each, ``"type"`` says which):

* ``stats`` every ``--interval`` seconds: the engine's cumulative counters (clients connected,
  in sync, KVs by kind, frames, bytes, reconnects...), the latency samples (ms) taken since the
  previous report, and the worker's own CPU seconds and RSS;
* ``digests`` / ``verify`` / ``bye`` in answer to commands.

Commands: ``{"cmd": "start", "at": <wall time>, "spread": s}`` (with ``--hold``: connect only
then, so that several workers join at once), ``{"cmd": "sample", "p": x}``, ``{"cmd":
"digests"}``, ``{"cmd": "verify", "path": <msgpack file of {key: packed value}>}``, ``{"cmd":
"stop"}``. EOF on stdin also stops the worker.

:class:`WorkerProcess` is the parent's handle on one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from .lightclient import LIGHT, MODES, ClientOptions, Engine


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        opts = ClientOptions(
            addresses=args.addr,
            syncer=args.syncer,
            mode=args.mode,
            compression=args.compression,
            resume=not args.no_resume,
            sample_prob=args.sample,
            read_timeout=args.read_timeout,
            rcvbuf=args.rcvbuf or None,
        )
        self.args = args
        self.engine = Engine(
            opts,
            args.clients,
            node_prefix=args.node_prefix,
            first_index=args.first_index,
            seed=args.seed,
            full_clients=args.full_clients,
        )
        self.out = sys.stdout
        self.done = False
        self._inbuf = b""

    def emit(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.out.flush()

    def report(self) -> None:
        eng = self.engine
        lat = eng.take_latencies()
        msg: dict[str, Any] = {
            "type": "stats",
            "worker": self.args.worker_id,
            "t": time.time(),
            **eng.summary(),
            "lat_ms": [round(x, 3) for x in lat],
            "cpu_s": round(_cpu_seconds(), 3),
            "rss": _rss(),
        }
        self.emit(msg)

    def _tick(self) -> None:
        self.report()
        if not self.done:
            self.engine.call_later(self.args.interval, self._tick)

    def _on_stdin(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self.done = True
            return
        self._inbuf += data
        while b"\n" in self._inbuf:
            line, self._inbuf = self._inbuf.split(b"\n", 1)
            if line.strip():
                self._command(json.loads(line))

    def _command(self, cmd: dict[str, Any]) -> None:
        eng = self.engine
        match cmd.get("cmd"):
            case "start":
                at = cmd.get("at")
                mono = time.monotonic() + (max(0.0, at - time.time()) if at else 0.0)
                eng.start(at=mono, spread=float(cmd.get("spread", 0.0)))
            case "sample":
                eng.opts.sample_prob = float(cmd["p"])
            case "digests":
                self.emit({"type": "digests", "digests": eng.digests()})
            case "verify":
                with open(cmd["path"], "rb") as f:
                    expected = msgpack.unpackb(f.read(), raw=False)
                self.emit({"type": "verify", "rows": eng.verify(expected)})
            case "report":
                self.report()
            case "stop":
                self.done = True
            case other:
                self.emit({"type": "error", "error": f"unknown command {other!r}"})

    def run(self) -> None:
        eng = self.engine
        os.set_blocking(0, False)
        eng.add_reader(0, self._on_stdin)
        if not self.args.hold:
            eng.start(spread=self.args.spread)
        eng.call_later(self.args.interval, self._tick)
        eng.run(until=lambda: self.done)
        self.report()
        self.emit({"type": "bye", "worker": self.args.worker_id})
        eng.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run K load clients and report as JSON lines.")
    p.add_argument("--addr", action="append", required=True, help="Typha host:port (repeat)")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--mode", choices=MODES, default=LIGHT)
    p.add_argument(
        "--full-clients", type=int, default=0, help="with --mode light: this many full clients"
    )
    p.add_argument("--syncer", default="felix")
    p.add_argument("--compression", action="store_true", help="offer zstd")
    p.add_argument("--no-resume", action="store_true", help="never send resume tokens")
    p.add_argument("--sample", type=float, default=0.01, help="P(sample) per delta KV")
    p.add_argument("--read-timeout", type=float, default=60.0)
    p.add_argument("--rcvbuf", type=int, default=0)
    p.add_argument("--node-prefix", default="load-node-")
    p.add_argument("--first-index", type=int, default=0)
    p.add_argument("--worker-id", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--interval", type=float, default=1.0, help="stats period (s)")
    p.add_argument("--spread", type=float, default=0.0, help="spread the first connects (s)")
    p.add_argument("--hold", action="store_true", help="connect only on a start command")
    p.add_argument("--cpu", default="", help="pin to these CPUs (comma-separated)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, {int(c) for c in args.cpu.split(",")})
    # Decoded snapshots are many small containers; collecting them over and over is wasted
    # work (docs/architecture.md, "Measured costs behind the design"), and the clients make
    # no reference cycles worth chasing quickly.
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)
    _Worker(args).run()


# --- Parent side -------------------------------------------------------------------------------


class WorkerProcess:
    """Spawns one worker and collects its reports in a background thread."""

    def __init__(self, args: Sequence[str], *, worker_id: int = 0) -> None:
        self.worker_id = worker_id
        cmd = [sys.executable, "-m", "load.worker", "--worker-id", str(worker_id), *args]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            start_new_session=True,  # its own autogroup (see load.harness.renice)
        )
        self.stats: list[dict[str, Any]] = []  # every stats report, without lat_ms
        self.latencies: list[tuple[float, float]] = []  # (report wall time, ms)
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.latest: dict[str, Any] = {}
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("type") == "stats":
                lat = msg.pop("lat_ms", [])
                with self._lock:
                    self.latest = msg
                    self.stats.append(msg)
                    t = msg["t"]
                    self.latencies.extend((t, x) for x in lat)
            else:
                self.replies.put(msg)
                if msg.get("type") == "bye":
                    break
        self.finished.set()

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError, ValueError):  # the worker may already be gone
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()

    def request(self, cmd: dict[str, Any], reply_type: str, timeout: float = 120.0) -> dict:
        self.send(cmd)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"worker {self.worker_id}: no {reply_type} reply")
            msg = self.replies.get(timeout=left)
            if msg.get("type") == reply_type:
                return msg

    def snapshot(self) -> tuple[dict[str, Any], list[tuple[float, float]]]:
        with self._lock:
            return dict(self.latest), list(self.latencies)

    def stop(self, timeout: float = 30.0) -> None:
        self.send({"cmd": "stop"})
        self.finished.wait(timeout)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


if __name__ == "__main__":
    main()
