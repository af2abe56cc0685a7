"""The incremental calculation driver: model updates in, dataplane state and deltas out.

Usage::

    engine = CalcEngine("node-1")
    engine.apply_updates(snapshot_kvs)      # [(key, value or None)], any order
    engine.snapshot_done()
    delta = engine.flush()                  # first flush: everything
    files = render_files(engine.state())    # dry-run files
    engine.apply_updates(more_kvs)
    delta = engine.flush()                  # only what those updates changed

``apply_updates`` only records updates (the latest value per key wins, like Felix's dedupe
buffer). ``flush`` processes them in dependency order — config, tiers, profiles, policies, pools,
nodes, blocks, network sets and endpoints — so a snapshot is indexed once, without the churn that
key order would cause (e.g. profile labels arriving after every endpoint).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import Any

import structlog

from felix_client.calc.active import ActiveRulesCalculator
from felix_client.calc.chaintable import ChainTable
from felix_client.calc.ipsets import IPSetMemberIndex
from felix_client.calc.ipsetspec import (
    ALL_HOSTS_ID,
    ALL_VXLAN_ID,
    MASQ_POOLS_ID,
    NETWORK_POOLS_ID,
    TYPE_NET,
    IPSetSpec,
    ipset_name,
)
from felix_client.calc.model.cluster import ClusterModel
from felix_client.calc.model.keys import Kind
from felix_client.calc.model.objects import EncapMode, PolicyId, WorkloadEndpoint
from felix_client.calc.model.updates import ParsedUpdate, parse_error, parse_update
from felix_client.calc.policy import EGRESS, INGRESS, resolve_tiers
from felix_client.calc.render.chains import (
    ChainOptions,
    dispatch_chains,
    endpoint_chain_rules,
    nat_chains,
    static_filter_chains,
)
from felix_client.calc.render.names import endpoint_chain, policy_chain, profile_chain
from felix_client.calc.render.rules import DEFAULT_LOG_PREFIX, render_rules
from felix_client.calc.render.text import (
    ipset_restore_full,
    iptables_restore,
    neighbours_text,
    routes_text,
)
from felix_client.calc.routes import FALLBACK_HOST_MTU, VXLAN_OVERHEAD, RouteResolver
from felix_client.calc.rules import DataplaneRule, rules_ipsets, scan_rules
from felix_client.calc.state import DataplaneDelta, DataplaneState, IPSet

# Processing order within a flush: dependencies before dependants.
_KIND_ORDER = {
    Kind.GLOBAL_CONFIG: 0,
    Kind.HOST_CONFIG: 0,
    Kind.READY: 0,
    Kind.TIER: 1,
    Kind.PROFILE_LABELS: 2,
    Kind.PROFILE_RULES: 3,
    Kind.POLICY: 4,
    Kind.IP_POOL: 5,
    Kind.NODE: 6,
    Kind.HOST_IP: 6,
    Kind.BLOCK: 7,
    Kind.NETWORK_SET: 8,
    Kind.HOST_ENDPOINT: 9,
    Kind.WORKLOAD_ENDPOINT: 10,
}

log = structlog.get_logger(__name__)

_NOT_PARSED = (Kind.READY, Kind.IGNORED)

_N_BUCKETS = max(_KIND_ORDER.values()) + 2  # the last bucket holds remote workloads
_TUNNEL_CONFIG = frozenset({"IPv4VXLANTunnelAddr", "VXLANTunnelMACAddr", "IpInIpTunnelAddr"})
_Owner = tuple[str, Any]  # ("pol", PolicyId) or ("prof", name)


def _brief(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:300]
    except Exception:
        return type(exc).__name__


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


class CalcEngine:
    """Incremental Felix-style calculation for one node. Not thread-safe; no I/O.

    Public surface: ``apply_updates``, ``snapshot_done``, ``in_sync``, ``flush``, ``state`` and
    ``model`` (read-only use). See the module docstring.
    """

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.model = ClusterModel()
        self.invalid_values = 0  # values that did not parse (treated as deletions)
        self.calc_failures = 0  # keys/policies whose calculation raised (contained)
        self._pending: dict[str, Any] = {}
        self._in_sync = False
        self._arc = ActiveRulesCalculator(
            self._on_policy, self._on_profile, self._on_endpoint_dirty
        )
        self._members = IPSetMemberIndex()
        self._routes = RouteResolver(node_name, self.model)
        # Rule scanning: parsed rules of active policies/profiles and the sets they hold.
        self._scanned: dict[
            _Owner, tuple[tuple[DataplaneRule, ...], tuple[DataplaneRule, ...]]
        ] = {}
        self._owner_sets: dict[_Owner, dict[str, IPSetSpec]] = {}
        self._set_refs: dict[str, int] = {}
        # Local endpoints and their chains.
        self._local: dict[str, WorkloadEndpoint] = {}
        self._iface_endpoints: dict[str, set[str]] = {}
        self._dirty_endpoints: set[str] = set()
        self._endpoint_chains: dict[str, tuple[str, str]] = {}
        self._endpoint_refs: dict[str, frozenset[str]] = {}
        self._chain_refs: dict[str, int] = {}
        self._chain_owner: dict[str, tuple[_Owner, bool]] = {}
        self._dirty_owners: set[_Owner] = set()
        self._newly_referenced: set[str] = set()
        # Rendered tables.
        self._filter = ChainTable()
        self._nat = ChainTable()
        # Fixed ipsets (pools, hosts).
        self._fixed: dict[str, IPSet] = {}
        self._fixed_flushed: dict[str, IPSet] = {}
        self._ipset_cache: dict[str, IPSet] = {}
        self._options = ChainOptions()
        self._log_prefix = DEFAULT_LOG_PREFIX
        self._static_dirty = True
        self._dispatch_dirty = True
        self._fixed_dirty = True
        self._host_mtu = FALLBACK_HOST_MTU

    # --- public API ------------------------------------------------------------------------------

    def apply_updates(self, updates: Iterable[tuple[str, Any]]) -> None:
        """Record model updates (``value`` ``None`` = delete). Processed at the next ``flush``."""
        pending = self._pending
        for key, value in updates:
            pending[key] = value

    def set_host_mtu(self, mtu: int) -> None:
        """The host MTU the backend detected (Felix: the smallest MTU of the up interfaces
        matching its MTU interface pattern); the VXLAN MTU defaults to it minus 50."""
        self._host_mtu = mtu

    @property
    def vxlan_mtu(self) -> int:
        """The VXLAN MTU as of the last ``flush``: routes through vxlan.calico carry it, and the
        device gets it."""
        return self._routes.vxlan_mtu

    def snapshot_done(self) -> None:
        """The initial snapshot is complete (Typha's InSync)."""
        self._in_sync = True

    @property
    def in_sync(self) -> bool:
        return self._in_sync

    def flush(self) -> DataplaneDelta:
        """Process recorded updates; return the dataplane changes since the previous flush."""
        # A snapshot allocates hundreds of thousands of small acyclic objects; letting the cyclic
        # GC run during that work repeatedly traverses them all (measured: ~35% of a snapshot).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._flush()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _flush(self) -> DataplaneDelta:
        self._process_pending()
        self._update_options()
        self._render_endpoints()
        self._render_owned_chains()
        if self._dispatch_dirty:
            self._dispatch_dirty = False
            for name, rules in dispatch_chains(
                ep.iface for ep in self._local.values() if ep.iface
            ).items():
                self._filter.set(name, rules)
        if self._static_dirty:
            self._static_dirty = False
            for name, rules in static_filter_chains(self._options).items():
                self._filter.set(name, rules)
            for name, rules in nat_chains(self._options).items():
                self._nat.set(name, rules)
        return self._collect_delta()

    def state(self) -> DataplaneState:
        """The full desired dataplane as of the last ``flush``."""
        ipsets = dict(self._fixed)
        cache = self._ipset_cache
        for spec in self._members.specs():
            # Sets can hold tens of thousands of members: reuse the frozen copy until the set
            # changes (the agent asks for the state after every flush).
            ipset = cache.get(spec.name)
            if ipset is None:
                ipset = cache[spec.name] = IPSet(
                    spec.name, spec.ipset_type, self._members.members(spec.set_id)
                )
            ipsets[spec.name] = ipset
        return DataplaneState(
            ipsets=ipsets,
            filter_chains=self._filter.snapshot(),
            nat_chains=self._nat.snapshot(),
            routes=self._routes.routes(),
            neighbours=self._routes.neighbours(),
            fdb=self._routes.fdb(),
        )

    # --- update processing -----------------------------------------------------------------------

    def _process_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        # Bucket by processing order (cheaper than a sort). Local endpoints come before remote
        # ones: they decide which selectors become ipsets, so the bulk of remote endpoints is then
        # matched against a stable set of selectors.
        buckets: list[list[ParsedUpdate]] = [[] for _ in range(_N_BUCKETS)]
        me = self.node_name
        for key, value in pending.items():
            try:
                update = parse_update(key, value)
            except Exception as exc:  # a key path no parser expected: ignore that key alone
                self._failed(key, "unparseable key", exc)
                continue
            if update.value is None and value is not None and update.kind not in _NOT_PARSED:
                self.invalid_values += 1
                log.warning(
                    "invalid value; treating as deleted", key=key, reason=parse_error(key, value)
                )
            kind = update.kind
            if kind is Kind.IGNORED:
                continue
            if kind is Kind.WORKLOAD_ENDPOINT and update.host != me:
                buckets[_N_BUCKETS - 1].append(update)
            else:
                buckets[_KIND_ORDER[kind]].append(update)
        store = self.model.store
        handlers = self._HANDLERS
        for bucket in buckets:
            for update in bucket:
                old = None
                try:
                    old = store(update)
                    handlers[update.kind](self, update, old)
                except Exception as exc:
                    self._contain(update, old, exc)

    def _contain(self, update: ParsedUpdate, old: Any, exc: Exception) -> None:
        """The per-key guard: a key whose calculation failed is treated as deleted (as an
        invalid value is), so one key can never stop the node agent. The indexes are assumed
        to still describe the previous value (handlers fail before they change anything, as
        the checked parsing makes them), so the model goes back to it and then deletes it."""
        self._failed(f"{update.kind}:{update.id}", "calculation failed; treating as deleted", exc)
        try:
            self.model.store(ParsedUpdate(update.kind, update.id, update.host, old))
            if old is None:
                return
            gone = ParsedUpdate(update.kind, update.id, update.host, None)
            self._HANDLERS[update.kind](self, gone, self.model.store(gone))
        except Exception as again:
            self._failed(f"{update.kind}:{update.id}", "could not delete either", again)

    def _failed(self, what: str, event: str, exc: BaseException) -> None:
        self.calc_failures += 1
        log.error(event, key=what, error=_brief(exc), exc_info=exc)

    def _on_config(self, update: ParsedUpdate, old: Any) -> None:
        if update.kind is Kind.HOST_CONFIG:
            if update.id in _TUNNEL_CONFIG:
                self._routes.on_node(update.host)  # VTEP addresses live in host config
                self._fixed_dirty = True  # and all-vxlan-net holds the nodes with a VTEP
            if update.host != self.node_name:
                return
        self._static_dirty = True

    def _on_tier(self, update: ParsedUpdate, old: Any) -> None:
        self._dirty_endpoints.update(self._local)

    def _on_profile_labels(self, update: ParsedUpdate, old: Any) -> None:
        self._arc.update_profile_labels(update.id, update.value)
        self._members.update_parent_labels(update.id, update.value)

    def _on_profile_rules(self, update: ParsedUpdate, old: Any) -> None:
        owner = ("prof", update.id)
        if owner in self._scanned:
            self._scan_owner(owner)

    def _on_policy(self, pid: PolicyId, active: bool) -> None:
        owner = ("pol", pid)
        if active:
            self._scan_owner(owner)
        else:
            self._release_owner(owner)

    def _on_profile(self, name: str, active: bool) -> None:
        owner = ("prof", name)
        if active:
            self._scan_owner(owner)
        else:
            self._release_owner(owner)

    def _on_endpoint_dirty(self, eid: str) -> None:
        self._dirty_endpoints.add(eid)

    def _on_policy_update(self, update: ParsedUpdate, old: Any) -> None:
        self._arc.update_policy(update.id, update.value)

    def _on_pool(self, update: ParsedUpdate, old: Any) -> None:
        self._routes.on_pools()
        self._fixed_dirty = True
        self._static_dirty = True

    def _on_node(self, update: ParsedUpdate, old: Any) -> None:
        self._routes.on_node(update.id)
        self._fixed_dirty = True

    def _on_block(self, update: ParsedUpdate, old: Any) -> None:
        self._routes.on_block(update.id, old, update.value)

    def _on_network_set(self, update: ParsedUpdate, old: Any) -> None:
        item = ("netset", update.id)
        if update.value is None:
            self._members.remove_item(item)
        else:
            netset = update.value
            self._members.update_item(item, netset, netset.labels, netset.profile_ids)

    def _on_host_endpoint(self, update: ParsedUpdate, old: Any) -> None:
        item = ("hep", update.id)
        hep = update.value
        if hep is None:
            self._members.remove_item(item)
        else:
            self._members.update_item(item, hep, hep.labels, hep.profile_ids)

    def _on_wep(self, update: ParsedUpdate, old: WorkloadEndpoint | None) -> None:
        key = update.id
        new: WorkloadEndpoint | None = update.value
        if new is None:
            self._members.remove_item(key)
        else:
            self._members.update_item(key, new, new.labels, new.profile_ids)
        was_local = old is not None and old.host == self.node_name
        is_local = new is not None and new.host == self.node_name
        old_iface = old.iface if was_local and old is not None else None
        new_iface = new.iface if is_local and new is not None else None
        if is_local:
            assert new is not None
            self._local[key] = new
            self._arc.update_endpoint(key, new.labels, new.profile_ids)
        elif was_local:
            del self._local[key]
            self._arc.remove_endpoint(key)
        if old_iface != new_iface or was_local != is_local:
            self._dispatch_dirty = True
            for iface, delta in ((old_iface, -1), (new_iface, +1)):
                if not iface:
                    continue
                owners = self._iface_endpoints.setdefault(iface, set())
                if delta > 0:
                    owners.add(key)
                else:
                    owners.discard(key)
                # Whoever now owns the interface's chains must re-render them.
                self._dirty_endpoints.update(owners)
                if not owners:
                    del self._iface_endpoints[iface]
        self._routes.on_wep(key, old, new)

    def _on_ignored(self, update: ParsedUpdate, old: Any) -> None:
        return None

    _HANDLERS: dict[Kind, Any] = {
        Kind.GLOBAL_CONFIG: _on_config,
        Kind.HOST_CONFIG: _on_config,
        Kind.READY: _on_ignored,
        Kind.TIER: _on_tier,
        Kind.PROFILE_LABELS: _on_profile_labels,
        Kind.PROFILE_RULES: _on_profile_rules,
        Kind.POLICY: _on_policy_update,
        Kind.IP_POOL: _on_pool,
        Kind.NODE: _on_node,
        Kind.HOST_IP: _on_node,
        Kind.BLOCK: _on_block,
        Kind.NETWORK_SET: _on_network_set,
        Kind.HOST_ENDPOINT: _on_host_endpoint,
        Kind.WORKLOAD_ENDPOINT: _on_wep,
    }

    # --- rule scanning and ipset refcounts -------------------------------------------------------

    def _scan_owner(self, owner: _Owner) -> None:
        kind, ident = owner
        inbound: tuple[DataplaneRule, ...] = ()
        outbound: tuple[DataplaneRule, ...] = ()
        try:
            if kind == "pol":
                policy = self.model.policies.get(ident)
                if policy is not None:
                    # Only the directions the policy governs are ever referenced.
                    if policy.ingress:
                        inbound = scan_rules(policy.inbound_rules)
                    if policy.egress:
                        outbound = scan_rules(policy.outbound_rules)
            else:
                profile = self.model.profile_rules.get(ident)
                if profile is not None:
                    inbound = scan_rules(profile.inbound_rules)
                    outbound = scan_rules(profile.outbound_rules)
        except Exception as exc:
            # The per-policy guard: rules that cannot be computed are no rules. The policy
            # then allows nothing itself; traffic goes on to the next policy or the tier's
            # default drop, as for a policy whose every rule can never match.
            self._failed(f"{kind}:{ident}", "rules cannot be computed; using none", exc)
            inbound = outbound = ()
        if self._scanned.get(owner) == (inbound, outbound):
            return
        self._scanned[owner] = (inbound, outbound)
        new_sets = rules_ipsets(inbound + outbound)
        old_sets = self._owner_sets.get(owner, {})
        # Take new references before dropping old ones so shared sets are not recreated.
        for set_id, spec in new_sets.items():
            if set_id not in old_sets:
                self._ref_set(spec, +1)
        for set_id, spec in old_sets.items():
            if set_id not in new_sets:
                self._ref_set(spec, -1)
        self._owner_sets[owner] = new_sets
        self._dirty_owners.add(owner)

    def _release_owner(self, owner: _Owner) -> None:
        self._scanned.pop(owner, None)
        for spec in self._owner_sets.pop(owner, {}).values():
            self._ref_set(spec, -1)
        self._dirty_owners.add(owner)

    def _ref_set(self, spec: IPSetSpec, delta: int) -> None:
        count = self._set_refs.get(spec.set_id, 0) + delta
        if count > 0:
            self._set_refs[spec.set_id] = count
            if count == delta:
                self._members.add_set(spec)
        else:
            self._set_refs.pop(spec.set_id, None)
            self._members.remove_set(spec.set_id)

    # --- chains ----------------------------------------------------------------------------------

    def _update_options(self) -> None:
        model, me = self.model, self.node_name
        pools = [p for p in model.pools.values() if ":" not in p.cidr]
        options = ChainOptions(
            endpoint_to_host_action=model.config(me, "DefaultEndpointToHostAction", "DROP")
            or "DROP",
            allow_vxlan_from_workloads=_truthy(model.config(me, "AllowVXLANPacketsFromWorkloads")),
            allow_ipip_from_workloads=_truthy(model.config(me, "AllowIPIPPacketsFromWorkloads")),
            ipip_enabled=any(p.ipip_mode is not EncapMode.NEVER for p in pools),
            vxlan_enabled=any(p.vxlan_mode is not EncapMode.NEVER for p in pools),
            nat_outgoing=any(p.masquerade for p in pools),
            drop_invalid=not _truthy(model.config(me, "DisableConntrackInvalidCheck")),
        )
        log_prefix = model.config(me, "LogPrefix", DEFAULT_LOG_PREFIX) or DEFAULT_LOG_PREFIX
        configured_mtu = model.config(me, "VXLANMTU")
        vxlan_mtu = int(configured_mtu) if (configured_mtu or "").strip().isdigit() else 0
        self._routes.set_vxlan_mtu(vxlan_mtu or self._host_mtu - VXLAN_OVERHEAD)
        if options != self._options:
            if (
                options.allow_ipip_from_workloads,
                options.allow_vxlan_from_workloads,
                options.drop_invalid,
            ) != (
                self._options.allow_ipip_from_workloads,
                self._options.allow_vxlan_from_workloads,
                self._options.drop_invalid,
            ):
                self._dirty_endpoints.update(self._local)
            self._options = options
            self._static_dirty = True
        if log_prefix != self._log_prefix:
            self._log_prefix = log_prefix
            self._dirty_owners.update(self._scanned)
        if self._fixed_dirty:
            self._fixed_dirty = False
            self._update_fixed_sets()

    def _update_fixed_sets(self) -> None:
        """The pool sets always; the IPIP peers' set (every node's address) while a pool uses
        IPIP, and the VXLAN peers' set (the address of each remote node with a VTEP) while a
        pool uses VXLAN: the sets Felix's tunnel rules in cali-INPUT/cali-OUTPUT match on."""
        pools = [p for p in self.model.pools.values() if ":" not in p.cidr]
        wanted = {
            NETWORK_POOLS_ID: frozenset(p.cidr for p in pools),
            MASQ_POOLS_ID: frozenset(p.cidr for p in pools if p.masquerade),
        }
        if any(p.ipip_mode is not EncapMode.NEVER for p in pools):
            hosts = set()
            for name in set(self.model.nodes) | set(self.model.host_ips):
                node = self.model.nodes.get(name)
                ip = (
                    node.ipv4_address
                    if node is not None and node.ipv4_address
                    else self.model.host_ips.get(name)
                )
                if ip:
                    hosts.add(f"{ip}/32")
            wanted[ALL_HOSTS_ID] = frozenset(hosts)
        if any(p.vxlan_mode is not EncapMode.NEVER for p in pools):
            wanted[ALL_VXLAN_ID] = frozenset(f"{ip}/32" for ip in self._routes.vtep_peer_ips())
        self._fixed = {
            ipset_name(set_id): IPSet(ipset_name(set_id), TYPE_NET, members)
            for set_id, members in wanted.items()
        }

    def _render_endpoints(self) -> None:
        dirty, self._dirty_endpoints = self._dirty_endpoints, set()
        for eid in sorted(dirty):
            ep = self._local.get(eid)
            old_names = self._endpoint_chains.pop(eid, None)
            new_refs: frozenset[str] = frozenset()
            # Two local endpoints claiming one interface is a misconfiguration; the lowest key
            # owns the interface's chains so the outcome does not depend on update order.
            owns = ep is not None and bool(ep.iface) and eid == min(self._iface_endpoints[ep.iface])
            if ep is not None and owns:
                tiers = resolve_tiers(self._arc.policies_for(eid), self.model.tiers)
                tw, tw_refs = endpoint_chain_rules(ep, tiers, INGRESS, self._options)
                fw, fw_refs = endpoint_chain_rules(ep, tiers, EGRESS, self._options)
                for tier in tiers:
                    for pid in tier.ingress:
                        self._chain_owner[policy_chain(pid, True)] = (("pol", pid), True)
                    for pid in tier.egress:
                        self._chain_owner[policy_chain(pid, False)] = (("pol", pid), False)
                for profile in ep.profile_ids:
                    self._chain_owner[profile_chain(profile, True)] = (("prof", profile), True)
                    self._chain_owner[profile_chain(profile, False)] = (("prof", profile), False)
                names = (endpoint_chain(ep.iface, True), endpoint_chain(ep.iface, False))
                self._filter.set(names[0], tw)
                self._filter.set(names[1], fw)
                self._endpoint_chains[eid] = names
                new_refs = tw_refs | fw_refs
                if old_names is not None and old_names != names:
                    self._drop_endpoint_chains(old_names)
            elif old_names is not None:
                self._drop_endpoint_chains(old_names)
            old_refs = self._endpoint_refs.get(eid, frozenset())
            if new_refs:
                self._endpoint_refs[eid] = new_refs
            else:
                self._endpoint_refs.pop(eid, None)
            for chain in new_refs - old_refs:
                self._ref_chain(chain, +1)
            for chain in old_refs - new_refs:
                self._ref_chain(chain, -1)

    def _drop_endpoint_chains(self, names: tuple[str, str]) -> None:
        for name in names:
            users = self._iface_users(name)
            if any(name in self._endpoint_chains.get(other, ()) for other in users):
                continue  # another endpoint owns this interface now
            self._filter.set(name, None)

    def _iface_users(self, chain: str) -> set[str]:
        for prefix in ("cali-tw-", "cali-fw-"):
            if chain.startswith(prefix):
                return self._iface_endpoints.get(chain[len(prefix) :], set())
        return set()

    def _ref_chain(self, chain: str, delta: int) -> None:
        count = self._chain_refs.get(chain, 0) + delta
        if count > 0:
            self._chain_refs[chain] = count
            if count == delta:
                self._newly_referenced.add(chain)
        else:
            self._chain_refs.pop(chain, None)
            self._chain_owner.pop(chain, None)
            self._newly_referenced.discard(chain)
            self._filter.set(chain, None)

    def _owned_chain_names(self, owner: _Owner) -> tuple[str, str]:
        kind, ident = owner
        if kind == "pol":
            return policy_chain(ident, True), policy_chain(ident, False)
        return profile_chain(ident, True), profile_chain(ident, False)

    def _render_owned_chains(self) -> None:
        todo: dict[str, tuple[_Owner, bool]] = {}
        for owner in self._dirty_owners:
            inbound_name, outbound_name = self._owned_chain_names(owner)
            for name, inbound in ((inbound_name, True), (outbound_name, False)):
                if name in self._chain_refs:
                    todo[name] = (owner, inbound)
        self._dirty_owners = set()
        for name in self._newly_referenced:
            todo[name] = self._chain_owner[name]
        self._newly_referenced = set()
        for name, (owner, inbound) in todo.items():
            scanned = self._scanned.get(owner)
            rules = () if scanned is None else (scanned[0] if inbound else scanned[1])
            self._filter.set(name, render_rules(rules, self._log_prefix))

    # --- delta -----------------------------------------------------------------------------------

    def _collect_delta(self) -> DataplaneDelta:
        f_changed, f_removed = self._filter.take_changes()
        n_changed, n_removed = self._nat.take_changes()
        changes = self._members.take_changes()
        created = {
            spec.name: IPSet(spec.name, spec.ipset_type, self._members.members(sid))
            for sid, spec in changes.created.items()
        }
        added = {ipset_name(sid): m for sid, m in changes.members_added.items()}
        removed_members = {ipset_name(sid): m for sid, m in changes.members_removed.items()}
        removed_sets = {ipset_name(sid) for sid in changes.removed}
        for name in (*added, *removed_members, *removed_sets):
            self._ipset_cache.pop(name, None)
        self._ipset_cache.update(created)
        for name in self._fixed_flushed.keys() - self._fixed.keys():
            removed_sets.add(name)  # a tunnel set no longer referenced (e.g. IPIP turned off)
            self._ipset_cache.pop(name, None)
        for name, ipset in self._fixed.items():
            previous = self._fixed_flushed.get(name)
            if previous is None:
                created[name] = ipset
            elif previous.members != ipset.members:
                if ipset.members - previous.members:
                    added[name] = ipset.members - previous.members
                if previous.members - ipset.members:
                    removed_members[name] = previous.members - ipset.members
        self._fixed_flushed = dict(self._fixed)
        routes = self._routes.take_changes()
        return DataplaneDelta(
            ipsets_created=created,
            ipset_members_added=added,
            ipset_members_removed=removed_members,
            ipsets_removed=frozenset(removed_sets),
            filter_chains_changed=f_changed,
            filter_chains_removed=f_removed,
            nat_chains_changed=n_changed,
            nat_chains_removed=n_removed,
            routes_added=routes.added,
            routes_removed=routes.removed,
            neighbours_added=routes.neighbours_added,
            neighbours_removed=routes.neighbours_removed,
            fdb_added=routes.fdb_added,
            fdb_removed=routes.fdb_removed,
        )


def render_files(state: DataplaneState) -> dict[str, str]:
    """Dry-run files for ``state``: ``ipsets`` (ipset restore), ``iptables-filter`` and
    ``iptables-nat`` (iptables-restore --noflush), ``routes`` (one ``ip route`` line each) and
    ``neighbours`` (VXLAN ARP and FDB entries)."""
    return {
        "ipsets": ipset_restore_full(state.ipsets),
        "iptables-filter": iptables_restore("filter", state.filter_chains),
        "iptables-nat": iptables_restore("nat", state.nat_chains),
        "routes": routes_text(state.routes),
        "neighbours": neighbours_text(state.neighbours, state.fdb),
    }
