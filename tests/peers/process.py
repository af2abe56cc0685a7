"""Shared lifecycle for the third-party peers (etcd, kube-apiserver, toxiproxy, prometheus).

Each peer is a plain subprocess with its output in a log file inside its own temp dir, so a failing
test can show the peer's last lines.  The lifecycle is deliberately synchronous: fixtures run
outside the trio loop, and fault tests want blunt, immediate `kill()`/`restart()`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx


class PeerError(RuntimeError):
    """A peer failed to start or answer; the message carries the tail of its log."""


# Every peer that has a temp dir or a process, so that an interrupted run (exception past the
# fixtures, SIGTERM from `timeout`/CI, interpreter exit) does not leave orphans behind.  Peers run
# in their own session (so a Ctrl-C aimed at pytest does not kill them mid-teardown), which also
# means nothing else would reap them.
_live: set[PeerProcess] = set()
_live_lock = threading.Lock()


def kill_all_peers() -> None:
    """SIGKILL every live peer and remove its temp dir.  Last-resort cleanup, idempotent."""
    with _live_lock:
        peers = list(_live)
    for peer in peers:
        with contextlib.suppress(Exception):
            peer.kill()
        with contextlib.suppress(Exception):
            peer.close()


atexit.register(kill_all_peers)


def install_sigterm_cleanup() -> None:
    """On SIGTERM, kill the peers first, then die of SIGTERM as before.

    Only installed if nobody else handles SIGTERM (called from the pytest plugin).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        # A forked child (pyroute2's NetNS helper, stopped with SIGTERM) inherits this handler
        # and the peer objects: it must not stop the parent's peers or remove their temp dirs.
        if os.getpid() == owner:
            kill_all_peers()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


def peers_dir() -> Path:
    """Where scripts/build-peers.sh puts binaries (TYPHA_PEERS_DIR, default /opt/typha-peers)."""
    return Path(os.environ.get("TYPHA_PEERS_DIR", "/opt/typha-peers"))


def find_binary(env_var: str | None, built_name: str | None, path_name: str | None) -> str | None:
    """Resolve a peer binary: explicit env var, then the build-peers cache, then PATH."""
    if env_var and (explicit := os.environ.get(env_var)):
        return explicit
    if built_name:
        built = peers_dir() / "bin" / built_name
        if built.is_file() and os.access(built, os.X_OK):
            return str(built)
    if path_name:
        return shutil.which(path_name)
    return None


def loopback_client(**kwargs: object) -> httpx.Client:
    """An httpx client that ignores proxy env vars: every peer lives on loopback."""
    kwargs.setdefault("timeout", 10.0)
    return httpx.Client(trust_env=False, **kwargs)  # type: ignore[arg-type]


class PeerProcess:
    """Start/stop/kill/restart a peer subprocess with a private temp dir and a log file.

    Subclasses implement `_command()` and `_is_healthy()`.  The temp dir (and so any data dir in
    it) survives `stop()`/`kill()` so that `restart()` brings the same peer back on the same ports
    with its data; `close()` (or leaving the context manager) removes it.
    """

    name = "peer"
    startup_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, *, startup_timeout: float | None = None, tmp_root: str | None = None):
        if startup_timeout is not None:
            self.startup_timeout = startup_timeout
        self._tmp_root = tmp_root
        self._tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.startup_seconds: float | None = None
        """Wall time of the last start() until healthy, for start-up measurements."""

    # -- subclass hooks -------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create files/ports on the first start (called once per temp dir)."""

    def _command(self) -> Sequence[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _is_healthy(self) -> bool:
        raise NotImplementedError

    def _on_stopped(self) -> None:
        """Release clients etc. after the process is gone."""

    # -- paths ----------------------------------------------------------------------------------

    @property
    def tmpdir(self) -> Path:
        """The peer's private temp dir, created on first use."""
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix=f"typha-{self.name}-", dir=self._tmp_root))
            with _live_lock:
                _live.add(self)
        return self._tmpdir

    @property
    def log_path(self) -> Path:
        return self.tmpdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the peer's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and block until it is healthy (or raise PeerError)."""
        if self.running:
            return self
        if self._proc is not None:  # died on its own: collect it and close its log first
            self._reap()
        first = not self.tmpdir.joinpath(".prepared").exists()
        if first:
            self._prepare()
            self.tmpdir.joinpath(".prepared").touch()
        cmd = list(self._command())
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._log.write(f"\n=== start: {' '.join(cmd)}\n".encode())
        self._log.flush()
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.tmpdir,
            env=self._env(),
            start_new_session=True,  # a Ctrl-C on pytest must not hit the peer first
        )
        try:
            self._wait_healthy(t0 + self.startup_timeout)
        except BaseException:
            self._terminate(grace=2.0)
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_healthy(self, deadline: float) -> None:
        delay = 0.02
        while True:
            assert self._proc is not None
            rc = self._proc.poll()
            if rc is not None:
                raise PeerError(
                    f"{self.name} exited with code {rc} during start-up; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            healthy = False
            with contextlib.suppress(httpx.HTTPError, OSError):
                healthy = self._is_healthy()
            if healthy:
                return
            if time.monotonic() > deadline:
                raise PeerError(
                    f"{self.name} not healthy after {self.startup_timeout:.0f}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Poll `predicate` until true; raise PeerError with the log tail on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise PeerError(f"{self.name}: timed out waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: SIGTERM, then SIGKILL after `timeout` seconds.  Keeps the temp dir."""
        self._terminate(grace=self.stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """Abrupt crash for fault tests: SIGKILL, no chance to flush.  Keeps the temp dir."""
        self._terminate(grace=0.0)

    def restart(self, *, hard: bool = False) -> Self:
        """Stop (or kill when `hard`) and start again on the same ports with the same data."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the process and remove its temp dir."""
        try:
            self.stop()
        finally:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None
            with _live_lock:
                _live.discard(self)

    def _terminate(self, grace: float) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                if grace > 0:
                    self._signal(proc, signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=grace)
                if proc.poll() is None:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait(timeout=10)
        finally:
            self._reap()

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # Signal the process group (start_new_session) so helper children die too.
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.send_signal(sig)

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._on_stopped()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} tmpdir={self._tmpdir}>"
