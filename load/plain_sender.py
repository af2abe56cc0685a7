"""The baseline for the join benchmark: a minimal selector server that pushes the same snapshot
bytes Typha would send (ServerHello + snapshot frames + BatchDone + SyncStatus) to every client
that connects, and nothing else.

It is what "just write the bytes" costs in Python on this machine: no trio, no per-connection
tasks, no cache, no pings; one non-blocking ``send`` per writable socket. The snapshot is built
by the project's own encoder (``typha.cache.snapshot.encode_snapshot``) from the same generated
endpoints as ``load.bench_typha``, so the byte count matches Typha's to within the stamps.

    python -m load.plain_sender --endpoints 20000 --cpu 0

Prints ``{"event": "ready", "port": ..., "pid": ..., "bytes": ...}``; exits on stdin EOF or a
``{"cmd": "quit"}`` line; ``{"cmd": "stats"}`` answers with the count of completed sends.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import time

from typha.cache.feed import CacheFeed
from typha.cache.snapshot import encode_snapshot, msgpack_snapshot_bytes
from typha.model.keys import SyncerType
from typha.protocol import ServerHello, encode_payload, frame
from typha.sync.base import ResyncFinished, ResyncStarted, Updates

from .gen_datastore import LIST_CHUNK, GenDatastore
from .harness import control_channel


def snapshot_bytes(n_endpoints: int) -> bytes:
    """ServerHello + the felix snapshot of ``n_endpoints`` generated endpoints, as Typha sends
    them to a client that did not offer compression."""
    feed = CacheFeed.create()
    gen = GenDatastore(n_endpoints)
    feed.apply(ResyncStarted("initial"))
    batch = []
    for upd in gen.initial():
        batch.append(upd)
        if len(batch) >= LIST_CHUNK:
            feed.apply(Updates(batch, 1))
            batch = []
    if batch:
        feed.apply(Updates(batch, 1))
    feed.apply(ResyncFinished(1))
    view = feed.views[SyncerType.FELIX]
    snap = encode_snapshot(
        view.head_seq, view.revision, view.status, view.all_kvs(), time.monotonic()
    )
    hello = frame(
        encode_payload(ServerHello(server_version="plain", epoch=1, syncer="felix", conn_id=1))
    )
    return hello + msgpack_snapshot_bytes(snap, False)


class _Conn:
    __slots__ = ("hello", "off", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.hello = bytearray()
        self.off = -1  # -1: waiting for the ClientHello


def serve(blob: bytes, out: object) -> None:
    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, "accept")
    os.set_blocking(0, False)
    sel.register(0, selectors.EVENT_READ, "stdin")
    view = memoryview(blob)
    done = 0
    inbuf = b""

    def say(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")  # type: ignore[attr-defined]
        out.flush()  # type: ignore[attr-defined]

    say({"event": "ready", "port": lsock.getsockname()[1], "pid": os.getpid(), "bytes": len(blob)})
    while True:
        for key, mask in sel.select(1.0):
            what = key.data
            if what == "accept":
                while True:
                    try:
                        sock, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(sock, selectors.EVENT_READ, _Conn(sock))
            elif what == "stdin":
                data = os.read(0, 65536)
                if not data:
                    return
                inbuf += data
                while b"\n" in inbuf:
                    line, inbuf = inbuf.split(b"\n", 1)
                    cmd = json.loads(line) if line.strip() else {}
                    if cmd.get("cmd") == "quit":
                        say({"ok": True, "cmd": "quit"})
                        return
                    if cmd.get("cmd") == "stats":
                        say({"ok": True, "cmd": "stats", "completed": done})
            else:
                conn: _Conn = what
                if mask & selectors.EVENT_READ:
                    try:
                        data = conn.sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(conn.sock)
                        conn.sock.close()
                        continue
                    if conn.off < 0:
                        conn.hello += data
                        if len(conn.hello) >= 5 and len(conn.hello) >= 5 + int.from_bytes(
                            conn.hello[:4], "big"
                        ):
                            conn.off = 0
                            sel.modify(
                                conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn
                            )
                if mask & selectors.EVENT_WRITE and 0 <= conn.off < len(blob):
                    try:
                        conn.off += conn.sock.send(view[conn.off :])
                    except BlockingIOError:
                        pass
                    except OSError:
                        sel.unregister(conn.sock)
                        conn.sock.close()
                        continue
                    if conn.off >= len(blob):
                        done += 1
                        sel.modify(conn.sock, selectors.EVENT_READ, conn)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Plain snapshot sender (join benchmark baseline).")
    p.add_argument("--endpoints", type=int, default=20000)
    p.add_argument("--cpu", type=int, default=None)
    args = p.parse_args(argv)
    out = control_channel(args.cpu)
    blob = snapshot_bytes(args.endpoints)
    serve(blob, out)


if __name__ == "__main__":
    main()
