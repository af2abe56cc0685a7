"""The real backend: ipsets, iptables and routes in the node's network namespace.

``apply`` follows the order in ``felix_client.calc.state``:

1. one ``ipset restore`` session: (re)created sets are filled into a temporary set and swapped
   in; member changes are ``add``/``del --exist``;
2. per table, one ``iptables-restore --noflush`` transaction declaring only the changed
   ``cali-*`` chains, deleting removed ones; then the hook jumps from the kernel chains if they
   are missing (``iptables -C`` / ``-I``);
3. one ``ipset restore`` session destroying the sets no chain references any more;
4. the ``vxlan.calico`` device, then routes, neighbours and FDB entries over netlink.

``resync`` reads the kernel (``ipset list -t``, ``iptables-save``, a route/neighbour dump) and
rewrites all of ours, deleting our objects that are not wanted. Objects that are not ours —
non-``cali`` chains and rules, other sets, routes of other protocols — are never modified.

With ``netns`` every command runs as ``ip netns exec <netns> …`` and netlink talks to that
namespace; the agent process itself stays where it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
import trio

from felix_client.calc.render.chains import HOOKS
from felix_client.calc.state import DataplaneDelta, DataplaneState, FdbEntry, Neighbour, Route
from felix_client.dataplane import ipsets, iptables
from felix_client.dataplane.base import NO_HOST, DataplaneError, DataplaneStats, HostSpec
from felix_client.dataplane.commands import CommandRunner, count_lines
from felix_client.dataplane.netlink import NetlinkResult, NetlinkRoutes

log = structlog.get_logger(__name__)

T = TypeVar("T")
_PendingKey = tuple[str, str]


class _OwnThread:
    """Runs blocking calls on one dedicated thread.

    pyroute2 (0.9) keeps its asyncio loop and netlink transport in thread-local storage, so an
    ``IPRoute`` used from trio's pooled worker threads would grow a socket per thread, and
    ``close()`` would only release the calling thread's. One owner thread avoids both.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: Future[T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future = self._executor.submit(fn, *args)
        future.add_done_callback(wake)
        # Not cancellable: abandoning a netlink call halfway would leave the owner thread busy
        # and our record of what is programmed wrong.
        with trio.CancelScope(shield=True):
            await done.wait()
        return future.result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False)


def _pending_key(item: Route | Neighbour | FdbEntry) -> _PendingKey:
    if isinstance(item, Route):
        return ("route", item.dst)
    if isinstance(item, Neighbour):
        return ("neigh", item.ip)
    return ("fdb", item.mac)


class KernelDataplane:
    """Programs one node (see the module docstring). Not safe for concurrent calls: the agent
    makes one call at a time."""

    def __init__(
        self,
        netns: str | None = None,
        *,
        command_timeout: float = 60.0,
        configure_sysctls: bool = True,
    ) -> None:
        self.netns = netns
        self.stats = DataplaneStats()
        self.configure_sysctls = configure_sysctls
        self._cmd = CommandRunner(netns, self.stats, command_timeout)
        self._nl = NetlinkRoutes(netns)
        self._thread = _OwnThread(f"netlink-{netns or 'host'}")
        self._pending: dict[_PendingKey, Route | Neighbour | FdbEntry] = {}
        self._neigh: dict[str, Neighbour] = {}  # what we programmed, to delete it exactly
        self._fdb: dict[str, FdbEntry] = {}
        self._host: HostSpec | None = None
        self._hooks_ok = False

    # --- the Dataplane interface -----------------------------------------------------------------

    async def apply(
        self, delta: DataplaneDelta, state: DataplaneState, host: HostSpec = NO_HOST
    ) -> None:
        text = ipsets.delta_text(delta)
        if text is not None:
            await self._ipset_restore(text)
        texts = iptables.delta_texts(delta)
        for table, restore in texts.items():
            await self._iptables_restore(table, restore)
        hook_targets = {h.target for h in HOOKS}
        touched = set(delta.filter_chains_changed) | set(delta.nat_chains_changed)
        if not self._hooks_ok or touched & hook_targets:
            await self._ensure_hooks(state)
        text = ipsets.destroy_text(delta.ipsets_removed)
        if text is not None:
            await self._ipset_restore(text)
        await self._apply_routes(delta, state, host)

    async def resync(self, state: DataplaneState, host: HostSpec = NO_HOST) -> None:
        listed = await self._run_checked(["ipset", "list", "-t"], "ipset")
        existing_sets = ipsets.parse_list_terse(listed)
        await self._ipset_restore(ipsets.full_text(state.ipsets, existing_sets))
        saved = iptables.parse_save(await self._iptables_save())
        tables = {"filter": state.filter_chains, "nat": state.nat_chains}
        for table, chains in tables.items():
            existing = iptables.our_chains(saved.get(table, {}))
            if chains or existing:
                await self._iptables_restore(table, iptables.full_text(table, chains, existing))
        self._hooks_ok = False
        await self._ensure_hooks(state)
        stale = [
            n
            for n in existing_sets
            if n not in state.ipsets and not n.startswith(ipsets.TEMP_PREFIX)
        ]
        text = ipsets.destroy_text(stale)
        if text is not None:
            await self._ipset_restore(text)
        if host.vxlan is not None:
            await self._ensure_device(host)
        await self._resync_routes(state, host, forwarding=True)
        if host.vxlan is None:
            await self._ensure_device(host)

    async def _resync_routes(
        self, state: DataplaneState, host: HostSpec, *, forwarding: bool = False
    ) -> None:
        """Make the kernel's routes, neighbours and FDB entries exactly `state`'s."""
        vxlan_name = host.vxlan.name if host.vxlan else "vxlan.calico"
        result = await self._netlink(
            self._nl.resync, state.routes, state.neighbours, state.fdb, vxlan_name
        )
        self._neigh = dict(state.neighbours)
        self._fdb = dict(state.fdb)
        self._pending = {_pending_key(i): i for i in result.pending}
        await self._after_netlink(result, forwarding=forwarding)

    async def host_mtu(self) -> int | None:
        return await self._thread.run(self._nl.host_mtu)

    def pending_work(self) -> bool:
        return bool(self._pending)

    async def retry_pending(self) -> None:
        if not self._pending:
            return
        result = await self._netlink(self._nl.retry, list(self._pending.values()))
        self._pending = {_pending_key(i): i for i in result.pending}
        await self._after_netlink(result)

    async def aclose(self) -> None:
        await self._thread.run(self._nl.close)
        self._thread.shutdown()

    # --- routes ----------------------------------------------------------------------------------

    async def _apply_routes(
        self, delta: DataplaneDelta, state: DataplaneState, host: HostSpec
    ) -> None:
        device_first = host.vxlan is not None
        if device_first and host != self._host and await self._ensure_device(host):
            # A new vxlan.calico (e.g. this node's VTEP went and came back): the kernel dropped
            # the routes, neighbours and FDB entries of the old device with it, which the delta
            # does not repeat; write them all again, as Felix does for a new device.
            await self._resync_routes(state, host)
            return
        if not (
            delta.routes_added
            or delta.routes_removed
            or delta.neighbours_added
            or delta.neighbours_removed
            or delta.fdb_added
            or delta.fdb_removed
        ):
            if not device_first and host != self._host:
                await self._ensure_device(host)
            return
        for dst in delta.routes_removed:
            self._pending.pop(("route", dst), None)
        for dst in delta.routes_added:
            self._pending.pop(("route", dst), None)
        neigh_removed = [
            self._neigh.pop(ip) for ip in delta.neighbours_removed if ip in self._neigh
        ]
        fdb_removed = [self._fdb.pop(mac) for mac in delta.fdb_removed if mac in self._fdb]
        for ip in delta.neighbours_removed:
            self._pending.pop(("neigh", ip), None)
        for mac in delta.fdb_removed:
            self._pending.pop(("fdb", mac), None)
        # An entry replaced under the same key is deleted first (its old MAC/IP would linger).
        for ip, n in delta.neighbours_added.items():
            old = self._neigh.get(ip)
            if old is not None and old != n:
                neigh_removed.append(old)
        for mac, f in delta.fdb_added.items():
            old_f = self._fdb.get(mac)
            if old_f is not None and old_f != f:
                fdb_removed.append(old_f)
        result = await self._netlink(
            self._nl.apply,
            list(delta.routes_removed),
            list(delta.routes_added.values()),
            neigh_removed,
            list(delta.neighbours_added.values()),
            fdb_removed,
            list(delta.fdb_added.values()),
        )
        self._neigh.update(delta.neighbours_added)
        self._fdb.update(delta.fdb_added)
        for item in result.pending:
            self._pending[_pending_key(item)] = item
        if not device_first and host != self._host:
            await self._ensure_device(host)
        await self._after_netlink(result)

    async def _ensure_device(self, host: HostSpec) -> bool:
        """Create, fix or delete vxlan.calico as `host` says; whether it was created."""
        device = host.vxlan
        name = device.name if device is not None else "vxlan.calico"
        calls, created = await self._netlink(self._nl.ensure_vxlan, device, name)
        self.stats.route_calls += calls
        self._host = host
        return created

    async def _after_netlink(self, result: NetlinkResult, *, forwarding: bool = False) -> None:
        self.stats.route_calls += result.calls
        self.stats.routes_pending = len(self._pending)
        if self._pending:
            log.debug("routes pending", netns=self.netns, count=len(self._pending))
        if self.configure_sysctls and (result.new_ifaces or forwarding):
            await self._sysctls(result.new_ifaces, forwarding)

    async def _sysctls(self, ifaces: Iterable[str], forwarding: bool) -> None:
        """Felix's per-workload-interface settings: answer ARP for the gateway address
        (proxy_arp) without the default random delay, and forward."""
        keys = ["net/ipv4/ip_forward=1"] if forwarding else []
        for iface in ifaces:
            keys += [
                f"net/ipv4/conf/{iface}/proxy_arp=1",
                f"net/ipv4/neigh/{iface}/proxy_delay=0",
                f"net/ipv4/conf/{iface}/forwarding=1",
            ]
        if not keys:
            return
        result = await self._cmd.run(["sysctl", "-q", "-w", *keys])
        if not result.ok:
            # The interface may have vanished between the route and now; the next resync
            # sees the new incarnation and configures it again.
            log.warning("sysctl failed", netns=self.netns, error=result.describe())

    async def _netlink(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._thread.run(fn, *args)
        except DataplaneError:
            self.stats.route_errors += 1
            raise
        except Exception as exc:  # netlink socket or namespace trouble
            self.stats.route_errors += 1
            raise DataplaneError(f"netlink: {type(exc).__name__}: {exc}") from exc

    # --- commands --------------------------------------------------------------------------------

    async def _ipset_restore(self, text: str) -> None:
        self.stats.ipset_calls += 1
        self.stats.ipset_lines_executed += count_lines(text)
        result = await self._cmd.run(["ipset", "restore"], text)
        if not result.ok:
            self.stats.ipset_errors += 1
            raise DataplaneError(result.describe())

    async def _iptables_restore(self, table: str, text: str) -> None:
        self.stats.iptables_restore_calls += 1
        lines = self.stats.iptables_lines_executed
        lines[table] = lines.get(table, 0) + count_lines(text)
        result = await self._cmd.run(["iptables-restore", "--noflush"], text)
        if not result.ok:
            self.stats.iptables_restore_errors += 1
            raise DataplaneError(result.describe())

    async def _iptables_save(self) -> str:
        self.stats.iptables_save_calls += 1
        result = await self._cmd.run(["iptables-save"])
        if not result.ok:
            self.stats.iptables_save_errors += 1
            raise DataplaneError(result.describe())
        return result.stdout

    async def _run_checked(self, args: list[str], kind: str) -> str:
        if kind == "ipset":
            self.stats.ipset_calls += 1
        result = await self._cmd.run(args)
        if not result.ok:
            if kind == "ipset":
                self.stats.ipset_errors += 1
            raise DataplaneError(result.describe())
        return result.stdout

    async def _ensure_hooks(self, state: DataplaneState) -> None:
        """Insert the jumps from the kernel chains to ours, each only if ``-C`` says it is
        missing, so repeated calls never duplicate them and foreign rules keep their order."""
        present = {"filter": set(state.filter_chains), "nat": set(state.nat_chains)}
        hooks = iptables.hooks_for(present)
        for hook in hooks:
            check = await self._cmd.run(["iptables", *hook.check_args()])
            if check.ok:
                continue
            if check.returncode != 1:
                raise DataplaneError(check.describe())
            insert = await self._cmd.run(["iptables", *hook.insert_args()])
            if not insert.ok:
                raise DataplaneError(insert.describe())
        self._hooks_ok = len(hooks) == len(HOOKS)
