"""Compare snappy libraries for the gob protocol's framed snappy stream (docs/dependencies.md).

    python scripts/bench_snappy.py

Measures framed-format compression of what the gob codec compresses: a 1,000-KV snapshot chunk
(~270 KB of keys and JSON values) and a single-KV delta (~260 bytes). Prints JSON figures.
The candidates that are not project dependencies must be installed by hand first:
``pip install python-snappy crc32c``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable


def _endpoint(i: int, rng: random.Random) -> bytes:
    value = {
        "state": "active",
        "name": f"cali{rng.getrandbits(40):010x}",
        "mac": ":".join(f"{rng.randrange(256):02x}" for _ in range(6)),
        "profile_ids": [f"kns.ns-{i % 50}", f"ksa.ns-{i % 50}.default"],
        "ipv4_nets": [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32"],
        "labels": {"app": f"app-{i % 97}", "projectcalico.org/namespace": f"ns-{i % 50}"},
    }
    key = f"/calico/v1/host/node-{i % 100}/workload/k8s/ns-{i % 50}.pod-{i}/endpoint/eth0"
    return key.encode() + json.dumps(value, separators=(",", ":")).encode()


def _time(fn: Callable[[bytes], bytes], data: bytes, min_seconds: float = 0.5) -> float:
    n = 0
    start = time.perf_counter()
    while True:
        fn(data)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n


def main() -> None:
    import cramjam
    import crc32c
    import google_crc32c
    import snappy  # python-snappy

    rng = random.Random(1)
    chunk = b"".join(_endpoint(i, rng) for i in range(1000))
    delta = _endpoint(5, rng)

    def python_snappy(data: bytes) -> bytes:
        return snappy.StreamCompressor().add_chunk(data)

    def cramjam_framed(data: bytes) -> bytes:
        return bytes(cramjam.snappy.compress(data))

    def framed_by_hand(crc: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
        # What typha/protocol/gob/snappy.py does: raw blocks of <= 64 KiB, framing done here.
        def run(data: bytes) -> bytes:
            out = bytearray()
            for i in range(0, len(data), 65536):
                block = data[i : i + 65536]
                packed = bytes(cramjam.snappy.compress_raw(block))
                c = crc(block)
                masked = (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
                out += (len(packed) + 4).to_bytes(3, "little").rjust(4, b"\0")
                out += masked.to_bytes(4, "little")
                out += packed
            return bytes(out)

        return run

    libs = {
        "cramjam compress_raw + crc32c (ICRAR), framed by hand": framed_by_hand(crc32c.crc32c),
        "cramjam compress_raw + google-crc32c, framed by hand": framed_by_hand(google_crc32c.value),
        f"cramjam {cramjam.__version__} snappy.compress (framed)": cramjam_framed,
        "python-snappy StreamCompressor.add_chunk (framed)": python_snappy,
    }
    out = {}
    for name, fn in libs.items():
        out[name] = {
            "snapshot_chunk_bytes": len(chunk),
            "snapshot_chunk_ratio": round(len(chunk) / len(fn(chunk)), 2),
            "snapshot_chunk_MBps": round(len(chunk) / _time(fn, chunk) / 1e6, 1),
            "delta_bytes": len(delta),
            "delta_us": round(_time(fn, delta) * 1e6, 2),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
