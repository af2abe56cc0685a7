"""The keys no datastore stores (projectcalico-default-allow) are in every felix snapshot and
survive full resyncs, as Calico Typha's felix syncer serves them."""

from __future__ import annotations

import trio

from typha.cache.feed import CacheFeed
from typha.model.keys import SyncerType
from typha.sync.base import ResyncFinished, ResyncStarted, Update, Updates
from typha.sync.synthetic import WithSyntheticKeys

RULES = "/calico/v1/policy/profile/projectcalico-default-allow/rules"
PROFILE = "/calico/resources/v3/projectcalico.org/profiles/projectcalico-default-allow"
WEP = "/calico/v1/host/n1/workload/k8s/ns%2fp/endpoint/eth0"


def test_default_allow_profile_is_added_to_each_full_resync() -> None:
    async def main() -> None:
        feed = CacheFeed.create()
        sink = WithSyntheticKeys(feed)
        await sink.send(ResyncStarted("initial"))
        await sink.send(Updates([Update(WEP, {"state": "active"})], 5))
        await sink.send(ResyncFinished(5))
        felix = feed.views[SyncerType.FELIX].export_state()
        assert {RULES, PROFILE, WEP} <= set(felix)
        assert RULES not in feed.views[SyncerType.BGP].export_state()
        # A second full resync that lists nothing deletes the listed key, not the synthetic ones.
        await sink.send(ResyncStarted("compacted"))
        await sink.send(ResyncFinished(9))
        felix = feed.views[SyncerType.FELIX].export_state()
        assert WEP not in felix
        assert {RULES, PROFILE} <= set(felix)
        # Positive control for the wrapper: the bare feed on its own never has them.
        bare = CacheFeed.create()
        bare.apply(ResyncStarted("initial"))
        bare.apply(ResyncFinished(1))
        assert RULES not in bare.views[SyncerType.FELIX].export_state()

    trio.run(main)
