"""Serf-style coalescing of user events, alone and inside the Serf core."""

from __future__ import annotations

import random

import pytest

from gossip.coalesce import Coalescer
from gossip.serf import Serf, SerfConfig, UserEvent


def ev(name: str, ltime: int, payload: bytes = b"") -> UserEvent:
    return UserEvent(ltime, name, payload, True)


def test_keeps_only_the_newest_per_name_and_flushes_when_quiet() -> None:
    c: Coalescer[UserEvent] = Coalescer(period=3.0, quiescent=1.0)
    c.add(0.0, ev("deploy", 5))
    c.add(0.2, ev("deploy", 7, b"a"))
    c.add(0.4, ev("deploy", 7, b"b"))
    c.add(0.5, ev("deploy", 6))
    c.add(0.6, ev("restart", 3))
    assert c.flush_due(1.5) == []  # 0.6 + 1.0 quiescent not reached yet
    out = c.flush_due(1.6)
    assert sorted((e.name, e.ltime, e.payload) for e in out) == [
        ("deploy", 7, b"a"), ("deploy", 7, b"b"), ("restart", 3, b"")]
    assert len(c) == 0 and c.flush_due(10.0) == []


def test_period_caps_a_steady_stream() -> None:
    c: Coalescer[UserEvent] = Coalescer(period=3.0, quiescent=1.0)
    t = 0.0
    for i in range(20):  # an event every 0.5 s never lets it go quiet
        c.add(t, ev("tick", i))
        t += 0.5
        if c.flush_due(t):
            break
    assert t == pytest.approx(3.0)


def test_serf_core_coalesces_only_events_marked_coalescable() -> None:
    s = Serf("n1", ("127.0.0.1", 7946), rng=random.Random(1), now=0.0,
             config=SerfConfig(coalesce_period=3.0, quiescent_period=1.0))
    s.user_event(0.0, "a", b"1", coalesce=True)
    s.user_event(0.1, "a", b"2", coalesce=True)
    s.user_event(0.2, "b", b"x", coalesce=False)
    got = [d for d in s.take_deliveries() if isinstance(d, UserEvent)]
    assert [(d.name, d.payload) for d in got] == [("b", b"x")]  # passes straight through
    assert s.next_deadline() <= 1.1
    s.tick(1.2)
    got = [d for d in s.take_deliveries() if isinstance(d, UserEvent)]
    assert [(d.name, d.payload) for d in got] == [("a", b"2")]
