"""The SWIM core with two or three Memberlist instances wired together by hand.

``Net`` delivers every effect at once (no delay) and lets a test drop datagrams or fail TCP
exchanges per link, then advances time deadline by deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from gossip import wire
from gossip.config import Addr, GossipConfig, SendPacket, StreamRequest
from gossip.errors import DecodeError
from gossip.membership import Delegate, Member, Memberlist
from gossip.state import State
from gossip.suspicion import suspicion_timeout

CFG = GossipConfig()


class Recorder(Delegate):
    def __init__(self) -> None:
        self.joins: list[str] = []
        self.leaves: list[tuple[str, State]] = []
        self.updates: list[str] = []
        self.msgs: list[bytes] = []
        self.states: list[tuple[bytes, bool]] = []
        self.user_state = b""

    def notify_join(self, now: float, m: Member) -> None:
        self.joins.append(m.name)

    def notify_leave(self, now: float, m: Member) -> None:
        self.leaves.append((m.name, m.state))

    def notify_update(self, now: float, m: Member) -> None:
        self.updates.append(m.name)

    def notify_msg(self, now: float, msg: bytes) -> None:
        if msg[:1] == b"!":
            raise DecodeError("bad delegate message")
        self.msgs.append(msg)

    def local_state(self, join: bool) -> bytes:
        return self.user_state

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        self.states.append((buf, join))


class Net:
    def __init__(self, names: list[str], cfg: GossipConfig = CFG) -> None:
        self.now = 0.0
        self.addr: dict[str, Addr] = {n: (f"10.0.0.{i + 1}", 7946) for i, n in enumerate(names)}
        self.name_of = {a: n for n, a in self.addr.items()}
        self.rec = {n: Recorder() for n in names}
        self.ml = {n: Memberlist(cfg, n, self.addr[n], rng=random.Random(i), now=0.0,
                                 delegate=self.rec[n]) for i, n in enumerate(names)}
        self.drop: Callable[[str, str], bool] = lambda src, dst: False
        self.tcp_ok: Callable[[str, str], bool] = lambda src, dst: True
        self.sent: list[tuple[str, str, list[wire.Message]]] = []

    def flush(self) -> None:
        for _ in range(10_000):
            moved = False
            for src, core in self.ml.items():
                for eff in core.take_effects():
                    moved = True
                    dst = self.name_of.get(eff.addr)
                    if isinstance(eff, SendPacket):
                        if dst is not None:
                            self.sent.append((src, dst, wire.decode_packet(eff.data)))
                        if dst is not None and not self.drop(src, dst):
                            self.ml[dst].receive_packet(self.now, self.addr[src], eff.data)
                    elif isinstance(eff, StreamRequest):
                        reply = None
                        if dst is not None and self.tcp_ok(src, dst):
                            out = self.ml[dst].handle_stream(
                                self.now, self.addr[src], wire.parse_stream(eff.data))
                            reply = wire.parse_stream(out) if out is not None else None
                        if eff.expect_reply:
                            core.stream_reply(self.now, eff.token, reply)
            if not moved:
                return
        raise AssertionError("effects never settled")

    def run(self, until: float) -> None:
        self.flush()
        for _ in range(100_000):
            t = min(c.next_deadline() for c in self.ml.values())
            if t > until:
                break
            self.now = max(self.now, t)
            for c in self.ml.values():
                if c.next_deadline() <= self.now:
                    c.tick(self.now)
            self.flush()
        self.now = until

    def join_all(self) -> None:
        first = next(iter(self.ml))
        for name, core in self.ml.items():
            if name != first:
                core.start_push_pull(self.now, self.addr[first], join=True)
                self.flush()
        for core in self.ml.values():  # everyone learns everyone through the seed's reply
            core.start_push_pull(self.now, self.addr[first], join=False)
            self.flush()
        for core in self.ml.values():
            assert len(core.alive_members()) == len(self.ml)

    def kinds(self, src: str, dst: str) -> list[type]:
        return [type(m) for s, d, msgs in self.sent if (s, d) == (src, dst) for m in msgs]


def test_join_by_push_pull_exchanges_members_and_user_state() -> None:
    net = Net(["a", "b"])
    net.rec["a"].user_state = b"state-of-a"
    net.rec["b"].user_state = b"state-of-b"
    done: list[bool] = []
    net.ml["b"].start_push_pull(0.0, net.addr["a"], join=True, done=lambda t, ok: done.append(ok))
    net.flush()
    assert done == [True]
    assert net.rec["a"].joins == ["a", "b"][1:] and net.rec["b"].joins == ["a"]
    assert net.rec["a"].states == [(b"state-of-b", True)]
    assert net.rec["b"].states == [(b"state-of-a", True)]
    fail: list[bool] = []
    net.tcp_ok = lambda s, d: False
    net.ml["b"].start_push_pull(0.0, net.addr["a"], join=False, done=lambda t, ok: fail.append(ok))
    net.flush()
    assert fail == [False]


def test_ping_ack() -> None:
    net = Net(["a", "b"])
    net.join_all()
    net.sent.clear()
    net.run(2.0)
    a = net.ml["a"]
    assert a.metrics.probes >= 1 and a.metrics.probe_failures == 0
    pings = [m for s, d, msgs in net.sent if (s, d) == ("a", "b") for m in msgs
             if isinstance(m, wire.Ping)]
    assert pings and pings[0].node == "b" and pings[0].source_node == "a"
    assert pings[0].source_addr == bytes([10, 0, 0, 1]) and pings[0].source_port == 7946
    assert wire.Ack in net.kinds("b", "a")
    assert a.awareness.score == 0 and a.members["b"].state is State.ALIVE


def test_indirect_probe_through_a_relay() -> None:
    net = Net(["a", "b", "c"])
    net.join_all()
    net.drop = lambda s, d: {s, d} == {"a", "b"}  # a and b cannot talk directly over UDP
    net.tcp_ok = lambda s, d: {s, d} != {"a", "b"}  # nor over TCP
    net.sent.clear()
    net.run(12.0)
    a = net.ml["a"]
    assert a.metrics.indirect_probes >= 1
    assert wire.IndirectPingReq in net.kinds("a", "c")
    assert wire.Ping in net.kinds("c", "b") and wire.Ack in net.kinds("c", "a")
    assert a.metrics.suspicions == 0 and a.members["b"].state is State.ALIVE
    req = [m for s, d, msgs in net.sent if (s, d) == ("a", "c") for m in msgs
           if isinstance(m, wire.IndirectPingReq)][0]
    assert (req.node, req.target, req.port, req.nack) == ("b", bytes([10, 0, 0, 2]), 7946, True)


def test_relay_sends_nack_and_missed_nacks_raise_awareness() -> None:
    net = Net(["a", "b", "c"])
    net.join_all()
    net.drop = lambda s, d: "b" in (s, d)  # b is unreachable by anyone
    net.tcp_ok = lambda s, d: "b" not in (s, d)
    net.sent.clear()
    a = net.ml["a"]
    # run until a's first probe of b has failed
    for _ in range(200):
        net.run(net.now + 0.1)
        if a.metrics.probe_failures:
            break
    assert wire.Nack in net.kinds("c", "a")
    assert a.awareness.score == 0  # the relay answered with a nack: not our fault
    assert a.members["b"].state is State.SUSPECT

    net2 = Net(["a", "b", "c"])
    net2.join_all()
    net2.drop = lambda s, d: "b" in (s, d) or {s, d} == {"a", "c"}  # no nack comes back
    net2.tcp_ok = lambda s, d: False
    a2 = net2.ml["a"]
    for _ in range(200):
        net2.run(net2.now + 0.1)
        if a2.metrics.probe_failures:
            break
    assert a2.awareness.score >= 1


def test_tcp_fallback_ping_saves_a_node_behind_udp_loss() -> None:
    net = Net(["a", "b"])
    net.join_all()
    net.drop = lambda s, d: True  # no UDP at all; TCP still works
    net.run(30.0)
    a = net.ml["a"]
    assert a.metrics.tcp_pings >= 1 and a.metrics.suspicions == 0
    assert a.members["b"].state is State.ALIVE


def test_ping_for_another_node_is_ignored() -> None:
    net = Net(["a", "b"])
    net.join_all()
    net.ml["b"].receive_packet(0.0, net.addr["a"], wire.encode(wire.Ping(9, "not-b")))
    net.flush()
    assert net.ml["b"].metrics.wrong_node_pings == 1
    assert not net.ml["b"].take_effects()


def test_refuting_a_suspicion_raises_our_awareness() -> None:
    """Lifeguard: being suspected hints that we are the slow one, so refuting costs us one
    point of local health (our probe timeouts stretch until acks bring it back down)."""
    net = Net(["a", "b", "c"])
    net.join_all()
    b = net.ml["b"]
    assert b.awareness.score == 0
    b.receive_packet(net.now, net.addr["c"],
                     wire.encode(wire.Suspect(b.local.incarnation, "b", "c")))
    assert b.metrics.refutes == 1 and b.awareness.score == 1


def test_suspect_is_refuted_with_a_higher_incarnation() -> None:
    net = Net(["a", "b", "c"])
    net.join_all()
    b_inc = net.ml["b"].local.incarnation
    net.ml["a"].receive_packet(net.now, net.addr["c"], wire.encode(wire.Suspect(b_inc, "b", "c")))
    assert net.ml["a"].members["b"].state is State.SUSPECT
    net.run(net.now + 2.0)  # a gossips the suspicion; b hears it and refutes
    b = net.ml["b"]
    assert b.local.incarnation == b_inc + 1 and b.metrics.refutes == 1
    for name in ("a", "c"):
        m = net.ml[name].members["b"]
        assert (m.state, m.incarnation) == (State.ALIVE, b_inc + 1)
    assert net.ml["a"]._suspicions == {}  # the timer is gone
    net.run(net.now + 60.0)
    assert all(rec.leaves == [] for rec in net.rec.values())


def test_stale_messages_change_nothing() -> None:
    net = Net(["a", "b"])
    net.join_all()
    a = net.ml["a"]
    a.receive_packet(0.0, net.addr["b"], wire.encode(wire.Alive(5, "b", bytes([10, 0, 0, 2]),
                                                                7946, b"", CFG_VSN)))
    assert a.members["b"].incarnation == 5
    for old in (wire.Suspect(4, "b", "x"), wire.Dead(4, "b", "x"),
                wire.Alive(5, "b", bytes([10, 0, 0, 2]), 7946, b"m", CFG_VSN)):
        a.receive_packet(0.0, net.addr["b"], wire.encode(old))
    assert (a.members["b"].state, a.members["b"].meta) == (State.ALIVE, b"")
    # an alive from another address is a conflict, not a takeover
    a.receive_packet(0.0, net.addr["b"], wire.encode(
        wire.Alive(9, "b", bytes([10, 9, 9, 9]), 7946, b"", CFG_VSN)))
    assert a.members["b"].addr == "10.0.0.2" and a.members["b"].incarnation == 5
    assert a.metrics.extra["address_conflicts"] == 1


CFG_VSN = bytes([1, 5, 2, 2, 5, 5])


def test_suspicion_times_out_to_dead_and_the_dead_node_refutes() -> None:
    net = Net(["a", "b", "c"])
    net.join_all()
    net.drop = lambda s, d: "b" in (s, d)
    net.tcp_ok = lambda s, d: "b" not in (s, d)
    net.run(20.0)  # 3 nodes: no confirmations expected, so the 4 s minimum applies
    for name in ("a", "c"):
        assert net.ml[name].members["b"].state is State.DEAD
        assert net.rec[name].leaves == [("b", State.DEAD)]
    assert net.ml["b"].local.state is State.ALIVE  # b never heard, it still thinks it lives
    # when b hears of its death it refutes, and the others take it back
    net.drop = lambda s, d: False
    net.tcp_ok = lambda s, d: True
    net.ml["a"].start_push_pull(net.now, net.addr["b"], join=False)
    net.run(net.now + 5.0)
    assert net.ml["b"].metrics.refutes >= 1
    for name in ("a", "c"):
        assert net.ml[name].members["b"].state is State.ALIVE
        assert "b" in net.rec[name].joins[1:]


def test_confirmations_bring_the_deadline_forward() -> None:
    net = Net(["a", "b", "c", "d", "e"])
    net.join_all()
    a = net.ml["a"]
    a.receive_packet(net.now, net.addr["c"], wire.encode(wire.Suspect(1, "b", "c")))
    timer = a._suspicions["b"]
    lo = suspicion_timeout(CFG.suspicion_mult, 5, CFG.probe_interval)
    assert timer.deadline == pytest.approx(net.now + 6 * lo)
    assert a.next_deadline() <= timer.deadline
    a.receive_packet(net.now, net.addr["d"], wire.encode(wire.Suspect(1, "b", "d")))
    a.receive_packet(net.now, net.addr["e"], wire.encode(wire.Suspect(1, "b", "e")))
    assert timer.deadline == pytest.approx(net.now + lo)  # k = 2 confirmations: the minimum
    a.tick(net.now + lo)
    assert a.members["b"].state is State.DEAD


def test_graceful_leave_is_left_not_dead() -> None:
    net = Net(["a", "b", "c"])
    net.join_all()
    gone: list[bool] = []
    net.ml["b"].leave(net.now, lambda: gone.append(True))
    net.run(net.now + 3.0)
    assert gone == [True]
    for name in ("a", "c"):
        assert net.ml[name].members["b"].state is State.LEFT
        assert net.rec[name].leaves == [("b", State.LEFT)]
    assert net.ml["b"].metrics.refutes == 0
    assert net.ml["b"].local.state is State.LEFT


def vouch(core: Memberlist, name: str) -> None:
    """Answer the verification ping ``core`` sent to a name a stranger told it about."""
    core.tick(core.admission.deadline())  # its verification ping goes out
    p = core.admission.pending[name]
    core.receive_packet(0.0, (p.addr, p.alive.port), wire.encode(wire.Ack(p.seq)))
    assert name in core.members


def test_push_pull_merge_semantics() -> None:
    net = Net(["a", "b"])
    net.join_all()
    a = net.ml["a"]
    a.receive_packet(0.0, net.addr["b"], wire.encode(wire.Alive(1, "c", bytes([10, 0, 0, 3]),
                                                                7946, b"", CFG_VSN)))
    a.receive_packet(0.0, net.addr["b"], wire.encode(wire.Alive(1, "d", bytes([10, 0, 0, 4]),
                                                                7946, b"", CFG_VSN)))
    ip = bytes([10, 0, 0, 9])
    pp = wire.PushPull(False, (
        wire.PushNodeState("c", bytes([10, 0, 0, 3]), 7946, b"", 1, State.DEAD, CFG_VSN),
        wire.PushNodeState("d", bytes([10, 0, 0, 4]), 7946, b"", 1, State.LEFT, CFG_VSN),
        wire.PushNodeState("e", bytes(10) + b"\xff\xff" + ip, 7000, b"m", 3, State.ALIVE,
                           CFG_VSN),
        wire.PushNodeState("b", bytes([10, 0, 0, 2]), 7946, b"x", 2, State.ALIVE, CFG_VSN),
        wire.PushNodeState("a", bytes([10, 0, 0, 1]), 7946, b"", 4, State.SUSPECT, CFG_VSN),
        wire.PushNodeState("bad", b"\x01\x02", 1, b"", 1, State.ALIVE, CFG_VSN),
    ), b"user")
    a.merge_remote_state(1.0, pp)  # called directly: as if from a stranger
    vouch(a, "e")
    assert a.members["c"].state is State.SUSPECT  # a remote "dead" only makes us suspect
    assert a.members["d"].state is State.LEFT
    e = a.members["e"]  # new member; 16-byte IPv4-mapped address unwrapped
    assert (e.state, e.addr, e.port, e.incarnation) == (State.ALIVE, "10.0.0.9", 7000, 3)
    assert (a.members["b"].incarnation, a.members["b"].meta) == (2, b"x")
    assert net.rec["a"].updates == ["b"]
    assert a.local.incarnation == 5  # accused at 4: refuted with 4 + 1
    assert "bad" not in a.members
    assert net.rec["a"].states[-1] == (b"user", False)


def test_push_pull_request_reflects_every_kind_of_change() -> None:
    """The encoded member table is cached; every change must show in the next push-pull."""
    net = Net(["a", "b", "c", "d"])
    net.join_all()
    a = net.ml["a"]

    def table() -> dict[str, tuple[int, int, bytes]]:
        pp = wire.parse_stream(a.push_pull_request(False)).push_pull
        assert pp is not None
        return {n.name: (n.incarnation, n.state, n.meta) for n in pp.nodes}

    def truth() -> dict[str, tuple[int, int, bytes]]:
        return {m.name: (m.incarnation, int(m.state), m.meta) for m in a.members.values()}

    assert table() == truth()
    a.receive_packet(1.0, net.addr["b"], wire.encode(wire.Suspect(1, "b", "c")))
    assert table() == truth() and table()["b"][1] == State.SUSPECT
    a.receive_packet(1.0, net.addr["b"], wire.encode(wire.Alive(2, "b", bytes([10, 0, 0, 2]),
                                                                7946, b"new", CFG_VSN)))
    assert table() == truth() and table()["b"] == (2, 0, b"new")
    a.receive_packet(1.0, net.addr["b"], wire.encode(wire.Dead(1, "c", "b")))
    assert table() == truth() and table()["c"][1] == State.DEAD
    a.receive_packet(1.0, net.addr["b"], wire.encode(wire.Suspect(1, "a", "b")))  # refute
    assert table() == truth() and table()["a"][0] == 2
    a.update_meta(1.0)
    assert table() == truth() and table()["a"][0] == 3
    a.reap(100.0)
    assert "c" not in table() and table() == truth()
    a.receive_packet(1.0, net.addr["b"], wire.encode(wire.Dead(1, "d", "d")))
    assert table()["d"][1] == State.LEFT
    a.leave(2.0)
    assert table()["a"][1] == State.LEFT and table() == truth()


def test_reap_forgets_old_dead_and_left_members_only() -> None:
    net = Net(["a", "b", "c", "d"])
    net.join_all()
    a = net.ml["a"]
    a.receive_packet(10.0, net.addr["b"], wire.encode(wire.Dead(1, "b", "c")))
    a.receive_packet(10.0, net.addr["c"], wire.encode(wire.Dead(1, "c", "c")))
    a.receive_packet(35.0, net.addr["d"], wire.encode(wire.Dead(1, "d", "c")))
    assert a.reap(39.0) == []  # gossip_to_the_dead_time (30 s) not over yet
    assert sorted(a.reap(41.0)) == ["b", "c"]
    assert sorted(a.members) == ["a", "d"]
    assert a.reap(66.0) == ["d"]
    assert a.alive_members() == [a.local]


def test_bad_delegate_message_does_not_hide_the_rest_of_the_packet() -> None:
    """memberlist handles each part of a compound on its own: one undecodable delegate
    message must not drop the alive that follows it (the error is still reported)."""
    net = Net(["a"])
    a = net.ml["a"]
    packet = wire.make_compound([
        b"\x08!garbage",
        wire.encode(wire.Alive(1, "z", bytes([10, 0, 0, 26]), 7946, b"", CFG_VSN)),
        b"\x08ok",
    ])
    with pytest.raises(DecodeError):
        a.receive_packet(0.0, ("10.0.0.26", 7946), packet)
    assert "z" in a.admission.pending and net.rec["a"].msgs == [b"ok"]
    assert a.metrics.decode_errors == 1


def test_receive_packet_rejects_garbage_and_counts_it() -> None:
    a = Net(["a"]).ml["a"]
    for bad in (b"", b"\x07\x05", b"\xfe", wire.add_crc(wire.encode(wire.Ack(1)))[:-1]):
        with pytest.raises(DecodeError):
            a.receive_packet(0.0, ("10.0.0.9", 1), bad)
    assert a.metrics.decode_errors == 4
    assert a.members.keys() == {"a"}


def test_idle_core_does_not_wake_for_gossip() -> None:
    net = Net(["a", "b"])
    net.join_all()
    net.run(60.0)  # queues drained
    a = net.ml["a"]
    assert len(a.queue) == 0
    assert a.next_deadline() >= min(a._next_probe, a._next_push_pull)
    a.gossip_soon()
    assert a.next_deadline() == float("-inf")
