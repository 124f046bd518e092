"""The Serf layer on one core, driven by hand: tags, Lamport clocks and intents, the event
dedup buffer, push-pull user state, size limits, queries, and serf 0.9.4's golden bytes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import msgpack
import pytest

from gossip import wire
from gossip.config import SendPacket
from gossip.crypto import Keyring, decode_key
from gossip.errors import DecodeError
from gossip.membership import Member
from gossip.serf import (
    MemberEvent,
    MemberStatus,
    Serf,
    SerfConfig,
    SerfError,
    SerfMsg,
    UserEvent,
    decode_tags,
    encode_tags,
)
from gossip.serf.reconnect import RECONNECT_SOON
from gossip.state import State

GOLDEN = Path(__file__).parents[1] / "golden"
VSN = bytes([1, 5, 2, 2, 5, 5])


def serf(name: str = "me", config: SerfConfig | None = None, **tags: str) -> Serf:
    """A fresh core, its own "join" member event already taken."""
    s = Serf(name, ("10.0.0.1", 7946), rng=random.Random(0), now=0.0, tags=tags,
             config=config)
    assert [(d.kind, d.member.name) for d in s.take_deliveries()
            if isinstance(d, MemberEvent)] == [("join", name)]
    return s


def msg(t: SerfMsg, **body: object) -> bytes:
    return bytes([t]) + wire.packb(body)


def events(s: Serf) -> list[UserEvent]:
    return [d for d in s.take_deliveries() if isinstance(d, UserEvent)]


def member(name: str, n: int = 2, meta: bytes = b"\xff\x80") -> Member:
    return Member(name, f"10.0.0.{n}", 7946, meta, 1, State.ALIVE, 0.0, VSN)


# --- tags -------------------------------------------------------------------------------------


def test_tags_encoding() -> None:
    assert encode_tags({}) == b"\xff\x80"
    meta = encode_tags({"role": "web", "dc": "east"})
    assert meta[0] == 0xFF and msgpack.unpackb(meta[1:]) == {"role": "web", "dc": "east"}
    assert decode_tags(meta) == {"role": "web", "dc": "east"}
    assert decode_tags(b"") == {}
    assert decode_tags(b"legacy-role") == {"role": "legacy-role"}  # protocol < 3
    assert decode_tags(b"\xff\xc1") == {} and decode_tags(b"\xff\x93\x01\x02\x03") == {}
    d = decode_tags(meta)
    d["x"] = "mutated"
    assert decode_tags(meta) == {"role": "web", "dc": "east"}  # callers get their own dict


def test_node_meta_carries_tags_and_is_bounded() -> None:
    s = serf(role="db")
    assert s.ml.local.meta == encode_tags({"role": "db"})
    with pytest.raises(SerfError):
        serf(big="x" * 600)


def test_set_tags_bumps_incarnation() -> None:
    s = serf(role="a")
    inc = s.ml.local.incarnation
    s.set_tags(1.0, {"role": "b"})
    assert s.ml.local.incarnation == inc + 1
    assert decode_tags(s.ml.local.meta) == {"role": "b"}
    assert s.members["me"].tags == {"role": "b"}


# --- clocks and intents ----------------------------------------------------------------------


def test_lamport_rules_for_events() -> None:
    s = serf()
    assert (s.clock.time(), s.event_clock.time(), s.query_clock.time()) == (1, 1, 1)
    assert s.user_event(0.0, "a", b"") == 1  # LTime is the time *before* the increment
    assert s.user_event(0.0, "b", b"") == 2
    s.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=100, Name="c", Payload=b"", CC=False))
    assert s.event_clock.time() == 101  # witnessed
    assert s.user_event(0.0, "d", b"") == 101
    assert [e.ltime for e in events(s)] == [1, 2, 100, 101]


def test_join_intent_before_the_member_is_known_is_kept() -> None:
    s = serf()
    s.notify_msg(0.0, msg(SerfMsg.JOIN, LTime=7, Node="b"))
    assert s.clock.time() == 8 and "b" in s.recent_intents
    s.notify_join(0.0, member("b"))
    assert s.members["b"].status_ltime == 7 and s.members["b"].status is MemberStatus.ALIVE
    assert len(s.intents) == 1  # re-gossiped once
    s.notify_msg(0.0, msg(SerfMsg.JOIN, LTime=7, Node="b"))  # not newer: not re-gossiped
    assert len(s.intents) == 1 and s.metrics.intents_received == 2


def test_leave_intent_then_memberlist_leave_means_left() -> None:
    s = serf()
    s.notify_join(0.0, member("b"))
    s.take_deliveries()
    s.notify_msg(1.0, msg(SerfMsg.LEAVE, LTime=5, Node="b", Prune=False))
    assert s.members["b"].status is MemberStatus.LEAVING
    m = member("b")
    m.state = State.LEFT
    s.notify_leave(2.0, m)
    assert s.members["b"].status is MemberStatus.LEFT
    assert [(d.kind, d.member.name) for d in s.take_deliveries()
            if isinstance(d, MemberEvent)] == [("leave", "b")]
    s.notify_msg(3.0, msg(SerfMsg.LEAVE, LTime=4, Node="b", Prune=False))  # older: ignored
    assert s.metrics.intents_received == 2 and len(s.intents) == 1


def test_failure_without_intent_is_failed_and_a_late_leave_makes_it_left() -> None:
    s = serf()
    s.notify_join(0.0, member("b"))
    m = member("b")
    m.state = State.DEAD
    s.notify_leave(1.0, m)
    assert s.members["b"].status is MemberStatus.FAILED
    s.notify_msg(2.0, msg(SerfMsg.LEAVE, LTime=9, Node="b", Prune=True))  # force-leave + prune
    assert "b" not in s.members
    kinds = [d.kind for d in s.take_deliveries() if isinstance(d, MemberEvent)]
    assert kinds == ["join", "failed", "leave", "reap"]


def test_failed_and_left_members_are_reaped_once_due_even_if_nothing_changes_meanwhile() -> None:
    """The reaper skips its member scan while the table is unchanged and nothing can be due;
    a member still goes exactly when its timeout has passed, checked every reap_interval."""
    s = serf(config=SerfConfig(reconnect_timeout=100.0, tombstone_timeout=40.0,
                               reap_interval=15.0))
    for name, n in (("b", 2), ("c", 3), ("d", 4)):
        s.notify_join(0.0, member(name, n))
    for name, state, t in (("b", State.DEAD, 1.0), ("c", State.LEFT, 2.0)):
        m = member(name)
        m.state = state
        if state is State.LEFT:
            s.notify_msg(t, msg(SerfMsg.LEAVE, LTime=5, Node=name, Prune=False))
        s.notify_leave(t, m)
    assert s.members["b"].status is MemberStatus.FAILED
    assert s.members["c"].status is MemberStatus.LEFT
    s.take_deliveries()
    reaped: list[tuple[float, str]] = []
    t = 0.0
    while t < 130.0:  # the core's own ticks at every reap_interval
        t = s.next_deadline() if s.next_deadline() > t else t + 0.5
        s.tick(t)
        reaped += [(t, d.member.name) for d in s.take_deliveries()
                   if isinstance(d, MemberEvent) and d.kind == "reap"]
    # c (left at 2 s, tombstone 40 s) at the first reap after 42 s, b (failed at 1 s,
    # reconnect 100 s) at the first after 101 s; d, alive, never
    assert [name for _, name in reaped] == ["c", "b"]
    (tc, _), (tb, _) = reaped
    assert 42.0 < tc <= 42.0 + 15.0 and 101.0 < tb <= 101.0 + 15.0
    assert set(s.members) == {"me", "d"}


def test_a_leave_intent_about_us_is_refuted() -> None:
    s = serf()
    s.notify_msg(0.0, msg(SerfMsg.LEAVE, LTime=5, Node="me", Prune=False))
    assert s.members["me"].status is MemberStatus.ALIVE
    queued = s.intents.get(3, 1400, 2)
    assert len(queued) == 1 and queued[0][0] == SerfMsg.JOIN
    assert msgpack.unpackb(queued[0][1:])["LTime"] > 5


def test_force_leave_of_unknown_member() -> None:
    assert not serf().force_leave(0.0, "ghost")


# --- the reconnector's view of the member table ----------------------------------------------


def _recount(s: Serf) -> tuple[int, list[int], list[float], list[int]]:
    """From the whole member table: other members alive (at least 1), the failed members in
    table order, and their early retries' due times and members (ties in table order)."""
    ms = list(s.members.values())
    failed = [m for m in ms if m.status is MemberStatus.FAILED]
    alive = sum(1 for m in ms if m.status is MemberStatus.ALIVE)
    sched = sorted((m.leave_time + step, i) for i, m in enumerate(failed)
                   for step in RECONNECT_SOON)
    return (max(1, alive - 1), [id(m) for m in failed], [t for t, _ in sched],
            [id(failed[i]) for _, i in sched])


@pytest.mark.parametrize("seed", range(6))
def test_reconnector_counts_follow_the_member_table(seed: int) -> None:
    """Joins, failures, returns, leave intents, leaves, reaps and re-joins of a reaped name in
    random order: after each, the reconnector's incrementally kept counts equal a recount."""
    rng = random.Random(seed)
    s = serf(config=SerfConfig(reconnect_timeout=3.0, tombstone_timeout=4.0))
    r = s.reconnector
    names = [f"m{i}" for i in range(12)]
    ltime, now = 10, 0.0
    for _ in range(400):
        now += rng.choice((0.0, 0.25, 0.5, 1.0))  # equal times: ties between members' retries
        name = rng.choice(names)
        m = member(name, 2 + names.index(name))
        op = rng.randrange(6)
        if op == 0:
            s.notify_join(now, m)  # new, or alive again (after failing, leaving or left)
        elif op in (1, 2):
            m.state = State.DEAD if op == 1 else State.LEFT
            s.notify_leave(now, m)  # alive -> failed, leaving -> left
        elif op == 3:
            ltime += 1
            kind = rng.choice((SerfMsg.JOIN, SerfMsg.LEAVE))
            s.notify_msg(now, msg(kind, LTime=ltime, Node=name, Prune=rng.random() < 0.2))
        elif op == 4:
            s._reap(now)
        else:
            before = r.next_due
            s.notify_leave(now, m)
            if name in s.members and s.members[name].status is MemberStatus.FAILED \
                    and s.members[name].leave_time == now:
                assert r.next_due == min(before, now + RECONNECT_SOON[0])
        assert (r._alive_others, [id(x) for x in r._failed], r._dues,
                [id(x) for x in r._whose]) == _recount(s)
    s.take_deliveries()


# --- events ------------------------------------------------------------------------------------


def test_event_dedupe_buffer() -> None:
    s = serf()
    e = msg(SerfMsg.USER_EVENT, LTime=3, Name="deploy", Payload=b"v1", CC=False)
    s.notify_msg(0.0, e)
    s.notify_msg(0.0, e)
    s.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=3, Name="deploy", Payload=b"v2", CC=False))
    s.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=4, Name="deploy", Payload=b"v1", CC=False))
    assert [(x.ltime, x.payload) for x in events(s)] == [(3, b"v1"), (3, b"v2"), (4, b"v1")]
    assert s.metrics.events_deduped == 1 and s.metrics.events_received == 3
    assert len(s.event_queue) == 3  # new ones are re-gossiped, the duplicate is not


def test_too_old_events_are_dropped() -> None:
    s = serf(config=SerfConfig(event_dedup_window=16))
    s.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=100, Name="new", Payload=b"", CC=False))
    # clock 101, buffer 16: LTime 85 is the oldest still accepted (Serf: LTime < 101 - 16)
    s.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=85, Name="edge", Payload=b"", CC=False))
    s.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=84, Name="old", Payload=b"", CC=False))
    s.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=50, Name="older", Payload=b"", CC=False))
    assert [x.name for x in events(s)] == ["new", "edge"]
    assert s.metrics.events_too_old == 2


def test_event_size_limit() -> None:
    s = serf()
    with pytest.raises(SerfError, match="512"):
        s.user_event(0.0, "n", b"x" * 512)
    assert s.event_clock.time() == 1 and s.take_deliveries() == [] and not s.event_queue
    assert s.user_event(0.0, "n", b"x" * 511) == 1
    big = serf(config=SerfConfig(event_size_limit=9216))
    big.user_event(0.0, "n", b"x" * 3000)
    with pytest.raises(SerfError):
        serf(config=SerfConfig(event_size_limit=9217))


def test_large_events_go_over_tcp() -> None:
    s = serf(config=SerfConfig(event_size_limit=9216))
    for i in range(5):
        s.notify_join(0.0, member(f"p{i}", i + 2))
        s.ml.members[f"p{i}"] = member(f"p{i}", i + 2)
    s.user_event(0.0, "big", b"y" * 3000)
    reqs = [e for e in s.take_effects() if not isinstance(e, SendPacket)]
    assert len(reqs) == 3 and not s.event_queue  # gossip_nodes peers, not the UDP queue
    sm = wire.parse_stream(reqs[0].data)
    assert sm.kind == wire.MsgType.USER and isinstance(sm.message, wire.UserMsg)
    assert sm.message.payload[0] == SerfMsg.USER_EVENT


# --- push-pull user state ----------------------------------------------------------------


def _reference_state(s: Serf) -> bytes:
    """local_state() as a straight msgpack of the whole dict (what the cache must equal)."""
    slots = sorted(s.dedup.slots.values(), key=lambda x: x.ltime)[-s.cfg.push_pull_events:]
    return bytes([2]) + wire.packb({
        "LTime": s.clock.time(),
        "StatusLTimes": {n: m.status_ltime for n, m in s.members.items()},
        "LeftMembers": [n for n, m in s.members.items() if m.status is MemberStatus.LEFT],
        "EventLTime": s.event_clock.time(),
        "Events": [{"LTime": x.ltime, "Events": [{"Name": n, "Payload": p}
                                                 for n, p in x.events]} for x in slots],
        "QueryLTime": s.query_clock.time()})


def test_push_pull_user_state_round_trip() -> None:
    a = serf("a")
    a.notify_join(0.0, member("b"))
    a.notify_join(0.0, member("c", 3))
    a.notify_msg(0.0, msg(SerfMsg.JOIN, LTime=4, Node="b"))
    a.notify_msg(0.0, msg(SerfMsg.LEAVE, LTime=6, Node="c", Prune=False))
    gone = member("c", 3)
    gone.state = State.LEFT
    a.notify_leave(0.0, gone)
    for i in range(3):
        a.user_event(0.0, "e", bytes([i]))
    state = a.local_state(False)
    assert state == _reference_state(a)
    body = msgpack.unpackb(state[1:])
    assert body["LeftMembers"] == ["c"] and body["StatusLTimes"]["b"] == 4

    b = serf("b")
    b.merge_remote_state(1.0, state, False)
    assert [x.payload for x in events(b)] == [b"\x00", b"\x01", b"\x02"]
    assert not b.event_queue  # learned by push-pull: delivered, not re-gossiped
    assert b.clock.time() >= 7 and b.event_clock.time() == a.event_clock.time()
    assert b.recent_intents["c"][0] is SerfMsg.LEAVE
    b.merge_remote_state(2.0, state, False)
    assert events(b) == []  # replays are deduplicated


def test_join_ignoring_old_events_sets_the_minimum_time() -> None:
    a = serf("a")
    for i in range(4):
        a.user_event(0.0, "old", bytes([i]))
    b = serf("b")
    b._ignore_old = True  # as Serf.join(..., ignore_old=True) does while joining
    b.merge_remote_state(0.0, a.local_state(True), True)
    assert events(b) == [] and b.event_min_time == 5
    b.notify_msg(0.0, msg(SerfMsg.USER_EVENT, LTime=5, Name="new", Payload=b"", CC=False))
    assert [x.name for x in events(b)] == ["new"]


def test_local_state_cache_follows_every_change() -> None:
    s = serf("a")
    assert s.local_state(False) == _reference_state(s)
    steps = [
        lambda: s.notify_join(0.0, member("b")),
        lambda: s.notify_msg(0.0, msg(SerfMsg.JOIN, LTime=9, Node="b")),
        lambda: s.user_event(0.0, "x", b"1"),
        lambda: s.notify_msg(0.0, msg(SerfMsg.LEAVE, LTime=11, Node="b", Prune=False)),
        lambda: s.notify_leave(0.0, Member("b", "10.0.0.2", 7946, b"", 1, State.LEFT, 0.0)),
        lambda: s.notify_msg(0.0, msg(SerfMsg.LEAVE, LTime=12, Node="b", Prune=True)),
        lambda: s.witness_event_time(50),
    ]
    for step in steps:
        step()
        assert s.local_state(False) == _reference_state(s)


def test_bad_push_pull_state() -> None:
    s = serf()
    s.merge_remote_state(0.0, b"", False)  # no user state: nothing to do
    s.merge_remote_state(0.0, b"\x07whatever", False)  # not Serf's: ignored
    for bad in (b"\x02\xc1", b"\x02" + wire.packb({"StatusLTimes": [1]}),
                b"\x02" + wire.packb({"Events": 5}), b"\x02" + wire.packb({"LTime": -1})):
        with pytest.raises(DecodeError):
            s.merge_remote_state(0.0, bad, False)


# --- queries and bad messages ---------------------------------------------------------------


def test_query_is_acked_to_the_asker_relayed_and_deduplicated() -> None:
    s = serf()
    q = msg(SerfMsg.QUERY, LTime=3, ID=77, Addr=bytes([10, 1, 1, 1]), Port=7373,
            SourceNode="asker", Filters=[], Flags=1, RelayFactor=0, Timeout=1_000_000_000,
            Name="ping", Payload=b"")
    s.notify_msg(0.0, q)
    sent = [e for e in s.take_effects() if isinstance(e, SendPacket)]
    assert [e.addr for e in sent] == [("10.1.1.1", 7373)]
    assert sent[0].data[:2] == bytes([wire.MsgType.USER, SerfMsg.QUERY_RESPONSE])
    ack = msgpack.unpackb(sent[0].data[2:])
    assert ack == {"LTime": 3, "ID": 77, "From": "me", "Flags": 1, "Payload": None}
    assert len(s.query_queue) == 1 and s.query_clock.time() == 4
    s.notify_msg(0.0, q)  # the same query again: no second ack, no second relay
    assert s.take_effects() == [] and len(s.query_queue) == 1
    s.notify_msg(0.0, msg(SerfMsg.QUERY, LTime=3, ID=78, Flags=2))  # no ack, no rebroadcast
    assert s.take_effects() == [] and len(s.query_queue) == 1


def test_bad_serf_messages_raise_decode_error_and_change_nothing() -> None:
    s = serf()
    before = (s.clock.time(), s.event_clock.time(), dict(s.recent_intents))
    for bad in (b"", b"\x63", b"\x03\xc1", b"\x01" + wire.packb([1]),
                msg(SerfMsg.USER_EVENT, LTime="x", Name="n"),
                msg(SerfMsg.JOIN, LTime=1, Node=5)):
        with pytest.raises(DecodeError):
            s.notify_msg(0.0, bad)
    assert (s.clock.time(), s.event_clock.time(), dict(s.recent_intents)) == before
    assert s.take_deliveries() == [] and s.metrics.decode_errors == 6


# --- golden bytes from serf 0.9.4 ------------------------------------------------------------


def test_serf_golden_push_pull_user_state_delivers_its_events() -> None:
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    data = (GOLDEN / "serf_tcp_plain_pushpull_join.bin").read_bytes()
    pp = wire.parse_stream(data).push_pull
    assert pp is not None
    s = serf("golden-py")
    s.merge_remote_state(0.0, pp.user_state, False)
    got = events(s)
    assert sorted(e.name for e in got) == [f"g{i:02d}" for i in range(60)]
    assert manifest["cases"]["plain"]["events_fired"] == 60
    assert all(len(e.payload) == 440 for e in got)
    assert "serf1" in s.recent_intents


def test_serf_golden_udp_gossip_is_understood() -> None:
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    kr = Keyring([decode_key((GOLDEN / manifest["key_file"]).read_text().strip())])
    s = Serf("golden-py", ("127.0.0.1", 7946), rng=random.Random(0), now=0.0, keyring=kr)
    for name, info in manifest["files"].items():
        if info["transport"] == "udp" and info["case"] == "encrypted":
            s.receive_packet(0.0, ("127.0.0.2", 1), (GOLDEN / name).read_bytes())
    names = {e.name for e in events(s)}
    assert len(names) == manifest["cases"]["encrypted"]["events_fired"]
    s.tick(s.ml.admission.deadline())  # a stranger's news: admitted once serf1 answers
    p = s.ml.admission.pending["serf1"]
    s.receive_packet(0.0, (p.addr, p.alive.port), kr.encrypt_packet(wire.encode(wire.Ack(p.seq))))
    assert "serf1" in s.ml.members and s.members["serf1"].status is MemberStatus.ALIVE
