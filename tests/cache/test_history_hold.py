"""History holds: a new client's position stays in the history past ServerMaxFallBehindSecs
for its grace period (ServerNewClientFallBehindGracePeriod), never past HistoryMaxUpdates."""

from __future__ import annotations

from tests.cache.test_view import Clock, enc
from typha.cache.view import SyncerView
from typha.model.keys import SyncerType


def aged_view(clock: Clock, **kw: object) -> SyncerView:
    """A view with crumbs 1..3 minted at t=0, 1, 2 and a 10 s history."""
    view = SyncerView(SyncerType.FELIX, max_history_secs=10, clock=clock, **kw)  # type: ignore[arg-type]
    for i in range(3):
        clock.now = float(i)
        view.apply([enc(f"/k{i}", i)])
    return view


def test_without_a_hold_old_breadcrumbs_age_out() -> None:
    clock = Clock()
    view = aged_view(clock)
    assert view.can_resume_from_seq(1)
    clock.now = 11.5  # crumbs 1 (t=0) and 2 (t=1) are older than 10 s
    view.apply([enc("/new", 1)])
    assert view.oldest_seq == 3 and not view.can_resume_from_seq(1)


def test_a_hold_keeps_what_its_client_needs_and_reports_use_once() -> None:
    clock = Clock()
    view = aged_view(clock)
    used: list[int] = []
    hold = view.hold_history(1, on_used=lambda: used.append(1))  # the client has crumb 1
    clock.now = 11.5
    view.apply([enc("/new", 1)])
    # Crumb 1 may go (the client has it), crumb 2 stays for it.
    assert view.oldest_seq == 2 and view.can_resume_from_seq(1)
    clock.now = 12.5
    view.apply([enc("/new", 2)])
    assert view.oldest_seq == 2 and used == [1]  # counted once, however often it holds
    # The grace period ends: the next trim drops what has aged out.
    hold.until = 13.0
    clock.now = 13.5
    view.apply([enc("/new", 3)])
    assert view.oldest_seq == 4 and not view.can_resume_from_seq(1)


def test_a_released_hold_no_longer_keeps_anything() -> None:
    clock = Clock()
    view = aged_view(clock)
    hold = view.hold_history(1)
    view.release(hold)
    clock.now = 11.5
    view.apply([enc("/new", 1)])
    assert view.oldest_seq == 3 and not hold.used


def test_a_hold_never_overrides_the_size_bound() -> None:
    clock = Clock()
    view = aged_view(clock, max_history_updates=2)
    view.hold_history(0)
    clock.now = 2.5
    view.apply([enc("/new", 1)])
    # Four updates minted, two allowed: the hold does not keep crumbs 1 and 2.
    assert view.oldest_seq == 3
