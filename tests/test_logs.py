"""Logs as an operator configures them: severities per sink, JSON lines, file path, and every
connection's lines carrying its node name and connection id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import trio

from felix_client.sync_client import SyncClient

from .peers.ports import free_ports


async def test_json_file_log_with_connection_context(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    logfile = tmp_path / "typha.log"
    env = {
        **os.environ,
        "TYPHA_DATASTOREINMEMORY": "true",
        "TYPHA_SERVERPORT": str(port),
        "TYPHA_SERVERHOST": "127.0.0.1",
        "TYPHA_LOGFILEPATH": str(logfile),
        "TYPHA_LOGSEVERITYFILE": "Info",
        "TYPHA_LOGSEVERITYSCREEN": "Error",  # nothing at info on stdout
        "TYPHA_LOGSEVERITYSYS": "none",
        "TYPHA_LOGFORMAT": "json",
        "TYPHA_SHUTDOWNTIMEOUTSECS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "typha.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = SyncClient([f"127.0.0.1:{port}"], "node-logged")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            with trio.fail_after(20):
                await client.in_sync.wait()
            # The client's in-sync can arrive before the server's task logs the line that
            # follows its write: wait for the line before stopping the server (a SIGTERM
            # first cancels the connection at that checkpoint, and the line is never logged).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "snapshot sent" not in logfile.read_text():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        proc.terminate()
        out, _ = await trio.to_thread.run_sync(proc.communicate, None, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in logfile.read_text().splitlines() if line.strip()]
    sent = [e for e in lines if e.get("event") == "snapshot sent"]
    assert sent and sent[0]["node"] == "node-logged" and isinstance(sent[0]["conn_id"], int)
    assert all("level" in e and "timestamp" in e for e in lines)
    # Screen was set to Error: the info lines went to the file only.
    assert b"snapshot sent" not in out
