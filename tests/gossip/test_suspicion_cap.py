"""Suspicion.cap: expecting fewer confirmations when fewer members can give them."""

from __future__ import annotations

from gossip.suspicion import Suspicion


def test_cap_to_one_then_one_confirmation_gives_the_minimum() -> None:
    s = Suspicion(100.0, "me", k=2, min_timeout=4.0, max_timeout=24.0)
    assert s.deadline == 124.0
    assert s.cap(1) and s.k == 1 and s.deadline == 124.0  # nobody confirmed yet
    assert s.confirm(101.0, "peer")
    assert s.deadline == 104.0  # the one possible confirmation came: the minimum
    assert not s.cap(1) and not s.cap(5)  # never raised, never lowered twice


def test_cap_to_zero_means_the_minimum_at_once() -> None:
    s = Suspicion(0.0, "me", k=2, min_timeout=4.0, max_timeout=24.0)
    assert s.cap(0) and s.deadline == 4.0
    assert not s.confirm(1.0, "late")  # no more confirmations are expected


def test_cap_keeps_confirmations_already_counted() -> None:
    s = Suspicion(0.0, "me", k=3, min_timeout=4.0, max_timeout=24.0)
    s.confirm(1.0, "a")
    s.confirm(1.0, "b")
    before = s.deadline
    assert s.cap(0)  # two already confirmed: k becomes 2, which they satisfy
    assert s.k == 2 and s.deadline == 4.0 < before
