"""Five real ``rumor agent`` processes on 127.X.Y.1-5 (one module-wide cluster).

An event fired at one agent over HTTP is listed by all; node/service/tag filters decide where
it is stored (not where it travels); bad input broadcasts nothing; an event too big for one
datagram still arrives at once; a late joiner gets the history and a restarted agent (same
``-data-dir``) replays nothing it already saw. Every wait is a bounded poll.
"""

from __future__ import annotations

import base64
import json
import signal
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.agent.helpers import AgentProcess, free_subnet, stop_all, wait_for

N = 5
SPREAD = 10.0  # bound for gossip to reach every agent (it takes well under a second)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProcess]]:
    net = free_subnet(N + 1)
    root = tmp_path_factory.mktemp("cluster")
    agents = [AgentProcess(f"n{i}", f"{net}.{i}", root / f"n{i}", ["-event-size-limit=9216"])
              for i in range(1, N + 1)]
    first = agents[0]
    try:
        first.start()
        for a in agents[1:3]:  # started together with n1: keep retrying until it is up
            a.start(f"-retry-join={first.serf_addr}", "-retry-interval=200ms")
        first.wait_ready()
        for a in agents[3:]:  # n1 is up now: a plain -join at start
            a.start(f"-join={first.serf_addr}")
        names = {a.name for a in agents}
        for a in agents:
            a.wait_ready()
            wait_for(partial(sees, a, names), SPREAD, f"{a.name} to see all 5")
        yield agents
    finally:  # graceful leave is tested below; five simultaneous leaves just wait 5 s
        stop_all(agents, signal.SIGKILL)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def listed_ids(a: AgentProcess, name: str) -> list[str]:
    return [e["ID"] for e in a.events(name)]


def lists_exactly(a: AgentProcess, name: str, ids: list[str]) -> bool:
    """``a`` lists exactly ``ids`` under ``name`` (any order, no duplicates)."""
    got = listed_ids(a, name)
    return len(got) == len(ids) and set(got) == set(ids)


def all_ids(a: AgentProcess) -> list[str]:
    return [e["ID"] for e in a.events()]


def settled(a: AgentProcess) -> bool:
    """``a``'s whole event list is the same twice, half a second apart."""
    first = all_ids(a)
    time.sleep(0.5)
    return all_ids(a) == first


def sees(a: AgentProcess, names: set[str]) -> bool:
    return a.alive_members() == names


def filtered_more_than(a: AgentProcess, count: float) -> bool:
    return a.metrics()["rumor_events_filtered_total"] > count


def fire_ok(a: AgentProcess, name: str, payload: bytes = b"", query: str = "") -> str:
    r = a.fire(name, payload, query)
    assert r.status == 200, r
    event_id: str = r.json()["ID"]
    return event_id


def check_filter(cluster: list[AgentProcess], query: str, expected: set[str]) -> None:
    """Fire with ``query`` at n1; exactly ``expected`` store it, every other agent drops it."""
    others = [a for a in cluster if a.name not in expected]
    before = {a.name: a.metrics()["rumor_events_filtered_total"] for a in others}
    name = unique("filtered")
    event_id = fire_ok(cluster[0], name, b"x", query)
    for a in cluster:
        if a.name in expected:
            wait_for(partial(lists_exactly, a, name, [event_id]), SPREAD,
                     f"{a.name} to store {query}")
    for a in others:
        wait_for(partial(filtered_more_than, a, before[a.name]),
                 SPREAD, f"{a.name} to drop {query}")
        assert listed_ids(a, name) == []


def test_event_fired_at_one_agent_is_listed_by_all(cluster: list[AgentProcess]) -> None:
    name = unique("deploy")
    r = cluster[0].fire(name, b"v42")
    assert r.status == 200 and r.json()["LTime"] == 0
    event_id = r.json()["ID"]
    seen = []
    for a in cluster:
        events = wait_for(partial(a.events, name), SPREAD, f"{a.name} to list {name}")
        assert [e["ID"] for e in events] == [event_id]
        seen.append(events[0])
        assert base64.b64decode(events[0]["Payload"]) == b"v42"
    assert len({e["LTime"] for e in seen}) == 1 and seen[0]["LTime"] > 0  # one Lamport time


def test_node_filter(cluster: list[AgentProcess]) -> None:
    check_filter(cluster, "?node=^n[24]$", {"n2", "n4"})
    check_filter(cluster, "?node=3", {"n3"})


def test_service_and_tag_filters(cluster: list[AgentProcess]) -> None:
    regs = {"n3": {"Name": "web", "ID": "web-a", "Tags": ["v1"]},
            "n5": {"Name": "web", "ID": "web-b", "Tags": ["v2", "canary"]},
            "n4": {"Name": "db", "Tags": ["v2"]}}
    for a in cluster:
        if a.name in regs:
            r = a.request("PUT", "/v1/agent/service/register", json.dumps(regs[a.name]).encode())
            assert r.status == 200, r
    # Consul matches the service filter against service IDs (which default to the name)
    check_filter(cluster, "?service=^web", {"n3", "n5"})
    check_filter(cluster, "?service=^web&tag=^v2$", {"n5"})
    check_filter(cluster, "?service=db&tag=v2", {"n4"})
    r = cluster[4].request("PUT", "/v1/agent/service/deregister/web-b")
    assert r.status == 200
    check_filter(cluster, "?service=^web", {"n3"})


def test_bad_input_broadcasts_nothing(cluster: list[AgentProcess]) -> None:
    sender, peer = cluster[0], cluster[4]
    fired = sender.metrics()["rumor_events_fired_total"]
    bad = unique("bad")
    cases = [(f"/v1/event/fire/_{bad}", b"", 400), (f"/v1/event/fire/{bad}?node=[", b"", 400),
             (f"/v1/event/fire/{bad}?tag=x", b"", 400), (f"/v1/event/fire/{bad}?dc=dc2", b"", 400),
             (f"/v1/event/fire/{bad}", b"z" * 9217, 413), ("/v1/event/fire/", b"", 400)]
    for path, body, status in cases:
        r = sender.request("PUT", path, body)
        assert r.status == status and r.body, (path, r)
    good = fire_ok(sender, bad)
    wait_for(lambda: listed_ids(peer, bad) == [good], SPREAD, "the good event")
    assert sender.metrics()["rumor_events_fired_total"] == fired + 1
    assert not [e for e in peer.events() if bad in e["Name"] and e["ID"] != good]


def test_event_bigger_than_a_datagram_arrives_promptly(cluster: list[AgentProcess]) -> None:
    name = unique("big")
    payload = bytes(range(256)) * 12  # 3 KB: far over the ~1.4 KB UDP budget
    event_id = fire_ok(cluster[0], name, payload)
    for a in cluster:  # push-pull would take 30 s; reliable forwarding takes milliseconds
        events = wait_for(partial(a.events, name), 2.0, f"{a.name} to list the big event")
        assert [e["ID"] for e in events] == [event_id]
        assert base64.b64decode(events[0]["Payload"]) == payload


def test_late_joiner_gets_history_and_restart_replays_nothing(
        cluster: list[AgentProcess], tmp_path: Path) -> None:
    name = unique("history")
    ids = [fire_ok(cluster[i % N], name, f"{i}".encode()) for i in range(10)]
    for a in cluster:
        wait_for(partial(lists_exactly, a, name, ids), SPREAD,
                 f"{a.name} to list all 10")
    late = AgentProcess("n6", cluster[0].host.rsplit(".", 1)[0] + ".6", tmp_path / "n6",
                        ["-event-size-limit=9216"])
    try:
        late.start(f"-join={cluster[1].serf_addr}").wait_ready()
        wait_for(partial(lists_exactly, late, name, ids), SPREAD,
                 "the late joiner to list the 10 events")
        got = listed_ids(late, name)
        # earlier tests' events may still be arriving from other members' push-pulls: take
        # the snapshot once the list has stopped growing
        wait_for(partial(settled, late), SPREAD, "the late joiner's history to settle")
        before_stop = set(all_ids(cluster[2]))
        history = all_ids(late)
        assert len(history) == len(set(history))

        assert late.stop() == 0  # SIGTERM: graceful leave, clean exit
        wait_for(lambda: "n6" not in cluster[0].alive_members(), SPREAD, "n6 to leave")
        missed = [fire_ok(cluster[0], name, b"while down") for _ in range(2)]
        late.start(f"-join={cluster[2].serf_addr}").wait_ready()
        want = sorted(got + missed)
        wait_for(lambda: sorted(listed_ids(late, name)) == want, SPREAD,
                 "the restarted agent to list old + missed events")
        after = all_ids(late)
        assert len(after) == len(set(after))
        assert after[:len(history)] == history  # old ones kept their place: nothing replayed
        new = set(after) - set(history)
        # new since the restart: the two missed ones, plus at most older events of earlier
        # tests this agent's first join partner did not offer but the second one did
        assert set(missed) <= new and new - set(missed) <= before_stop
        m = late.metrics()
        assert m["rumor_events_stored_total"] == len(new)  # only what it never had is new
        # what it held was offered back to gossip at start, so the copies arriving with the
        # push-pull are deduped there (gossip) rather than by the agent
        deduped = m["rumor_events_deduped_total"] + m["rumor_events_gossip_deduped_total"]
        assert deduped >= len(history)
    finally:
        late.stop()


def test_crashed_agent_restarts_into_the_cluster_without_replays(
        cluster: list[AgentProcess]) -> None:
    victim = cluster[4]
    name = unique("crash")
    first = fire_ok(cluster[0], name)
    wait_for(partial(lists_exactly, victim, name, [first]), SPREAD, "the first event")
    before = [e["ID"] for e in victim.events()]
    victim.stop(signal.SIGKILL)  # no leave: the others still think it is alive
    victim.start(f"-join={cluster[0].serf_addr}").wait_ready()
    names = {a.name for a in cluster}
    for a in cluster:
        wait_for(partial(sees, a, names), SPREAD, f"{a.name} to see all 5 alive again")
    second = fire_ok(cluster[1], name)
    wait_for(partial(lists_exactly, victim, name, [first, second]), SPREAD,
             "the restarted agent to get the new event")
    assert [e["ID"] for e in victim.events()] == [*before, second]
    assert victim.metrics()["rumor_events_stored_total"] == 1
