"""Hostile hellos and pongs, on both protocols: overlong hello strings are refused, a Pong cannot
acknowledge what was never sent, and frames pipelined behind the hello are handled at once.
Each case sits beside the same path working when it should."""

from __future__ import annotations

import socket
import time
from typing import Any

import trio
from structlog.testing import capture_logs

from tests.protocol.gob.golike import GoLikeClientEncoder
from tests.typha_harness import RunningTypha, make_config, run_typha, wait_until, wep
from typha.protocol import (
    BatchDone,
    ClientHello,
    Goodbye,
    Pong,
    ServerHello,
    encode_payload,
    frame,
)
from typha.protocol.gob import ClientHello as GobHello
from typha.protocol.gob import Pong as GobPong
from typha.protocol.hello_limits import HELLO_MAX_LIST, HELLO_MAX_STRING
from typha.sync.memory import MemoryDatastore

from .rawclient import RawClient


def _client(typha: RunningTypha, node: str) -> dict[str, Any] | None:
    for c in typha.server.status()["clients"]:
        if c["node"] == node:
            return c
    return None


def _hello_frame(**kw: Any) -> bytes:
    fields: dict[str, Any] = dict(node="n", features=("catchup", "goodbye", "resume"))
    fields.update(kw)
    return frame(encode_payload(ClientHello(**fields)))


async def _send_and_read_all(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    out = b""
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(timeout):
            while chunk := await stream.receive_some(65536):
                out += chunk
    return out


# --- (a) hello strings are capped, on both protocols ------------------------------------------


async def test_msgpack_hello_strings_over_the_cap_are_refused_with_the_field_named() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(3)))
    async with run_typha(ds) as typha:
        long = "n" * (HELLO_MAX_STRING + 1)
        cases = {
            "node": _hello_frame(node="x" * 60_000),  # within the 64 KiB before a hello
            "node ": _hello_frame(node=long),
            "info": _hello_frame(info=long),
            "version": _hello_frame(client_version="é" * 600),  # 1,200 UTF-8 bytes
            "syncer": _hello_frame(syncer="felix" * 300),
            "features": _hello_frame(features=tuple(f"f{i}" for i in range(HELLO_MAX_LIST + 1))),
        }
        for field, hello in cases.items():
            with capture_logs() as logs:
                answer = await _send_and_read_all(typha.port, hello)
            assert answer == b"", (field, answer[:60])  # closed, no ServerHello
            reasons = [e.get("reason", "") for e in logs if e["event"].startswith("protocol error")]
            assert any(f"hello field {field.strip()}" in r and "limit" in r for r in reasons), (
                field,
                logs,
            )
        assert typha.server.status()["clients"] == []

        # Positive control: names up to the cap (a Kubernetes node name is at most 253 bytes)
        # are served and shown as sent.
        for node in ("k" * 253, "m" * HELLO_MAX_STRING):
            raw = await RawClient.connect(typha.port)
            await raw.hello(node=node)
            await raw.read_until(lambda m: isinstance(m, BatchDone))
            await wait_until(lambda n=node: _client(typha, n) is not None, 5)
            await raw.aclose()


def _gob_hello(**kw: Any) -> bytes:
    fields: dict[str, Any] = dict(
        hostname="n1", syncer_type="felix", supports_modern_policy_keys=True
    )
    fields.update(kw)
    return GoLikeClientEncoder().encode(GobHello(**fields))


def _gob_exchange(port: int, data: bytes, hold: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data``; return what came back and whether the server closed within ``hold``."""
    with socket.create_connection(("127.0.0.1", port), timeout=hold) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + hold
        try:
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            return out, True
        return out, False


async def test_gob_hello_strings_over_the_cap_are_refused_with_the_field_named() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(3)))
    async with run_typha(ds) as typha:
        long = "h" * (HELLO_MAX_STRING + 1)
        cases = {
            "Hostname": _gob_hello(hostname="x" * 4000),  # under gob's 4,096-byte strings
            "Hostname ": _gob_hello(hostname=long),
            "Info": _gob_hello(info=long),
            "Version": _gob_hello(version=long),
        }
        for field, hello in cases.items():
            with capture_logs() as logs:
                answer, closed = await trio.to_thread.run_sync(_gob_exchange, typha.port, hello)
            assert closed and b"MsgServerHello" not in answer, field
            reasons = [e.get("reason", "") for e in logs if "protocol error" in e["event"]]
            assert any(f"hello field {field.strip()}" in r for r in reasons), (field, logs)
        assert typha.server.status()["clients"] == []

        # Positive control: a hostname at the cap is served and shown whole on /status.
        node = "g" * HELLO_MAX_STRING
        sock = socket.create_connection(("127.0.0.1", typha.port))
        try:
            sock.sendall(_gob_hello(hostname=node))
            await wait_until(lambda: _client(typha, node) is not None, 5)
        finally:
            sock.close()


# --- (b) a Pong cannot acknowledge what was never sent ---------------------------------------


async def test_pong_beyond_the_last_sent_seq_is_a_protocol_error() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(3)))
    async with run_typha(ds) as typha:
        # Positive control first: a pong at the position the client reached is recorded, and
        # the lag grows as the head moves on without it.
        honest = await RawClient.connect(typha.port)
        await honest.hello(node="honest")
        done = await honest.read_until(lambda m: isinstance(m, BatchDone))
        assert isinstance(done, BatchDone)
        await honest.stream.send_all(frame(encode_payload(Pong(1, done.seq))))
        await wait_until(lambda: (_client(typha, "honest") or {}).get("acked_seq") == done.seq, 5)
        for i in range(3):
            ds.set(*wep(100 + i))
        await wait_until(lambda: (_client(typha, "honest") or {}).get("lag") == 3, 5)

        # A pong claiming far more than was sent: Goodbye with the reason, and closed.
        liar = await RawClient.connect(typha.port)
        await liar.hello(node="liar")
        done = await liar.read_until(lambda m: isinstance(m, BatchDone))
        await liar.stream.send_all(frame(encode_payload(Pong(1, done.seq + 1_000_000))))
        bye = await liar.read_until(lambda m: isinstance(m, Goodbye), 5)
        assert isinstance(bye, Goodbye) and "Pong acknowledges seq" in bye.reason, bye
        await liar.read_until_closed(5)
        await wait_until(lambda: _client(typha, "liar") is None, 5)
        # Below -1 is refused too.
        low = await RawClient.connect(typha.port)
        await low.hello(node="low")
        await low.read_until(lambda m: isinstance(m, BatchDone))
        await low.stream.send_all(frame(encode_payload(Pong(1, -5))))
        bye = await low.read_until(lambda m: isinstance(m, Goodbye), 5)
        assert "Pong acknowledges seq -5" in bye.reason  # type: ignore[attr-defined]
        # The honest client is unaffected.
        assert (_client(typha, "honest") or {}).get("lag") == 3
        for raw in (honest, liar, low):
            await raw.aclose()


# --- (c) frames pipelined behind the hello are handled at once -------------------------------


async def test_msgpack_frames_pipelined_with_the_hello_are_handled_without_more_bytes() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(3)))
    async with run_typha(ds, make_config(ServerPingIntervalSecs=60)) as typha:
        # A pong in the same write as the hello: recorded at once.
        async with await trio.open_tcp_stream("127.0.0.1", typha.port) as stream:
            await stream.send_all(
                _hello_frame(node="pipelined") + frame(encode_payload(Pong(1, -1)))
            )
            await wait_until(
                lambda: (_client(typha, "pipelined") or {}).get("acked_age_secs") is not None, 3
            )
        # A second hello in the same write: the protocol error is seen at once (Goodbye).
        out = await _send_and_read_all(
            typha.port, _hello_frame(node="twice") + _hello_frame(node="twice"), 3
        )
        assert b"ClientHello not allowed" in out, out[-200:]

        # Positive control: the same second hello in a later write (the path that always
        # worked) gets the same answer.
        later = await RawClient.connect(typha.port)
        await later.hello(node="later")
        await later.read_until(lambda m: isinstance(m, ServerHello))
        await later.stream.send_all(_hello_frame(node="later"))
        bye = await later.read_until(lambda m: isinstance(m, Goodbye), 3)
        assert "ClientHello not allowed" in bye.reason  # type: ignore[attr-defined]
        await later.aclose()


async def test_gob_messages_pipelined_with_the_hello_are_handled_without_more_bytes() -> None:
    ds = MemoryDatastore(dict(wep(i) for i in range(3)))
    async with run_typha(ds, make_config(ServerPingIntervalSecs=60)) as typha:
        # A second hello in the same write as the first: closed right after the snapshot.
        enc = GoLikeClientEncoder()
        hello = dict(hostname="twice", syncer_type="felix", supports_modern_policy_keys=True)
        twice = enc.encode(GobHello(**hello)) + enc.encode(GobHello(**hello))
        answer, closed = await trio.to_thread.run_sync(_gob_exchange, typha.port, twice, 3.0)
        assert b"MsgServerHello" in answer and closed

        # Positive control: the hello alone is served and the connection stays open.
        answer, closed = await trio.to_thread.run_sync(
            _gob_exchange, typha.port, _gob_hello(hostname="once"), 1.5
        )
        assert b"MsgServerHello" in answer and not closed

        # A pong in the same write as the hello is recorded at once.
        enc = GoLikeClientEncoder()
        sock = socket.create_connection(("127.0.0.1", typha.port))
        try:
            sock.sendall(
                enc.encode(GobHello(**{**hello, "hostname": "gob-pipelined"}))
                + enc.encode(GobPong())
            )
            await wait_until(
                lambda: (_client(typha, "gob-pipelined") or {}).get("acked_age_secs") is not None,
                3,
            )
        finally:
            sock.close()
