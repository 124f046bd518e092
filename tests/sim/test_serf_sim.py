"""Serf behaviour in small simulated clusters (5..50 nodes): user events under loss, bursts,
partitions and late joins; graceful leave; refutation; Lifeguard; large events over TCP."""

from __future__ import annotations

import pytest

from gossip import wire
from gossip.serf import MemberStatus, SerfConfig
from gossip.state import State
from gossip.suspicion import suspicion_timeout
from tests.sim.cluster import Link, SerfCluster, SimSerf


def _cluster(n: int, seed: int, loss: float = 0.0, config: SerfConfig | None = None
             ) -> SerfCluster:
    c = SerfCluster(n, seed=seed, link=Link(loss=loss), config=config)
    c.join_all()
    names = {x.name for x in c.nodes}
    c.run_until(lambda: c.all_see(names), timeout=30)
    c.run(5)  # let the join gossip settle
    return c


def _got(c: SerfCluster, node: str, name: str) -> list[bytes]:
    return [e.payload for e in c.user_events[node] if e.name == name]


def _everyone_has(c: SerfCluster, name: str, payloads: list[bytes],
                  nodes: list[SimSerf] | None = None) -> bool:
    want = sorted(payloads)
    return all(sorted(_got(c, n.name, name)) == want for n in nodes or c.live())


@pytest.mark.parametrize("loss", [0.0, 0.2])
def test_user_events_reach_every_node_exactly_once(loss: float) -> None:
    c = _cluster(30, seed=1, loss=loss)
    sent = []
    for i, src in enumerate([0, 7, 19, 29, 7]):
        payload = f"v{i}".encode()
        c.nodes[src].user_event(c.sim.now, "deploy", payload)
        c.sim.poke(c.addr[c.nodes[src].name])
        sent.append(payload)
        c.run(0.3)
    took = c.run_until(lambda: _everyone_has(c, "deploy", sent), timeout=30, step=0.1)
    c.run(10)  # no late duplicates either
    assert _everyone_has(c, "deploy", sent)
    assert took < (3 if loss == 0 else 10)
    assert all(n.metrics.events_too_old == 0 for n in c.nodes)


def test_burst_of_200_events_reaches_every_node() -> None:
    c = _cluster(20, seed=2)
    src = c.nodes[4]
    sent = [f"e{i:03d}".encode() for i in range(200)]
    for p in sent:
        src.user_event(c.sim.now, "burst", p)
    c.sim.poke(c.addr[src.name])
    c.run_until(lambda: _everyone_has(c, "burst", sent), timeout=60, step=0.5)
    assert all(n.metrics.events_too_old == 0 for n in c.nodes)
    ltimes = {e.ltime for e in c.user_events["n0"] if e.name == "burst"}
    assert len(ltimes) == 200  # each event kept its own Lamport time


def test_event_fired_during_partition_reaches_other_side_after_heal() -> None:
    c = _cluster(10, seed=3)
    a = [n.name for n in c.nodes[:5]]
    b = [n.name for n in c.nodes[5:]]
    c.partition(a, b)
    c.run(2)
    c.by_name["n1"].user_event(c.sim.now, "split", b"news")
    c.sim.poke(c.addr["n1"])
    side_a = [c.by_name[x] for x in a]
    side_b = [c.by_name[x] for x in b]
    c.run_until(lambda: _everyone_has(c, "split", [b"news"], side_a), timeout=10, step=0.2)
    c.run(60)  # long enough for gossip to give up on it and for B to fail A
    assert all(_got(c, x, "split") == [] for x in b)
    assert c.sees(side_b, set(a), MemberStatus.FAILED)
    c.heal()
    took = c.run_until(lambda: _everyone_has(c, "split", [b"news"]), timeout=60, step=0.5)
    assert took <= 2 * c.nodes[0].gcfg.reconnect_interval + 5  # by reconnect, not by luck
    c.run_until(lambda: c.all_see({n.name for n in c.nodes}), timeout=60)


@pytest.mark.parametrize("ignore_old", [False, True])
def test_late_joiner_receives_earlier_events_unless_ignoring_old(ignore_old: bool) -> None:
    c = _cluster(10, seed=4)
    sent = [f"old{i}".encode() for i in range(5)]
    for p in sent:
        c.nodes[2].user_event(c.sim.now, "history", p)
        c.sim.poke(c.addr["n2"])
        c.run(1)
    c.run(20)  # gossip is long over; only push-pull can carry them now
    late = c.add_node("late")
    late.join(c.sim.now, [c.addr["n3"]], ignore_old=ignore_old)
    c.sim.poke(c.addr["late"])
    c.run(3)
    assert sorted(_got(c, "late", "history")) == ([] if ignore_old else sorted(sent))
    c.nodes[5].user_event(c.sim.now, "history", b"new")  # and new ones arrive either way
    c.sim.poke(c.addr["n5"])
    c.run(3)
    assert b"new" in _got(c, "late", "history")


def test_graceful_leave_shows_as_left_not_failed() -> None:
    c = _cluster(12, seed=5)
    leaver = c.by_name["n6"]
    done: list[bool] = []
    leaver.leave(c.sim.now, lambda: done.append(True))
    c.sim.poke(c.addr["n6"])
    c.run(3)
    assert done == [True]
    c.crash("n6")  # the agent exits after its leave has been gossiped
    others = [n for n in c.live()]
    c.run_until(lambda: c.sees(others, {"n6"}, MemberStatus.LEFT), timeout=10, step=0.2)
    c.run(60)  # and it stays left (not failed) long after the process is gone
    assert c.sees(others, {"n6"}, MemberStatus.LEFT)
    assert {d.state for d in c.downs} == {State.LEFT}
    assert {d.observer for d in c.downs} == {n.name for n in others}
    kinds = {e.kind for _, _, e in c.member_events if e.member.name == "n6"}
    assert kinds == {"leave"}


def test_wrongly_suspected_node_refutes_with_higher_incarnation() -> None:
    c = _cluster(15, seed=6)
    target = c.by_name["n9"]
    inc = target.ml.local.incarnation
    rumour = wire.encode(wire.Suspect(inc, "n9", "n2"))  # n2 wrongly accuses n9
    c.by_name["n3"].receive_packet(c.sim.now, c.addr["n2"], rumour)
    c.sim.poke(c.addr["n3"])
    assert c.by_name["n3"].ml.members["n9"].state is State.SUSPECT
    c.run(5)
    assert target.ml.local.incarnation > inc
    assert target.ml.metrics.refutes == 1
    for n in c.nodes:
        m = n.ml.members["n9"]
        assert (m.state, m.incarnation) == (State.ALIVE, target.ml.local.incarnation)
    c.run(60)
    assert c.downs == []


def test_lifeguard_confirmations_shorten_suspicion() -> None:
    """With independent accusers the crashed node is declared dead at about the minimum
    suspicion timeout, far below the maximum that a lone accuser's timer starts with."""
    c = _cluster(20, seed=7)
    c.crash("n11")
    live = c.live()
    suspected: dict[str, float] = {}

    def step() -> bool:
        for n in live:
            m = n.ml.members["n11"]
            if m.state is State.SUSPECT and n.name not in suspected:
                suspected[n.name] = m.state_change
        return all(n.ml.members["n11"].state is State.DEAD for n in live)
    c.run_until(step, timeout=120, step=0.05)
    lo = suspicion_timeout(4, 20, 1.0)  # LAN, 20 nodes: 5.2 s; a lone accuser waits 6x that
    dead_at = {d.observer: d.time for d in c.downs if d.subject == "n11"}
    assert set(dead_at) == {n.name for n in live}
    waited = [dead_at[o] - suspected[o] for o in suspected]
    assert len(waited) >= len(live) // 2  # most nodes suspected before they heard "dead"
    assert min(dead_at.values()) - min(suspected.values()) >= lo - 0.01  # never below min
    assert max(waited) < 2 * lo < 6 * lo  # confirmations cut the 31 s timer to ~min
    assert sum(n.ml.metrics.suspicions for n in live) >= len(suspected)


def test_large_event_reaches_everyone_over_tcp_quickly() -> None:
    cfg = SerfConfig(event_size_limit=9216)
    c = _cluster(25, seed=8, config=cfg)
    big = bytes(range(256)) * 12  # 3,072 bytes: far too big for one datagram
    c.nodes[3].user_event(c.sim.now, "big", big)
    c.sim.poke(c.addr["n3"])
    took = c.run_until(lambda: _everyone_has(c, "big", [big]), timeout=30, step=0.1)
    assert took < 2  # push-pull (every 30 s) was not needed
    assert sum(n.metrics.events_reliable_sent for n in c.nodes) >= 3
