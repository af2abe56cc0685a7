"""Calico's own Typha client (its syncclient, through the tests/go/gobcheck helper in client
mode) as a subprocess a trio test can watch: every line it prints is kept, in order."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.protocol.gob.oracle import gobcheck_path


def require_gobcheck(*, restart: bool = False) -> Path:
    path = gobcheck_path()
    if path is None:
        pytest.skip(
            "Go oracle gobcheck not built: set TYPHA_GOBCHECK or run scripts/build-peers.sh"
        )
    if restart:
        usage = subprocess.run([str(path)], capture_output=True, text=True).stderr
        if "restart" not in usage:
            pytest.fail(f"{path} predates the client's restart mode: rebuild it", pytrace=False)
    return path


class GoClient:
    """``gobcheck client ADDR TYPE [plain] [restart]``: Calico's syncclient printing JSON lines
    ({"status": n}, {"updates": [...]}, {"restarted": true}, {"finished": true})."""

    def __init__(self, address: str, syncer: str, *, plain: bool = False, restart: bool = False):
        args = [str(require_gobcheck()), "client", address, syncer]
        args += (["plain"] if plain else []) + (["restart"] if restart else [])
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.events: list[dict[str, Any]] = []
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr[-20:])

    @property
    def updates(self) -> list[dict[str, Any]]:
        return [u for e in list(self.events) for u in e.get("updates", [])]

    @property
    def statuses(self) -> list[int]:
        return [e["status"] for e in list(self.events) if "status" in e]

    def state(self) -> dict[str, dict[str, Any]]:
        """The client's current key -> update (deletions removed)."""
        out: dict[str, dict[str, Any]] = {}
        for u in self.updates:
            if u["value"] is None:
                out.pop(u["key"], None)
            else:
                out[u["key"]] = u
        return out

    @property
    def in_sync(self) -> bool:
        statuses = self.statuses
        return bool(statuses) and statuses[-1] == 2

    async def wait_for(self, pred: Callable[[], bool], what: str, timeout: float = 30) -> None:
        with trio.move_on_after(timeout):
            while not pred():
                if self.proc.poll() is not None and not pred():
                    await trio.sleep(0.2)  # let the reader thread take the last lines
                    break
                await trio.sleep(0.05)
        assert pred(), f"Calico's client: {what} not seen; events {self.events[-5:]}\n{self.stderr}"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for t in self._threads:
            t.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
