"""Running the dataplane's command-line tools, optionally inside a named network namespace.

With ``netns`` set, every command becomes ``ip netns exec <netns> <cmd> …``: the agent process
stays in the root namespace (where it reaches Typha) while ``ipset``/``iptables-restore`` act on
the node's namespace.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from felix_client.dataplane.base import DataplaneStats


@dataclass(frozen=True, slots=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        err = (self.stderr or self.stdout).strip().replace("\n", " | ")
        return f"{' '.join(self.argv)} exited {self.returncode}: {err[:2000]}"


class CommandRunner:
    """Runs commands in ``netns`` (or the current namespace) and accounts their cost."""

    def __init__(self, netns: str | None, stats: DataplaneStats, timeout: float = 60.0) -> None:
        self.netns = netns
        self.stats = stats
        self.timeout = timeout

    def argv(self, args: Sequence[str]) -> list[str]:
        if self.netns:
            return ["ip", "netns", "exec", self.netns, *args]
        return list(args)

    async def run(self, args: Sequence[str], stdin: str | None = None) -> Result:
        """Run to completion; never raises for a non-zero exit (callers decide what it means).

        A command that outlives ``timeout`` is killed and reported as exit code -9.
        """
        argv = self.argv(args)
        started = time.perf_counter()
        try:
            with trio.fail_after(self.timeout):
                proc = await trio.run_process(
                    argv,
                    stdin=stdin.encode() if stdin is not None else b"",
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            result = Result(
                tuple(args),
                proc.returncode,
                proc.stdout.decode(errors="replace"),
                proc.stderr.decode(errors="replace"),
            )
        except trio.TooSlowError:
            result = Result(tuple(args), -9, "", f"timed out after {self.timeout:g}s")
        except OSError as exc:  # binary missing, namespace gone…
            result = Result(tuple(args), 127, "", str(exc))
        finally:
            self.stats.exec_calls += 1
            self.stats.exec_seconds += time.perf_counter() - started
        return result


def count_lines(text: str) -> int:
    return text.count("\n")
