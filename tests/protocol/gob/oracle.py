"""The Go oracle (tests/go/gobcheck, on Calico's syncproto/syncclient) as a pytest fixture.

Located by $TYPHA_GOBCHECK or /opt/typha-peers/bin/gobcheck (built by scripts/build-peers.sh);
tests that need it skip, saying so, when it is absent.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.peers.plugin import require_binary

DEFAULT_PATH = Path("/opt/typha-peers/bin/gobcheck")


# Hypothesis settings for tests that round-trip through the oracle (a Go process per call).
ORACLE = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def gobcheck_path() -> Path | None:
    env = os.environ.get("TYPHA_GOBCHECK")
    path = Path(env) if env else DEFAULT_PATH
    return path if path.is_file() and os.access(path, os.X_OK) else None


class Oracle:
    """One long-lived `gobcheck serve` process: a JSON request per line, an answer per line."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [str(path), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"gobcheck exited ({self.proc.poll()})")
        return json.loads(line)

    def decode_server(self, segments: Sequence[bytes]) -> dict[str, Any]:
        """Go's view of a server->client stream: {"ok", "messages" | "error"}."""
        return self._ask(
            {
                "op": "decode_server",
                "segments": [base64.b64encode(s).decode() for s in segments],
            }
        )

    def decode_client(self, data: bytes) -> dict[str, Any]:
        """Go Typha's view of a client->server stream: the messages before any error."""
        return self._ask({"op": "decode_client", "segments": [base64.b64encode(data).decode()]})

    def encode_client(self, messages: Sequence[dict[str, Any]]) -> tuple[bytes, list[int]]:
        """Go's encoding of client messages with one encoder: (bytes, end of each message)."""
        answer = self._ask({"op": "encode_client", "messages": list(messages)})
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return base64.b64decode(answer["bytes"]), answer["ends"]

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def require_gobcheck() -> Path:
    """The oracle's path; skip without it on a developer machine, fail in CI (where
    scripts/build-peers.sh always builds it)."""
    path = gobcheck_path()
    if path is None:
        require_binary(
            lambda: None,
            "Go oracle gobcheck",
            f"scripts/build-peers.sh calico, or set TYPHA_GOBCHECK (expected {DEFAULT_PATH})",
        )
    assert path is not None
    return path


@pytest.fixture(scope="session")
def oracle() -> Iterator[Oracle]:
    o = Oracle(require_gobcheck())
    try:
        yield o
    finally:
        o.close()
