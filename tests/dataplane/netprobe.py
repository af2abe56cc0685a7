"""Tiny traffic programs run inside test namespaces (``ip netns exec NS python netprobe.py …``).

Standard library only, so they start fast in any namespace.

``server --tcp 80,6379 --udp 9998 [--log FILE]``
    Listens on 0.0.0.0. A TCP client gets ``<its ip>\\n`` and the connection is closed; a UDP
    datagram is answered with ``<sender ip>\\n``. Each contact is appended to FILE as
    ``<proto> <peer ip> <local port>``. Prints ``ready`` once every port is bound.

``prober``
    Reads one JSON request per line on stdin, answers one JSON line on stdout:

    * ``{"op": "batch", "checks": [{"proto", "host", "port", "timeout"}, …]}`` runs the checks
      concurrently; answers ``{"results": [{"ok", "reply", "error", "t0", "t1"}, …]}``;
    * ``{"op": "watch", "proto", "host", "port", "want": bool, "interval", "timeout",
      "deadline"}`` starts an attempt every ``interval`` seconds until one that *started* later
      than every attempt with the other outcome has the wanted outcome, and answers
      ``{"found": bool, "t0": <wall-clock start of the first attempt with the wanted outcome
      after the last one without it>, "attempts": n}``.

    ``ok`` means the peer answered; a drop shows as ``error: "timeout"`` and a reset as
    ``"refused"``. Times are ``time.time()`` so the test process can compare them with its own.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def serve(tcp_ports: list[int], udp_ports: list[int], log_path: str | None) -> None:
    sel = selectors.DefaultSelector()
    for port in tcp_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(128)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("tcp", port))
    for port in udp_ports:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("0.0.0.0", port))
        u.setblocking(False)
        sel.register(u, selectors.EVENT_READ, ("udp", port))
    log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            proto, port = key.data
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                if proto == "tcp":
                    conn, (peer, _) = sock.accept()
                    try:
                        conn.settimeout(1)
                        conn.sendall(f"{peer}\n".encode())
                    finally:
                        conn.close()
                else:
                    _, (peer, pport) = sock.recvfrom(2048)
                    sock.sendto(f"{peer}\n".encode(), (peer, pport))
            except OSError:
                continue
            if log is not None:
                log.write(f"{proto} {peer} {port}\n")


def attempt(proto: str, host: str, port: int, timeout: float) -> dict[str, Any]:
    t0 = time.time()
    out: dict[str, Any] = {"ok": False, "reply": "", "error": "", "t0": t0}
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        try:
            if proto == "tcp":
                s.connect((host, port))
                out["reply"] = s.recv(256).decode().strip()
            else:
                s.sendto(b"probe", (host, port))
                data, _ = s.recvfrom(256)
                out["reply"] = data.decode().strip()
            out["ok"] = True
        except TimeoutError:
            out["error"] = "timeout"
        except ConnectionRefusedError:
            out["error"] = "refused"
        except OSError as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
    out["t1"] = time.time()
    return out


def _first_stable(results: list[dict[str, Any]], want: bool, needed: int) -> float | None:
    """Start time of the first attempt with the wanted outcome that began after every attempt
    with the other outcome, provided ``needed`` such attempts exist (the flip held)."""
    last_bad = max((r["t0"] for r in results if r["ok"] != want), default=0.0)
    good = [r["t0"] for r in results if r["ok"] == want and r["t0"] > last_bad]
    return min(good) if len(good) >= needed else None


def watch(req: dict[str, Any], pool: ThreadPoolExecutor) -> dict[str, Any]:
    want: bool = req["want"]
    interval = float(req.get("interval", 0.01))
    timeout = float(req.get("timeout", 0.2))
    deadline = time.time() + float(req.get("deadline", 5))
    futures = []
    while time.time() < deadline:
        futures.append(pool.submit(attempt, req["proto"], req["host"], req["port"], timeout))
        time.sleep(interval)
        # Attempts start in order, so the finished prefix is ordered by start time and no
        # unfinished attempt can start earlier than its end.
        prefix = []
        for f in futures:
            if not f.done():
                break
            prefix.append(f.result())
        t0 = _first_stable(prefix, want, 3)
        if t0 is not None:
            return {"found": True, "t0": t0, "attempts": len(futures)}
    t0 = _first_stable([f.result() for f in futures], want, 1)
    return {"found": t0 is not None, "t0": t0, "attempts": len(futures)}


def probe_loop() -> None:
    pool = ThreadPoolExecutor(max_workers=128)
    lock = threading.Lock()
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "batch":
            checks = req["checks"]
            results = list(
                pool.map(
                    lambda c: attempt(c["proto"], c["host"], c["port"], c.get("timeout", 1.0)),
                    checks,
                )
            )
            answer: dict[str, Any] = {"results": results}
        elif req["op"] == "watch":
            answer = watch(req, pool)
        else:
            answer = {"error": f"unknown op {req['op']!r}"}
        with lock:
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


def main(argv: list[str]) -> None:
    if argv[:1] == ["server"]:
        tcp: list[int] = []
        udp: list[int] = []
        log_path = None
        args = iter(argv[1:])
        for arg in args:
            if arg == "--tcp":
                tcp = [int(p) for p in next(args).split(",") if p]
            elif arg == "--udp":
                udp = [int(p) for p in next(args).split(",") if p]
            elif arg == "--log":
                log_path = next(args)
        serve(tcp, udp, log_path)
    elif argv[:1] == ["prober"]:
        probe_loop()
    else:
        raise SystemExit("usage: netprobe.py server|prober …")


if __name__ == "__main__":
    main(sys.argv[1:])
