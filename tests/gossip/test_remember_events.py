"""``Serf.remember_events``: events a node held before a restart go back into its event
buffer without being delivered again, and push-pull carries them to a peer that lacks them."""

from __future__ import annotations

import random

from gossip.serf import MemberEvent, Serf, SerfConfig, UserEvent


def core(name: str, config: SerfConfig | None = None) -> Serf:
    s = Serf(name, ("10.0.0.1", 7946), rng=random.Random(0), now=0.0, config=config)
    assert all(isinstance(d, MemberEvent) for d in s.take_deliveries())
    return s


def delivered(s: Serf) -> list[tuple[int, str, bytes]]:
    return [(d.ltime, d.name, d.payload) for d in s.take_deliveries() if isinstance(d, UserEvent)]


def test_remembered_events_are_not_delivered_but_reach_a_peer_by_push_pull() -> None:
    restarted, peer = core("a"), core("b")
    held = [(3, "deploy", b"v1"), (7, "consul:event:x", b"\x81")]
    assert restarted.remember_events(held) == 2
    assert delivered(restarted) == []
    assert restarted.event_clock.time() == 8  # witnessed, as a delivery would
    peer.merge_remote_state(1.0, restarted.local_state(True), True)
    assert delivered(peer) == held
    # the same push-pull again brings nothing new; remembering twice adds nothing
    peer.merge_remote_state(2.0, restarted.local_state(False), False)
    assert delivered(peer) == []
    assert restarted.remember_events(held) == 0
    # an event the peer then gossips to the restarted node is deduped there, not delivered
    restarted.merge_remote_state(3.0, peer.local_state(False), False)
    assert delivered(restarted) == []
    assert restarted.metrics.events_deduped == 2


def test_remembered_events_respect_the_dedup_window_and_min_time() -> None:
    s = core("a", SerfConfig(event_dedup_window=16))
    s.event_min_time = 5
    added = s.remember_events([(1, "too-old", b""), (100, "new", b""), (50, "outside", b"")])
    assert added == 1  # 1 < event_min_time; 50 < 101 - 16
    peer = core("b")
    peer.merge_remote_state(1.0, s.local_state(False), False)
    assert [name for _, name, _ in delivered(peer)] == ["new"]
