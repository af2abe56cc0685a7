"""The catch-up amplification attack of issue 12 (item 3), as a load tool: hello after hello
asking to resume from an old position with the ``catchup`` feature and zstd.

    python -m load.catchup_attack --addr 127.0.0.1:5473 --epoch 123 --rate 30 --duration 20

The epoch needs no credentials: it is in every ServerHello and on ``/status``. Each connection
sends ``resume: [epoch, seq, nil]`` (``--seq``, 1 by default; -1 sends a plain hello, the
connect storm to compare with), reads what the server sends up to
the end of the first snapshot or catch-up (its BatchDone), and closes. Connections are opened
at ``--rate`` per second (at most ``--max-open`` at once) for ``--duration`` seconds.

Prints one JSON line when done: connections opened and completed, how the server answered
(catch-ups, snapshots, resumed or not), bytes received, failures, and this process's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import trio

from typha.protocol import (
    FEATURE_CATCHUP,
    FEATURE_GOODBYE,
    FEATURE_RESUME,
    BatchDone,
    ClientSession,
    Goodbye,
    KVKind,
    ResumeToken,
    ServerHello,
    decode_payload,
)
from typha.protocol.errors import MalformedFrame
from typha.protocol.framing import HEADER_SIZE

# Plain frames up to this size are decoded (hello, BatchDone, status); bigger ones are skipped.
_SMALL = 4096


class Attack:
    def __init__(self, args: argparse.Namespace) -> None:
        host, _, port = args.addr.rpartition(":")
        self.host, self.port = host, int(port)
        # --seq -1: a plain hello without a resume token (a connect storm, for comparison).
        self.token = ResumeToken(args.epoch, args.seq, None) if args.seq >= 0 else None
        self.args = args
        self.counts = {
            "opened": 0,
            "completed": 0,
            "resumed": 0,
            "catchups": 0,
            "snapshots": 0,
            "failed": 0,
            "skipped_max_open": 0,
            "bytes": 0,
        }
        self.answer_secs: list[float] = []
        self.open = 0

    async def one(self) -> None:
        self.counts["opened"] += 1
        self.open += 1
        started = time.monotonic()
        try:
            with trio.fail_after(self.args.timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
                async with stream:
                    session = ClientSession(
                        "attacker",
                        features=(FEATURE_CATCHUP, FEATURE_GOODBYE, FEATURE_RESUME),
                        keep_state=False,
                    )
                    await stream.send_all(session.connect(resume=self.token))
                    kind = await self._read_answer(stream)
                    self.counts[kind] += 1
                    self.counts["completed"] += 1
                    self.answer_secs.append(time.monotonic() - started)
        except (OSError, EOFError, MalformedFrame, trio.TooSlowError, trio.BrokenResourceError):
            self.counts["failed"] += 1
        finally:
            self.open -= 1

    async def _read_answer(self, stream: trio.SocketStream) -> str:
        """Skip frames up to the first BatchDone without decompressing the big ones (an attacker
        spends as little as it can; only small plain frames are decoded). Returns "catchups" or
        "snapshots"."""
        buf = bytearray()
        skip = 0
        while True:
            data = await stream.receive_some(1 << 18)
            if not data:
                raise EOFError("closed before a BatchDone")
            self.counts["bytes"] += len(data)
            if skip >= len(data):
                skip -= len(data)
                continue
            buf += memoryview(data)[skip:]
            skip = 0
            while len(buf) >= HEADER_SIZE:
                length = int.from_bytes(buf[:4], "big")
                flags = buf[4]
                end = HEADER_SIZE + length
                if flags or length > _SMALL:  # a KVs chunk: not worth looking at
                    if end > len(buf):
                        skip = end - len(buf)
                        buf.clear()
                        break
                    del buf[:end]
                    continue
                if end > len(buf):
                    break
                msg = decode_payload(bytes(buf[HEADER_SIZE:end]))
                del buf[:end]
                if isinstance(msg, ServerHello) and msg.resumed:
                    self.counts["resumed"] += 1
                elif isinstance(msg, BatchDone):
                    return "catchups" if msg.kind is KVKind.CATCHUP else "snapshots"
                elif isinstance(msg, Goodbye):
                    raise EOFError("goodbye before a BatchDone")

    async def run(self) -> dict:
        gap = 1.0 / self.args.rate
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            i = 0
            while (t := start + i * gap) < start + self.args.duration:
                await trio.sleep_until(t)
                i += 1
                if self.open >= self.args.max_open:
                    self.counts["skipped_max_open"] += 1
                    continue
                nursery.start_soon(self.one)
        answers = sorted(self.answer_secs)
        times = os.times()
        return {
            **self.counts,
            "answer_p50_ms": round(answers[len(answers) // 2] * 1e3, 1) if answers else None,
            "answer_max_ms": round(answers[-1] * 1e3, 1) if answers else None,
            "attacker_cpu_s": round(times.user + times.system, 2),
        }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", required=True, help="Typha host:port")
    p.add_argument("--epoch", type=int, required=True, help="the server's epoch (/status)")
    p.add_argument(
        "--seq", type=int, default=1, help="the position to resume from (-1: no resume token)"
    )
    p.add_argument("--rate", type=float, default=30.0, help="connections per second")
    p.add_argument("--duration", type=float, default=20.0, help="seconds")
    p.add_argument("--max-open", type=int, default=256, help="connections open at once")
    p.add_argument("--timeout", type=float, default=30.0, help="per connection (s)")
    p.add_argument("--cpu", default="", help="pin to these CPUs (comma-separated)")
    args = p.parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, {int(c) for c in args.cpu.split(",")})
    result = trio.run(Attack(args).run)
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
