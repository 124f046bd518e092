"""Big simulated clusters with the default (LAN) configuration: convergence, failure detection
under 20% packet loss over ten simulated minutes, and a two-way partition that heals.

Sizes: the 1,000-node join is simulated once per test process and shared (``joined`` in
tests/sim/cluster.py: ~66 s of CPU, then ~7 s per copy); the convergence test checks it.
The loss and partition scenarios run ``N_LOSS`` / ``N_PARTITION`` nodes: 128 / 200 in a
developer's run, 1,000 each with ``RUMOR_SIM_FULL=1`` (CI), where they take ~160 s (ten
simulated minutes of probing at 20 % loss) and ~340 s (500 x 500 suspicions, deaths,
refutations and early reconnects, then the heal) of CPU after the join in this pure-Python
simulator (2-core development machine, measured 2026-11-25).

Every run is reproducible from its seed (checked by ``test_same_seed_same_run``).
"""

from __future__ import annotations

import os
import random

import pytest

from gossip.config import GossipConfig
from gossip.membership import Memberlist
from gossip.serf import MemberStatus
from gossip.state import State
from tests.sim.cluster import ClusterSim, SerfCluster, converged, joined, node_addr

FULL = os.environ.get("RUMOR_SIM_FULL") == "1"
N_CONVERGE = 1000
N_LOSS = 1000 if FULL else 128
N_PARTITION = 1000 if FULL else 200
# per-test deadlines (pytest-timeout): several times the measured run time on 2 busy cores
BIG = pytest.mark.timeout(1800 if FULL else 600)


def _names(c: SerfCluster) -> set[str]:
    return {n.name for n in c.nodes}


@pytest.mark.timeout(600)
def test_1000_nodes_converge_to_one_member_list() -> None:
    c = joined(N_CONVERGE, seed=11)  # the shared join (converged within 60 s simulated)
    names = _names(c)
    print(f"\n{N_CONVERGE} nodes converged after {c.joined_after:.0f} s simulated, "
          f"{c.sim.delivered} datagrams")
    views = {frozenset(c.with_status(n, MemberStatus.ALIVE)) for n in c.nodes}
    assert views == {frozenset(names)}  # one and the same alive list everywhere
    for n in c.nodes:  # memberlist agrees: every member alive, incarnations as announced
        assert all(m.state is State.ALIVE for m in n.ml.members.values())
        assert len(n.ml.members) == N_CONVERGE
    assert c.downs == []  # nobody was ever declared dead or left
    assert c.sim.decode_errors == 0


@BIG
def test_crash_detected_under_20pct_loss_without_false_positives() -> None:
    c = joined(N_LOSS, seed=21)
    victim = c.nodes[N_LOSS // 2].name
    c.sim.link.loss = 0.2
    c.crash(victim)
    live = c.live()
    start, lost0, sent0 = c.sim.now, c.sim.lost, c.sim.sent
    detected = c.run_until(lambda: c.sees(live, {victim}, MemberStatus.FAILED),
                           timeout=120, step=1.0)
    c.run(600 - (c.sim.now - start))  # keep going: ten simulated minutes at 20% loss
    assert c.sim.now - start >= 600
    loss = (c.sim.lost - lost0) / (c.sim.sent - sent0)
    print(f"\n{N_LOSS} nodes: crash seen by all after {detected:.0f} s; 600 s at "
          f"{loss:.1%} loss; suspicions {sum(n.ml.metrics.suspicions for n in live)}, "
          f"refutes {sum(n.ml.metrics.refutes for n in live)}")
    assert 0.19 < loss < 0.21
    # every live node's memberlist declared the crashed node dead (not left) ...
    dead_by = {d.observer for d in c.downs if d.subject == victim and d.state is State.DEAD}
    assert dead_by == {n.name for n in live}
    assert all(n.members[victim].status is MemberStatus.FAILED for n in live)
    # ... and no live node was ever declared dead or left by anyone, during the whole run
    assert [d for d in c.downs if d.subject != victim] == []
    assert not [e for _, _, e in c.member_events if e.member.name != victim]
    names = {n.name for n in live}
    assert c.all_see(names)  # still one alive list, without the victim


@BIG
def test_partition_each_side_fails_the_other_then_heals() -> None:
    c = joined(N_PARTITION, seed=31)
    side_a = [n.name for n in c.nodes[: N_PARTITION // 2]]
    side_b = [n.name for n in c.nodes[N_PARTITION // 2:]]
    nodes_a = [c.by_name[x] for x in side_a]
    nodes_b = [c.by_name[x] for x in side_b]
    c.partition(side_a, side_b)

    def split() -> bool:
        return c.sees(nodes_a, set(side_b), MemberStatus.FAILED) and \
            c.sees(nodes_b, set(side_a), MemberStatus.FAILED)
    took = c.run_until(split, timeout=300, step=2.0)
    assert c.sees(nodes_a, set(side_a), MemberStatus.ALIVE)
    assert c.sees(nodes_b, set(side_b), MemberStatus.ALIVE)
    # each side only ever declared the *other* side dead
    a, b = set(side_a), set(side_b)
    assert all((d.observer in a) != (d.subject in a) for d in c.downs)
    assert {(d.observer, d.subject) for d in c.downs} == \
        {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}

    c.heal()
    healed = c.run_until(lambda: converged(c, a | b), timeout=300, step=2.0)
    print(f"\n{N_PARTITION} nodes: split seen after {took:.0f} s, healed after {healed:.0f} s")
    for n in c.nodes:
        assert n.ml.num_members() == N_PARTITION
        assert all(m.state is State.ALIVE for m in n.ml.members.values())


def _digest(seed: int) -> tuple[object, ...]:
    c = SerfCluster(30, seed=seed)
    c.sim.link.loss = 0.1
    c.join_all()
    c.run(20)
    c.crash("n7")
    c.run(40)
    inc = tuple(sorted((n.name, m.name, m.incarnation, int(m.state))
                       for n in c.nodes for m in n.ml.members.values()))
    return c.sim.delivered, c.sim.dropped, tuple(c.downs), inc


def test_same_seed_same_run() -> None:
    one, two, other = _digest(5), _digest(5), _digest(6)
    assert one == two
    assert one != other
    assert any(d.subject == "n7" for d in one[2])  # the crash was detected in that run


def test_memberlist_is_a_core_too() -> None:
    """The simulator also drives a bare Memberlist (no Serf) with the same surface."""
    sim = ClusterSim(seed=3)
    cores = [Memberlist(GossipConfig(), f"m{i}", node_addr(i), rng=random.Random(i), now=0.0)
             for i in range(20)]
    for i, m in enumerate(cores):
        sim.add(node_addr(i), m)
        if i:
            m.start_push_pull(0.0, node_addr(0), join=True)
            sim.poke(node_addr(i))
    sim.run_for(15)
    assert all(len(m.alive_members()) == 20 for m in cores)
