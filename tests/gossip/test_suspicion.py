"""Lifeguard suspicion timers and local health awareness."""

from __future__ import annotations

import math

import pytest

from gossip.awareness import Awareness
from gossip.suspicion import Suspicion, suspicion_timeout


@pytest.mark.parametrize("n,want", [(0, 4.0), (1, 4.0), (5, 4.0), (10, 4.0), (20, 5.204),
                                    (100, 8.0), (1000, 12.0)])
def test_timeout_scales_with_log10_n(n: int, want: float) -> None:
    assert suspicion_timeout(4, n, 1.0) == pytest.approx(want)
    assert suspicion_timeout(4, n, 0.5) == pytest.approx(math.floor(want * 500) / 1000)


def test_starts_at_max_and_shrinks_logarithmically_to_min() -> None:
    s = Suspicion(100.0, "a", k=3, min_timeout=4.0, max_timeout=24.0)
    assert s.deadline == 124.0
    assert not s.expired(123.9) and s.expired(124.0)
    deadlines = []
    for who in ("b", "c", "d"):
        assert s.confirm(101.0, who)
        deadlines.append(s.deadline)
    # 24 - log(c+1)/log(k+1) * 20, rounded down to the millisecond
    assert deadlines == [pytest.approx(100 + math.floor((24 - 0.5 * 20) * 1000) / 1000),
                         pytest.approx(100 + math.floor(
                             (24 - math.log(3) / math.log(4) * 20) * 1000) / 1000),
                         pytest.approx(104.0)]
    assert deadlines[0] > deadlines[1] > deadlines[2]


def test_confirmations_count_once_per_accuser_and_stop_at_k() -> None:
    s = Suspicion(0.0, "a", k=2, min_timeout=4.0, max_timeout=24.0)
    assert not s.confirm(1.0, "a")  # the original accuser is not a confirmation
    assert s.confirm(1.0, "b")
    assert not s.confirm(1.0, "b")
    before = s.deadline
    assert s.confirm(1.0, "c")
    assert s.deadline < before and s.deadline == 4.0
    assert not s.confirm(1.0, "d")  # k reached: further accusers change nothing
    assert s.deadline == 4.0


def test_no_expected_confirmations_means_min_timeout() -> None:
    s = Suspicion(10.0, "a", k=0, min_timeout=4.0, max_timeout=24.0)
    assert s.deadline == 14.0
    assert not s.confirm(11.0, "b") and s.deadline == 14.0


def test_deadline_may_already_have_passed_after_a_late_confirmation() -> None:
    s = Suspicion(0.0, "a", k=1, min_timeout=4.0, max_timeout=24.0)
    assert s.confirm(10.0, "b")  # now min (4 s) after start: expired at once
    assert s.expired(10.0)


def test_awareness_bounds_and_scaling() -> None:
    a = Awareness(8)
    assert a.scale(1.0) == 1.0
    a.apply_delta(3)
    assert a.score == 3 and a.scale(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7 and a.scale(1.0) == 8.0
    a.apply_delta(-100)
    assert a.score == 0
