"""Fuzzing the decoder and the server's handshake with hypothesis.

`make test` runs a fixed, derandomized budget; `make fuzz` sets TYPHA_FUZZ_EXAMPLES=100000.
"""

from __future__ import annotations

import random

import trio
from hypothesis import given
from hypothesis import strategies as st

from felix_client.sync_client import SyncClient
from tests.fuzz.budget import BUDGET, FUZZ
from tests.fuzz.common import session_after_hello
from tests.typha_harness import make_config, run_typha, wait_until, wep
from typha.protocol import (
    ClientProtocol,
    FrameDecoder,
    ProtocolError,
    ServerProtocol,
    State,
    decode_payload,
    encode_payload,
    frame,
)
from typha.protocol.messages import ClientHello, ResumeToken
from typha.sync.memory import MemoryDatastore

valid_hello = frame(encode_payload(ClientHello(node="n", resume=ResumeToken(1, 2, 3))))


def mutate(data: bytes, rng: random.Random, n: int) -> bytes:
    buf = bytearray(data)
    for _ in range(n):
        op = rng.randrange(3)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = bytes([rng.randrange(256)])
        elif buf:
            del buf[min(pos, len(buf) - 1)]
    return bytes(buf)


@FUZZ
@given(st.binary(max_size=512))
def test_decoder_raises_only_protocol_errors(data: bytes) -> None:
    """With and without compressed frames allowed (the server refuses them from clients)."""
    for allow in (True, False):
        dec = FrameDecoder(1 << 16, allow_compressed=allow)
        dec.feed(data)
        try:
            while (p := dec.next_payload()) is not None:
                decode_payload(p)
        except ProtocolError:
            pass


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(1, 20))
def test_mutated_hellos_are_accepted_or_refused_cleanly(seed: int, n: int) -> None:
    data = mutate(valid_hello, random.Random(seed), n)
    server = ServerProtocol()
    server.receive_data(data)
    try:
        while (ev := server.next_event()) is not None:
            assert isinstance(ev, ClientHello)
            server.accept(ev, server_version="f", epoch=1, conn_id=1, resumed=False)
            assert server.state is State.STREAMING
    except ProtocolError:
        assert server.state is State.CLOSED


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_client_side_garbage_after_handshake(chunks: list[bytes]) -> None:
    client = ClientProtocol()
    client.start(node="n", syncer="felix")
    server = ServerProtocol()
    server.receive_data(client.hello and frame(encode_payload(client.hello)))
    hello = server.next_event()
    assert hello is not None
    client.receive_data(server.accept(hello, server_version="f", epoch=1, conn_id=1, resumed=False))
    assert client.next_event() is not None
    try:
        for chunk in chunks:
            client.receive_data(chunk)
            while client.next_event() is not None:
                pass
    except ProtocolError:
        assert client.state is State.CLOSED


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_client_session_garbage_after_handshake(chunks: list[bytes], header_only: bool) -> None:
    """Both session modes: garbage after a valid ServerHello raises only ProtocolError."""
    session = session_after_hello(header_only)
    try:
        for chunk in chunks:
            session.receive_data(chunk)
            while session.next_event() is not None:
                pass
    except ProtocolError:
        assert session.next_event() is None


async def test_fuzzed_handshakes_against_a_running_server_never_hurt_a_neighbour() -> None:
    """Random and mutated handshakes over real TCP: each closes only its own connection."""
    ds = MemoryDatastore(dict(wep(i) for i in range(20)))
    cfg = make_config(ServerHandshakeTimeoutSecs=0.5)
    rng = random.Random(1234)
    cases = max(50, BUDGET // 30)
    async with run_typha(ds, cfg) as typha, trio.open_nursery() as nursery:
        neighbour = SyncClient([typha.address], "neighbour")
        nursery.start_soon(neighbour.run)
        await neighbour.in_sync.wait()

        async def one(i: int) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", typha.port)
            try:
                if i % 3 == 0:
                    data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
                else:
                    data = mutate(valid_hello, rng, rng.randrange(1, 12))
                try:
                    await stream.send_all(data)
                    with trio.move_on_after(2):
                        while await stream.receive_some(65536):
                            pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            finally:
                await stream.aclose()

        for start in range(0, cases, 25):
            async with trio.open_nursery() as batch:
                for i in range(start, min(cases, start + 25)):
                    batch.start_soon(one, i)
            ds.set(*wep(999, rev=start))
            await wait_until(lambda: neighbour.state == ds.data, 10)
        assert neighbour.stats.connects == 1
        await wait_until(lambda: len(typha.server.connections) == 1, 5)
        nursery.cancel_scope.cancel()
