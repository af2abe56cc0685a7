"""Keys Calico Typha serves that no datastore stores: the `projectcalico-default-allow` profile.

libcalico-go's felix syncer adds this allow-all profile itself (at revision 1, before any listed
key).  The app adds it for etcd and Kubernetes, not for the in-memory demo datastore.
`WithSyntheticKeys` wraps the sink a datastore writes to and adds the keys after every full
(unscoped) resync start, so a resync that deletes unseen keys never deletes them.
"""

from __future__ import annotations

from typha.sync.base import DatastoreEvent, EventSink, ResyncStarted, Update, Updates
from typha.sync.convert.policy import default_allow_profile_updates


def synthetic_updates() -> list[Update]:
    return default_allow_profile_updates()


class WithSyntheticKeys:
    """An :class:`EventSink` that forwards everything and adds the synthetic keys to each full
    resync."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    async def send(self, event: DatastoreEvent) -> None:
        await self.sink.send(event)
        if isinstance(event, ResyncStarted) and event.scope is None:
            await self.sink.send(Updates(synthetic_updates(), None))
