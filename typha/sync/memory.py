"""An in-memory datastore for tests and the demo (selected with TYPHA_DATASTOREINMEMORY=true
or by constructing it directly; it is not a DatastoreType).

Model keys and values are set directly. It keeps a global revision like etcd, so resumes by
revision work the same way.
"""

from __future__ import annotations

from typing import Any

import trio

from .base import ConnectionStatus, EventSink, ResyncFinished, ResyncStarted, Update, Updates


class MemoryDatastore:
    name = "memory"

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(initial or {})
        self.revision = 1
        self._send, self._recv = trio.open_memory_channel[tuple[int, list[Update]] | str](100_000)

    # --- Writers (sync, usable from any task in the same trio run) -------------------------------

    def set(self, key: str, value: Any) -> int:
        return self.apply([Update(key, value)])

    def delete(self, key: str) -> int:
        return self.apply([Update(key, None)])

    def apply(self, updates: list[Update]) -> int:
        """Apply a batch atomically (one revision) and queue it for the watcher."""
        for u in updates:
            if u.value is None:
                self.data.pop(u.key, None)
            else:
                self.data[u.key] = u.value
        self.revision += 1
        self._send.send_nowait((self.revision, list(updates)))
        return self.revision

    def force_resync(self) -> None:
        """Make the watcher relist, as a compacted etcd watch or a 410 would."""
        self._send.send_nowait("resync")

    # --- Datastore ---------------------------------------------------------------------------

    async def run(self, sink: EventSink, *, start_revision: int | None = None) -> None:
        await sink.send(ConnectionStatus(True))
        if start_revision is not None and start_revision == self.revision:
            # Warm restart with nothing missed: caught up at once, no list.
            await sink.send(ResyncFinished(self.revision))
        else:
            # No saved revision, or one this datastore cannot replay from: list everything.
            await self._list(sink, "initial" if start_revision is None else "revision gone")
        async for item in self._recv:
            if item == "resync":
                await self._list(sink, "forced")
                continue
            assert isinstance(item, tuple)
            revision, updates = item
            await sink.send(Updates(updates, revision))

    async def _list(self, sink: EventSink, reason: str) -> None:
        await sink.send(ResyncStarted(reason))
        items = [Update(k, v) for k, v in self.data.items()]
        for i in range(0, len(items), 1000):
            await sink.send(Updates(items[i : i + 1000], self.revision))
        # Anything queued before this point is already part of the list.
        while True:
            try:
                pending = self._recv.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(pending, tuple):
                continue
        await sink.send(ResyncFinished(self.revision))
