"""An in-memory datastore for tests and the demo (selected with TYPHA_DATASTOREINMEMORY=true
or by constructing it directly; it is not a DatastoreType).

Model keys and values are set directly. It keeps a global revision like etcd, so resumes by
revision work the same way, and several Typhas (replicas) may watch the same instance.
"""

from __future__ import annotations

from typing import Any

import trio

from .base import ConnectionStatus, EventSink, ResyncFinished, ResyncStarted, Update, Updates

_Item = tuple[int, list[Update]] | str


class MemoryDatastore:
    name = "memory"

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(initial or {})
        self.revision = 1
        self._watchers: list[trio.MemorySendChannel[_Item]] = []

    # --- Writers (sync, usable from any task in the same trio run) -------------------------------

    def set(self, key: str, value: Any) -> int:
        return self.apply([Update(key, value)])

    def delete(self, key: str) -> int:
        return self.apply([Update(key, None)])

    def apply(self, updates: list[Update]) -> int:
        """Apply a batch atomically (one revision) and queue it for every watcher."""
        for u in updates:
            if u.value is None:
                self.data.pop(u.key, None)
            else:
                self.data[u.key] = u.value
        self.revision += 1
        self._broadcast((self.revision, list(updates)))
        return self.revision

    def force_resync(self) -> None:
        """Make the watchers relist, as a compacted etcd watch or a 410 would."""
        self._broadcast("resync")

    def _broadcast(self, item: _Item) -> None:
        for ch in list(self._watchers):
            try:
                ch.send_nowait(item)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._watchers.remove(ch)

    # --- Datastore ---------------------------------------------------------------------------

    async def run(self, sink: EventSink, *, start_revision: int | None = None) -> None:
        send, recv = trio.open_memory_channel[_Item](1_000_000)
        self._watchers.append(send)
        try:
            await sink.send(ConnectionStatus(True))
            if start_revision is not None and start_revision == self.revision:
                # Warm restart with nothing missed: caught up at once, no list.
                await sink.send(ResyncFinished(self.revision))
            else:
                # No saved revision, or one this datastore cannot replay from: list everything.
                reason = "initial" if start_revision is None else "revision gone"
                await self._list(sink, recv, reason)
            async for item in recv:
                if item == "resync":
                    await self._list(sink, recv, "forced")
                    continue
                assert isinstance(item, tuple)
                revision, updates = item
                await sink.send(Updates(updates, revision))
        finally:
            if send in self._watchers:
                self._watchers.remove(send)
            await send.aclose()
            await recv.aclose()

    async def _list(
        self, sink: EventSink, recv: trio.MemoryReceiveChannel[_Item], reason: str
    ) -> None:
        # Anything queued before the list is part of it.
        while True:
            try:
                recv.receive_nowait()
            except trio.WouldBlock:
                break
        revision = self.revision
        items = [Update(k, v) for k, v in self.data.items()]
        await sink.send(ResyncStarted(reason))
        for i in range(0, len(items), 1000):
            await sink.send(Updates(items[i : i + 1000], revision))
        await sink.send(ResyncFinished(revision))
