"""Hostile input against a 20-node simulated cluster (issue 13, items 3 and 4).

* A flood of invented members (a push-pull listing 20,000, and datagrams full of alives)
  never shows in any member list, never becomes a gossip target, and is forgotten within a
  minute; events keep reaching every real member within 2 s.
* A seeded hostile peer sends well-formed messages of every type with boundary numbers:
  no exception but DecodeError escapes a core, every event an honest node fires reaches
  every honest node, and no honest node stays dead (to any observer) longer than one refute
  round.
"""

from __future__ import annotations

import math

import pytest

from gossip import wire
from gossip.config import GossipConfig
from gossip.state import State
from tests.sim.cluster import SerfCluster
from tests.sim.hostile import HOSTILE_ADDR, U32, VSN, HostilePeer, fake_members

N = 20
_CFG = GossipConfig()
# One refute round: the forged accusation reaches its subject by gossip and the subject's new
# alive spreads back, each ceil(log_fanout(N)) gossip hops, after at most one probe interval
# for a probe to carry the news (2 * 3 * 0.2 s + 1 s = 2.2 s with the LAN defaults).
REFUTE_ROUND = 2 * math.ceil(math.log(N) / math.log(_CFG.gossip_nodes)) * \
    _CFG.gossip_interval + _CFG.probe_interval


def _cluster(seed: int) -> SerfCluster:
    c = SerfCluster(N, seed=seed)
    c.join_all()
    names = {x.name for x in c.nodes}
    c.run_until(lambda: c.all_see(names), timeout=30)
    c.run(5)
    return c


def _fire(c: SerfCluster, src: str, payload: bytes) -> None:
    node = c.by_name[src]
    node.user_event(c.sim.now, "honest", payload)
    c.sim.poke(c.addr[src])


def _has(c: SerfCluster, node: str, payloads: set[bytes]) -> bool:
    got = {e.payload for e in c.user_events[node] if e.name == "honest"}
    return payloads <= got


def _fakes_anywhere(c: SerfCluster, honest: set[str]) -> int:
    return sum(1 for n in c.nodes for name in list(n.members) + list(n.ml.members)
               if name not in honest)


def test_member_flood_never_lists_inventions_and_events_still_reach_everyone() -> None:
    c = _cluster(seed=21)
    honest = {n.name for n in c.nodes}
    hp = HostilePeer(c, seed=21, honest=sorted(honest))
    admitted = [n.ml.admission.metrics.admitted for n in c.nodes]
    flood = wire.encode_push_pull(wire.PushPull(False, fake_members(20_000), b""))
    for name in sorted(honest):
        hp.send_stream(name, flood)
        swarm = [wire.encode(wire.Alive(1, f"swarm-{name}-{i}", bytes([10, 254, 0, i + 1]),
                                        7946, b"", VSN)) for i in range(250)]
        hp.send_packet(name, wire.make_compound(swarm))
    cfg = GossipConfig()
    for n in c.nodes:  # a packet or a stream adds at most admit_per_message names each
        assert len(n.ml.admission) <= 2 * cfg.admit_per_message
        assert n.ml.admission.metrics.refused >= 20_000 - cfg.admit_per_message
    assert _fakes_anywhere(c, honest) == 0
    for i, src in enumerate(["n3", "n11", "n17"]):
        _fire(c, src, f"after-flood-{i}".encode())
        took = c.run_until(lambda i=i: all(_has(c, n, {f"after-flood-{i}".encode()})
                                           for n in honest), timeout=2.0, step=0.05)
        assert took <= 2.0
        assert _fakes_anywhere(c, honest) == 0
    c.run(60)
    assert all(len(n.ml.admission) == 0 for n in c.nodes)  # inventions forgotten
    assert _fakes_anywhere(c, honest) == 0 and c.downs == []
    assert [n.ml.admission.metrics.admitted for n in c.nodes] == admitted


def test_forged_dead_at_uint32_max_leaves_every_node_alive() -> None:
    c = _cluster(seed=22)
    honest = sorted(n.name for n in c.nodes)
    hp = HostilePeer(c, seed=22, honest=honest)
    for dst in honest:  # everyone, the victim included, hears the forgery
        hp.send_packet(dst, wire.encode(wire.Dead(U32, "n5", "n9")))
        hp.send_packet(dst, wire.encode(wire.Suspect(U32, "n6", "n9")))
    c.run(30)
    assert c.downs == []
    assert all(n.ml.members["n5"].state is State.ALIVE for n in c.nodes)
    assert c.by_name["n5"].ml.local.incarnation < 10
    assert all(n.ml.metrics.incarnation_jumps_dropped >= 2 for n in c.nodes)


def test_forged_leave_then_forged_new_address_is_refuted() -> None:
    """A forged graceful leave, then a forged alive moving the "left" node elsewhere: the
    new address is not taken before it answers, and the node refutes within a round."""
    c = _cluster(seed=23)
    honest = sorted(n.name for n in c.nodes)
    hp = HostilePeer(c, seed=23, honest=honest)
    inc = c.by_name["n4"].ml.local.incarnation
    for dst in honest:
        if dst != "n4":
            hp.send_packet(dst, wire.encode(wire.Dead(inc, "n4", "n4")))
            hp.send_packet(dst, wire.encode(wire.Alive(inc + 1, "n4", bytes([10, 0, 0, 9]),
                                                       7946, b"\xff\x80", VSN)))
    assert all(n.ml.members["n4"].addr == c.addr["n4"][0] for n in c.nodes)
    c.run(REFUTE_ROUND)
    assert all(n.ml.members["n4"].state is State.ALIVE for n in c.nodes)
    assert all(n.ml.members["n4"].addr == c.addr["n4"][0] for n in c.nodes)
    c.run(30)
    assert [d for d in c.downs if d.state is State.DEAD] == []


@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_peer_of_every_message_type(seed: int) -> None:
    c = _cluster(seed=100 + seed)
    honest = sorted(n.name for n in c.nodes)
    hp = HostilePeer(c, seed=seed, honest=honest)
    fired: set[bytes] = set()
    dead_since: dict[tuple[str, str], float] = {}
    longest = [0.0, ""]
    ticks = [0]

    def sample() -> None:
        now = c.sim.now
        for obs in c.nodes:
            for subj in honest:
                m = obs.ml.members.get(subj)
                down = m is None or m.state in (State.DEAD, State.LEFT)
                key = (obs.name, subj)
                if down and key not in dead_since:
                    dead_since[key] = now
                elif not down and key in dead_since:
                    took = now - dead_since.pop(key)
                    if took > longest[0]:
                        longest[:] = [took, f"{subj} dead to {obs.name}"]

    def every() -> None:
        ticks[0] += 1
        sample()
        if ticks[0] % 25 == 0:
            payload = f"honest-{ticks[0]}".encode()
            _fire(c, honest[hp.rng.randrange(N)], payload)
            fired.add(payload)

    hp.attack(duration=8.0, rate=100, every=every, fakes=3000)
    took = c.run_until(lambda: all(_has(c, n, fired) for n in honest), timeout=10, step=0.1)
    for _ in range(30):
        sample()
        c.run(0.1)
    assert not dead_since, f"still dead: {sorted(dead_since)} " + str(
        [(o, c.by_name[o].ml.members.get(x), c.by_name[x].ml.local) for o, x in dead_since])
    print(f"\nlongest dead: {longest[0]:.2f} s ({longest[1]}); sent {hp.sent}")
    assert longest[0] <= REFUTE_ROUND, longest
    assert len(fired) >= 30 and took < 10
    assert sum(hp.sent.values()) >= 800 and len(hp.sent) >= 12, hp.sent
    assert HOSTILE_ADDR not in c.sim.nodes
