"""Caps on what a client's hello may carry, the same for our msgpack hello and Calico's gob one.

The node name and the other hello strings go into every log line of the connection and onto
the status endpoint, so an unbounded one (a 1 MiB "node name") would flood both. A hello over
a cap is refused with a reason naming the field and its size (docs/protocol.md, "Limits"),
rather than truncated: real clients send far less (a Kubernetes node name is at most 253
bytes), so only a broken or hostile client meets the limit, and it should be told why.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ProtocolError

# Bytes (UTF-8) in any one hello string: node name / hostname, syncer type, version, info,
# and each compression or feature name.
HELLO_MAX_STRING = 1024
# Entries in a hello's list of compressions or of features.
HELLO_MAX_LIST = 32


def _utf8_len(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))


def check_hello_strings(
    strings: Iterable[tuple[str, str]],
    lists: Iterable[tuple[str, tuple[str, ...]]] = (),
    *,
    error: type[ProtocolError] = ProtocolError,
) -> None:
    """Raise ``error`` for the first hello string or list over its cap; names the field."""
    for name, value in strings:
        size = _utf8_len(value)
        if size > HELLO_MAX_STRING:
            raise error(f"hello field {name} is {size} bytes, over the limit of {HELLO_MAX_STRING}")
    for name, values in lists:
        if len(values) > HELLO_MAX_LIST:
            raise error(
                f"hello field {name} has {len(values)} entries, over the limit of {HELLO_MAX_LIST}"
            )
        for value in values:
            size = _utf8_len(value)
            if size > HELLO_MAX_STRING:
                raise error(
                    f"an entry of hello field {name} is {size} bytes, over the limit of "
                    f"{HELLO_MAX_STRING}"
                )
