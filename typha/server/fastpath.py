"""The fast path's two interfaces: what a codec supplies, and what a connection offers.

**FastPathCodec.** Each wire encoding a client can be served in (msgpack, msgpack with zstd;
Calico's gob and gob with snappy, ``gob_codec.py``) supplies its own *shared* bytes: each
breadcrumb encoded once per codec, lazily on first use, cached on the breadcrumb and written
to every client of that codec; and each snapshot encoded once per codec. The fan-out joins a
run of breadcrumbs once per codec and writes that one buffer to every idle, caught-up client
of that codec; a connection's own writer follows the same shared breadcrumb bytes when it is
behind. A new codec adds one object with a
distinct ``key``; nothing in the fan-out or the views changes.

**FastPathClient.** What the fan-out may read and call on a connection: its codec, its next
breadcrumb, the ownership token of its socket, the two non-blocking writes, and ``wake``.
"""

from __future__ import annotations

from typing import Protocol

from typha.cache.snapshot import Snapshot
from typha.cache.view import Breadcrumb

from .ownership import WriteToken


class FastPathCodec(Protocol):
    """One wire encoding's shared bytes (see the module docstring)."""

    #: A short unique name, also the key of this codec's buffers in the caches.
    key: str

    def crumb_bytes(self, crumb: Breadcrumb) -> bytes:
        """The frames of one breadcrumb in this encoding: built once, then the same object."""
        ...

    async def snapshot_bytes(self, snap: Snapshot) -> bytes:
        """The whole snapshot in this encoding (chunks, end marker, status): built once per
        snapshot and codec (off the event loop if it is costly), then the same object."""
        ...


class FastPathClient(Protocol):
    """What the fan-out sees of a connection."""

    codec: FastPathCodec
    next_seq: int  # the next breadcrumb this client needs
    write_token: WriteToken

    def try_fast_write(self, first_seq: int, last_seq: int, data: bytes) -> int: ...

    def try_fast_catch_up(self, last_seq: int, parts: list[bytes]) -> int: ...

    def wake(self) -> None: ...


class MsgpackCodec:
    """Our own protocol's frames (docs/protocol.md): the view encodes each breadcrumb's plain
    frames when it mints it; the zstd variant compresses them once, on first use. A snapshot's
    frames are built on its first msgpack joiner's request, once per variant."""

    def __init__(self, zstd: bool) -> None:
        self.zstd = zstd
        self.key = "msgpack+zstd" if zstd else "msgpack"

    def crumb_bytes(self, crumb: Breadcrumb) -> bytes:
        return crumb.frames_for(self.zstd)

    async def snapshot_bytes(self, snap: Snapshot) -> bytes:
        return await snap.msgpack(self.zstd)

    def __repr__(self) -> str:
        return f"<codec {self.key}>"


MSGPACK = MsgpackCodec(zstd=False)
MSGPACK_ZSTD = MsgpackCodec(zstd=True)
