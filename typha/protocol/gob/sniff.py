"""Which protocol a connection speaks, from its first byte (after TLS, if any).

* Our frames start with a 4-byte big-endian length; a client frame is at most 1 MiB, so its
  first byte is always 0x00 (any frame under 16 MiB starts with 0x00).
* A gob stream starts with a message's byte count, a gob uint, and a message is never empty:
  a count below 128 is one byte 0x01-0x7F; a larger count starts with its negated byte
  count, 0xFF-0xF8 — and 0xFD-0xFF for anything up to the 1 MiB cap. Never 0x00.

So 0x00 means msgpack, 0x01-0x7F or 0xFD-0xFF means gob, and any other first byte is
neither (a gob message of 16 MiB or more would exceed the inbound cap anyway).
"""

from __future__ import annotations

from typing import Literal

Protocol = Literal["msgpack", "gob"]


def sniff(first_bytes: bytes) -> Protocol | None:
    """The protocol ``first_bytes`` begin; None if empty or if the first byte fits neither."""
    if not first_bytes:
        return None
    b = first_bytes[0]
    if b == 0:
        return "msgpack"
    if b < 0x80 or b >= 0xFD:
        return "gob"
    return None
