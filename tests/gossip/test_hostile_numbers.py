"""Boundary numbers from one hostile packet or stream (issue 13, items 1 and 4): Lamport times
and incarnations far ahead of ours are dropped and counted, clocks never pass what the wire
can carry, and a forged dead/suspect at incarnation 2**32-1 leaves its target alive."""

from __future__ import annotations

import random

import msgpack
import pytest

from gossip import wire
from gossip.errors import DecodeError
from gossip.lamport import MAX_LTIME, LamportClock
from gossip.membership import MAX_INCARNATION
from gossip.serf import Serf, SerfConfig, SerfMsg, UserEvent
from gossip.state import State

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
VSN = bytes([1, 5, 2, 2, 5, 5])


def core(name: str = "me") -> Serf:
    s = Serf(name, ("10.0.0.1", 7946), rng=random.Random(0), now=0.0)
    s.take_deliveries()
    return s


def msg(t: SerfMsg, **body: object) -> bytes:
    return bytes([t]) + wire.packb(body)


def packet(m: bytes) -> bytes:
    return bytes([wire.MsgType.USER]) + m


def serf_state(**body: object) -> bytes:
    return bytes([SerfMsg.PUSH_PULL]) + wire.packb(body)


def add_member(s: Serf, name: str, ip: int, inc: int = 1) -> None:
    """A member learned through the reply to our own join (admitted at once)."""
    pp = wire.PushPull(True, (wire.PushNodeState(name, bytes([10, 0, 0, ip]), 7946, b"\xff\x80",
                                                 inc, State.ALIVE, VSN),))
    s.ml.merging_join_reply = True
    try:
        s.ml.merge_remote_state(0.0, pp)
    finally:
        s.ml.merging_join_reply = False
    assert s.ml.members[name].incarnation == inc
    s.take_deliveries()


def encodable(s: Serf) -> None:
    """Everything we would send still packs and decodes: state, events, intents."""
    wire.parse_stream(s.ml.push_pull_request(False))
    s.user_event(1.0, "after", b"x")
    s.leave(1.0)


# --- Lamport clocks ----------------------------------------------------------------------------


def test_clock_saturates_instead_of_leaving_uint64() -> None:
    c = LamportClock(1)
    c.witness(U64)
    assert c.time() == MAX_LTIME and c.exhausted()
    assert c.increment() == MAX_LTIME
    assert c.plausible(5, 10) and not c.plausible(1 << 64, 1 << 70)


@pytest.mark.parametrize("ltime", [1 << 31, U32, 1 << 63, U64])
def test_user_event_far_ahead_is_dropped_and_counted(ltime: int) -> None:
    s = core()
    s.receive_packet(0.0, ("10.0.0.9", 1), packet(msg(SerfMsg.USER_EVENT, LTime=ltime,
                                                       Name="evil", Payload=b"", CC=False)))
    assert s.take_deliveries() == []
    assert s.event_clock.time() == 1 and s.metrics.ltime_jumps_dropped == 1
    assert s.user_event(1.0, "deploy", b"v1") == 1  # firing still works (issue: 500s)
    encodable(s)


def test_user_event_within_the_bound_is_delivered() -> None:
    s = core()
    lt = SerfConfig().max_ltime_jump
    s.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=lt, Name="ok", Payload=b"", CC=False))
    assert [d.name for d in s.take_deliveries() if isinstance(d, UserEvent)] == ["ok"]
    assert s.event_clock.time() == lt + 1 and s.metrics.ltime_jumps_dropped == 0


@pytest.mark.parametrize("kind", [SerfMsg.JOIN, SerfMsg.LEAVE])
def test_intent_far_ahead_is_dropped(kind: SerfMsg) -> None:
    s = core()
    add_member(s, "b", 2)
    body: dict[str, object] = {"LTime": U64, "Node": "b"}
    if kind is SerfMsg.LEAVE:
        body["Prune"] = True
    s.notify_msg(0.0, msg(kind, **body))
    assert s.clock.time() < 1 << 20 and s.metrics.ltime_jumps_dropped == 1
    assert "b" in s.members and s.members["b"].status_ltime == 0
    encodable(s)


def test_query_far_ahead_is_dropped_and_bad_fields_are_decode_errors() -> None:
    s = core()
    q = {"LTime": U64, "ID": 1, "Addr": bytes([10, 0, 0, 9]), "Port": 7946, "Filters": [],
         "Flags": 1, "RelayFactor": 0, "Timeout": 1, "Name": "q", "Payload": b""}
    s.notify_msg(0.0, msg(SerfMsg.QUERY, **q))
    assert s.query_clock.time() == 1 and s.metrics.ltime_jumps_dropped == 1
    assert s.take_effects() == []  # no ack for a dropped query
    for field, bad in (("ID", 1 << 32), ("RelayFactor", 256), ("Flags", -1), ("LTime", -1)):
        with pytest.raises(DecodeError):
            s.notify_msg(0.0, msg(SerfMsg.QUERY, **{**q, field: bad}))
    with pytest.raises(DecodeError):
        s.notify_msg(0.0, msg(SerfMsg.QUERY_RESPONSE, LTime=1, ID=1 << 32, From="x", Flags=0))


def test_push_pull_clocks_advance_at_most_by_the_bound() -> None:
    s = core()
    add_member(s, "b", 2)
    jump = SerfConfig().max_ltime_jump
    state = serf_state(LTime=U64, StatusLTimes={"b": U64, "ghost": U64 - 1}, LeftMembers=["b"],
                       EventLTime=U64, Events=[{"LTime": U64 - 1, "Events": [
                           {"Name": "evil", "Payload": b""}]}], QueryLTime=U64)
    s.merge_remote_state(0.0, state, False)
    for clock in (s.clock, s.event_clock, s.query_clock):
        assert clock.time() <= 2 * jump + 2
    assert s.take_deliveries() == [] and "ghost" not in s.recent_intents
    assert s.members["b"].status_ltime == 0
    assert s.metrics.ltime_jumps_dropped >= 6
    encodable(s)


def test_join_reply_clocks_are_adopted_whole() -> None:
    """A node joining a long-lived cluster takes the seed's clocks, however far ahead."""
    s = core()
    far = 1 << 40
    s.ml.merging_join_reply = True
    s.merge_remote_state(0.0, serf_state(LTime=far, StatusLTimes={}, LeftMembers=[],
                                         EventLTime=far, Events=[], QueryLTime=far), True)
    s.ml.merging_join_reply = False
    assert s.clock.time() == s.event_clock.time() == s.query_clock.time() == far


@pytest.mark.parametrize("bad", [-1, -(1 << 63), 1.5, True, "x"])
def test_push_pull_status_ltime_out_of_range_is_a_decode_error(bad: object) -> None:
    s = core()
    body = msgpack.packb({"LTime": 1, "StatusLTimes": {"b": bad}, "LeftMembers": [],
                          "EventLTime": 1, "Events": [], "QueryLTime": 1}, use_bin_type=False)
    with pytest.raises(DecodeError):
        s.merge_remote_state(0.0, bytes([SerfMsg.PUSH_PULL]) + body, False)


def test_push_pull_listing_many_unknown_names_records_few_intents() -> None:
    s = core()
    names = {f"fake{i}": 5 for i in range(20_000)}
    s.merge_remote_state(0.0, serf_state(LTime=10, StatusLTimes=names, LeftMembers=list(names)[:5],
                                         EventLTime=1, Events=[], QueryLTime=1), False)
    assert len(s.recent_intents) == SerfConfig().max_new_intents
    assert s.metrics.intents_capped == 20_000 - SerfConfig().max_new_intents


# --- incarnations ------------------------------------------------------------------------------


@pytest.mark.parametrize("forged", [wire.Dead(U32, "me", "evil"), wire.Suspect(U32, "me", "evil"),
                                    wire.Alive(U32, "me", bytes([10, 0, 0, 1]), 7946, b"", VSN)])
def test_forged_accusation_at_uint32_max_about_us_is_dropped(forged: wire.Message) -> None:
    s = core()
    s.receive_packet(0.0, ("10.0.0.9", 1), wire.encode(forged))
    assert s.ml.local.incarnation == 1 and s.ml.local.state is State.ALIVE
    assert s.ml.metrics.incarnation_jumps_dropped == 1 and s.ml.metrics.refutes == 0


@pytest.mark.parametrize("forged", [wire.Dead(U32, "b", "evil"), wire.Suspect(U32, "b", "evil"),
                                    wire.Alive(U32, "b", bytes([10, 0, 0, 2]), 7946, b"", VSN)])
def test_forged_message_at_uint32_max_about_a_peer_is_dropped(forged: wire.Message) -> None:
    s = core()
    add_member(s, "b", 2, inc=7)
    s.receive_packet(0.0, ("10.0.0.9", 1), wire.encode(forged))
    b = s.ml.members["b"]
    assert (b.state, b.incarnation) == (State.ALIVE, 7)
    assert s.ml.metrics.incarnation_jumps_dropped == 1


def test_refute_never_emits_more_than_uint32() -> None:
    s = core()
    s.ml.local.incarnation = MAX_INCARNATION - 3
    s.receive_packet(0.0, ("10.0.0.9", 1), wire.encode(wire.Dead(MAX_INCARNATION - 1, "me", "x")))
    assert s.ml.local.incarnation == MAX_INCARNATION
    s.receive_packet(0.0, ("10.0.0.9", 1), wire.encode(wire.Suspect(MAX_INCARNATION, "me", "x")))
    assert s.ml.local.incarnation == MAX_INCARNATION and s.ml.metrics.refutes == 2
    s.ml.update_meta(0.0)
    assert s.ml.local.incarnation == MAX_INCARNATION
    wire.parse_stream(s.ml.push_pull_request(False))  # decodes: every incarnation is a uint32
    for eff in s.take_effects():
        wire.decode_packet(eff.data)


def test_a_restarted_node_refutes_its_old_death_from_the_join_reply() -> None:
    """The seed we join holds us dead at an incarnation far above our fresh 1."""
    s = core()
    old = SerfConfig().max_ltime_jump * 4
    pp = wire.PushPull(True, (wire.PushNodeState("me", bytes([10, 0, 0, 1]), 7946, b"", old,
                                                 State.DEAD, VSN),))
    s.ml.merging_join_reply = True
    s.ml.merge_remote_state(0.0, pp)
    s.ml.merging_join_reply = False
    assert s.ml.local.incarnation == old + 1
