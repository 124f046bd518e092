"""Admission of members a stranger told us about (gossip/admission.py), on one sans-IO core:
who vouches, the verification ping and its answer, the bounds, and forgetting."""

from __future__ import annotations

import random

from gossip import wire
from gossip.config import GossipConfig, SendPacket
from gossip.membership import Memberlist
from gossip.state import State

VSN = bytes([1, 5, 2, 2, 5, 5])
STRANGER = ("10.9.9.9", 4000)


def alive(name: str, i: int, inc: int = 1) -> bytes:
    return wire.encode(wire.Alive(inc, name, bytes([10, 1, i // 256, i % 256]), 7946, b"", VSN))


def core(**cfg: object) -> Memberlist:
    ml = Memberlist(GossipConfig().with_(**cfg), "me", ("10.0.0.1", 7946),
                    rng=random.Random(1), now=0.0)
    ml.take_effects()
    return ml


def pings(ml: Memberlist) -> list[tuple[tuple[str, int], wire.Ping]]:
    out = []
    for eff in ml.take_effects():
        if isinstance(eff, SendPacket):
            for m in wire.decode_packet(eff.data):
                if isinstance(m, wire.Ping):
                    out.append((eff.addr, m))
    return out


def due_pings(ml: Memberlist) -> list[tuple[tuple[str, int], wire.Ping]]:
    """Run the core to its next admission deadline; the verification pings it sent."""
    assert pings(ml) == []  # nothing before admit_delay
    ml.tick(ml.admission.deadline())
    return pings(ml)


def test_a_stranger_s_news_waits_for_an_answer_a_member_s_does_not() -> None:
    ml = core()
    ml.receive_packet(0.0, STRANGER, alive("x", 1))
    assert "x" not in ml.members and "x" in ml.admission.pending
    [(dst, ping)] = due_pings(ml)
    assert dst == ("10.1.0.1", 7946) and ping.node == "x" and ping.source_node == "me"
    ml.receive_packet(0.1, dst, wire.encode(wire.Ack(ping.seq_no)))
    assert ml.members["x"].state is State.ALIVE and not ml.admission.pending
    ml.receive_packet(0.2, dst, alive("y", 2))  # x is a member now: its news is believed
    assert "y" in ml.members and ml.admission.metrics.admitted == 1


def test_a_member_s_word_during_the_delay_admits_without_a_ping() -> None:
    ml = core()
    ml.receive_packet(0.0, STRANGER, alive("x", 1))
    [(dst, ping)] = due_pings(ml)
    ml.receive_packet(0.6, dst, wire.encode(wire.Ack(ping.seq_no)))
    ml.receive_packet(0.7, STRANGER, alive("z", 3))
    ml.receive_packet(0.8, dst, alive("z", 3))  # x, a member, confirms z
    assert "z" in ml.members and not ml.admission.pending and pings(ml) == []


def test_an_inbound_stream_s_sender_may_introduce_itself_once() -> None:
    ml = core()
    pp = wire.PushPull(True, tuple(wire.PushNodeState(
        f"s{i}", bytes([10, 1, 0, 7]), 7000 + i, b"", 1, State.ALIVE, VSN) for i in range(3)))
    ml.handle_stream(0.0, ("10.1.0.7", 51234), wire.StreamMessage(wire.MsgType.PUSH_PULL,
                                                                   push_pull=pp))
    assert "s0" in ml.members and {"s1", "s2"} == set(ml.admission.pending)


def test_an_invention_that_never_answers_is_forgotten() -> None:
    ml = core()
    ml.receive_packet(0.0, STRANGER, alive("ghost", 1))
    cfg = GossipConfig()
    t, sent = 0.0, 0
    while ml.admission.pending and t < 60:
        t = ml.next_deadline()
        ml.tick(t)
        sent += len(pings(ml))
    assert not ml.admission.pending and "ghost" not in ml.members
    assert t <= cfg.admit_delay + cfg.admit_attempts * cfg.probe_interval + 0.01
    assert sent == cfg.admit_attempts and ml.admission.metrics.expired == 1


def test_bounds_per_message_in_total_and_on_the_ping_rate() -> None:
    ml = core(admit_per_message=10, admit_pending_max=25, admit_pings_per_second=12.0)
    packet = wire.make_compound([alive(f"f{i}", i) for i in range(100)])
    for _ in range(2):
        ml.receive_packet(0.0, STRANGER, packet)
    assert len(ml.admission) == 20  # ten new names from each packet
    for k in range(3):
        ml.receive_packet(0.0, STRANGER, wire.make_compound(
            [alive(f"g{k}-{i}", 200 + i) for i in range(100)]))
    assert len(ml.admission) == 25
    assert ml.admission.metrics.refused == 90 + 80 + 95 + 100 + 100
    assert len(due_pings(ml)) == 12  # one second's worth of pings, the rest wait
    ml.tick(ml.next_deadline())
    assert 0 < len(pings(ml)) <= 2


def test_a_left_member_moves_only_once_the_new_address_answers() -> None:
    ml = core()
    ml.receive_packet(0.0, ("10.1.0.5", 7946), alive("m", 5))  # first-hand: a stranger
    [(dst, ping)] = due_pings(ml)
    ml.receive_packet(0.0, dst, wire.encode(wire.Ack(ping.seq_no)))
    ml.receive_packet(0.1, STRANGER, wire.encode(wire.Dead(1, "m", "m")))
    assert ml.members["m"].state is State.LEFT
    ml.receive_packet(0.2, STRANGER, alive("m", 6, inc=2))
    assert ml.members["m"].addr == "10.1.0.5"  # not moved on a stranger's word
    [(dst, ping)] = due_pings(ml)
    assert dst == ("10.1.0.6", 7946)
    ml.receive_packet(0.3, dst, wire.encode(wire.Ack(ping.seq_no)))
    assert (ml.members["m"].addr, ml.members["m"].state) == ("10.1.0.6", State.ALIVE)
