"""Multi-host rumor clusters on network namespaces: real ``rumor agent`` processes, one per
lab host, talking over a real (virtual) switch that the tests cut and partition.

Covers: a 5-host cluster forms and spreads an event; a cut host is declared failed, misses
an event, and catches up after the link comes back; a 2|3 split keeps both sides working and
merges their events on heal; an agent stopped (SIGTERM or SIGKILL) and restarted with the
same data dir rejoins, gets what it missed and lists nothing twice.

Every wait is bounded (``wait_until``); when one runs out, the assertion message carries each
host's member view and the tail of the relevant agents' DEBUG logs. Measured times (failure
detection, healing) are listed at the end of every run under "netns figures" (conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from tests.netns.harness import NetnsLab, requires_netns, wait_until

# the bounded waits of one scenario add up to more than the suite's default 120 s deadline
pytestmark = [requires_netns, pytest.mark.timeout(300)]

T = TypeVar("T")

ALIVE, LEFT, FAILED = 1, 3, 4
HTTP_PORT = 8500
GOSSIP_PORT = 8301
CONVERGE_TIMEOUT = 30.0  # start-up + join of every agent
# An event's gossip is retransmitted only ~4 times, and members declared failed less than
# gossip_to_the_dead_time ago are still gossip targets, so while a host or a side is down a
# live member can miss an event and get it only from the next push-pull (every 30 s).
SPREAD_TIMEOUT = 45.0
DETECT_LIMIT = 20.0  # failure detection must happen within this (LAN: ~5-10 s expected)
# A 2-node side gets one confirmation of its suspicions where memberlist wants 2, so its
# suspicion timeout is ~4 + 20*log(2)/log(3) = 16.6 s, not 4 s (max 6 * 4 s = 24 s), and its
# failed probes raise Lifeguard's awareness, which stretches its probe interval: measured
# 17-31 s.
SPLIT_DETECT_LIMIT = 60.0
GOSSIP_TO_THE_DEAD = 30.0  # LAN: memberlist forgets a dead member this long after its death
HEAL_LIMIT = 30.0  # rejoin + catch-up after the network comes back (reconnect every 5 s)
POLL = 0.1
LOG_TAIL = 40
LOG_LEVEL = os.environ.get("RUMOR_NETNS_LOG_LEVEL", "DEBUG")


def rumor_argv() -> list[str]:
    """The ``rumor`` console script of the venv running the tests."""
    beside = Path(sys.executable).with_name("rumor")
    found = str(beside) if beside.exists() else shutil.which("rumor")
    if found is None:
        pytest.fail("the rumor console script is not installed (pip install -e .)")
    return [found]


class Cluster:
    """One rumor agent per lab host, with its log file. The read helpers (members, events)
    return None / empty while an agent does not answer, so they can be polled."""

    def __init__(self, lab: NetnsLab, workdir: Path, joins: Sequence[Sequence[int]]) -> None:
        self.lab = lab
        self.workdir = workdir
        self.joins = joins  # joins[i]: the hosts agent i retry-joins
        self.procs: dict[int, subprocess.Popen[Any]] = {}
        self._logs: dict[int, IO[str]] = {}

    @property
    def n(self) -> int:
        return len(self.lab.hosts)

    def name(self, i: int) -> str:
        return f"h{i + 1}"

    def log_path(self, i: int) -> Path:
        return self.workdir / f"{self.name(i)}.log"

    def start(self, i: int) -> None:
        """Start agent i (again, if it was stopped: same node name and data dir)."""
        host = self.lab.hosts[i]
        argv = [
            *rumor_argv(), "agent", f"-node={self.name(i)}", f"-bind={host.addr}",
            "-client=127.0.0.1", f"-http-port={HTTP_PORT}", f"-serf-lan-port={GOSSIP_PORT}",
            *(f"-retry-join={self.lab.hosts[j].addr}" for j in self.joins[i]),
            "-retry-interval=1s", f"-data-dir={self.workdir / self.name(i)}",
            f"-log-level={LOG_LEVEL}",
        ]
        old = self._logs.pop(i, None)
        if old is not None:
            old.close()
        log = open(self.log_path(i), "a")  # noqa: SIM115 - kept open for the process's life
        log.write(f"==== test: starting {' '.join(argv)}\n")
        log.flush()
        self._logs[i] = log
        self.procs[i] = self.lab.run(i, argv, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, i: int, sig: int, timeout: float = 20.0) -> int:
        """Send ``sig`` to agent i's process group and wait for it to exit; its exit code."""
        proc = self.procs[i]
        self._logs[i].write(f"\n==== test: sending {signal.Signals(sig).name}\n")
        self._logs[i].flush()
        os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name(i)} did not exit {timeout} s after "
                        f"{signal.Signals(sig).name}\n{self.tail(i)}")

    def close(self) -> None:
        for log in self._logs.values():
            log.close()

    # -- HTTP, from inside a host, to its own agent

    def _get(self, i: int, path: str) -> Any:
        try:
            status, body = self.lab.http(i, "GET", path, timeout=2.0)
        except OSError:  # not up (yet), or stopped
            return None
        return json.loads(body) if status == 200 else None

    def members(self, i: int) -> dict[str, int] | None:
        """Host i's view: member name -> Status; None if its agent does not answer."""
        found = self._get(i, "/v1/agent/members")
        return None if found is None else {m["Name"]: m["Status"] for m in found}

    def member_addrs(self, i: int) -> dict[str, str]:
        found = self._get(i, "/v1/agent/members") or []
        return {m["Name"]: m["Addr"] for m in found}

    def events(self, i: int) -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] | None = self._get(i, "/v1/event/list")
        return found

    def event_ids(self, i: int) -> list[str]:
        return [e["ID"] for e in self.events(i) or []]

    def fire(self, i: int, name: str, payload: str) -> str:
        status, body = self.lab.http(i, "PUT", f"/v1/event/fire/{name}", payload, timeout=5.0)
        assert status == 200, f"fire at {self.name(i)}: {status} {body!r}"
        event_id: str = json.loads(body)["ID"]
        return event_id

    # -- predicates and diagnostics

    def sees(self, observers: Sequence[int], expected: dict[str, int]) -> bool:
        """Every observer's member list contains ``expected`` (name -> status)."""
        for i in observers:
            view = self.members(i)
            if view is None or any(view.get(k) != v for k, v in expected.items()):
                return False
        return True

    def all_alive(self, observers: Sequence[int] | None = None) -> bool:
        everyone = {self.name(j): ALIVE for j in range(self.n)}
        return all(self.members(i) == everyone for i in (observers or range(self.n)))

    def lists(self, observers: Sequence[int], ids: Sequence[str]) -> bool:
        return all(set(ids) <= set(self.event_ids(i)) for i in observers)

    def tail(self, i: int, lines: int = LOG_TAIL) -> str:
        try:
            text = self.log_path(i).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"--- {self.name(i)}: no log"
        return f"--- last {lines} lines of {self.log_path(i)}\n" + "\n".join(text[-lines:])

    def report(self, hosts: Sequence[int] | None = None) -> str:
        views = "\n".join(f"{self.name(i)} members={self.members(i)} "
                          f"events={[(e['Name'], e['ID'][:8]) for e in self.events(i) or []]}"
                          for i in range(self.n))
        tails = "\n".join(self.tail(i) for i in (hosts if hosts is not None else range(self.n)))
        return f"{views}\n{tails}"

    def wait(self, what: str, predicate: Callable[[], T], timeout: float,
             logs: Sequence[int] | None = None) -> T:
        """``wait_until`` whose failure says what was awaited and shows the cluster state."""
        try:
            return wait_until(predicate, timeout=timeout, interval=POLL)
        except TimeoutError:
            pytest.fail(f"timed out after {timeout} s waiting for: {what}\n{self.report(logs)}")

    def timed(self, what: str, predicate: Callable[[], object], limit: float,
              since: float, logs: Sequence[int] | None = None) -> float:
        """Wait for ``predicate`` (at most ``limit`` s after ``since``); seconds since ``since``."""
        self.wait(what, predicate, max(0.0, since + limit - time.monotonic()), logs)
        return time.monotonic() - since


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(n)``: an n-host lab with one converged agent per host (every agent
    retry-joins hosts 1 and 2). Torn down, agents and namespaces, after the test."""
    stack: list[tuple[NetnsLab, Cluster]] = []

    def make(n: int) -> Cluster:
        lab = NetnsLab(n, kill_grace=0.2).start()  # no need for graceful leaves at teardown
        cluster = Cluster(lab, tmp_path, [[1] if i == 0 else [0, 1] if i > 1 else [0]
                                          for i in range(n)])
        stack.append((lab, cluster))
        for i in range(n):
            cluster.start(i)
        cluster.wait(f"all {n} agents up and every one seeing all {n} alive",
                     cluster.all_alive, CONVERGE_TIMEOUT)
        return cluster

    try:
        yield make
    finally:
        for lab, cluster in stack:
            try:
                lab.close()
            finally:
                cluster.close()


def no_duplicates(cluster: Cluster, observers: Sequence[int]) -> None:
    for i in observers:
        ids = cluster.event_ids(i)
        assert len(ids) == len(set(ids)), \
            f"{cluster.name(i)} lists an event twice: {ids}\n{cluster.tail(i)}"


# ---------------------------------------------------------------------------- the tests


def test_five_hosts_form_one_cluster_and_an_event_reaches_all(
        make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(5)
    addrs = {c.name(i): h.addr for i, h in enumerate(c.lab.hosts)}
    for i in range(5):
        assert c.member_addrs(i) == addrs, f"{c.name(i)} has wrong member addresses"

    event_id = c.fire(0, "deploy", "v42")
    c.wait("the event fired at h1 listed on all 5 hosts",
           lambda: c.lists(range(5), [event_id]), SPREAD_TIMEOUT)
    for i in range(5):
        [ev] = c.events(i) or []
        assert (ev["ID"], ev["Name"]) == (event_id, "deploy")
        assert base64.b64decode(ev["Payload"]) == b"v42"


def test_cut_host_is_declared_failed_then_heals_and_catches_up(
        make_cluster: Callable[..., Cluster], figure: Callable[[str], None]) -> None:
    c = make_cluster(5)
    others = [0, 1, 3, 4]
    before = c.fire(0, "before", "1")
    c.wait("'before' on all hosts", lambda: c.lists(range(5), [before]), SPREAD_TIMEOUT)

    t_cut = time.monotonic()
    c.lab.cut(2)
    detected = c.timed("h1,h2,h4,h5 see h3 failed", lambda: c.sees(others, {"h3": FAILED}),
                       DETECT_LIMIT, t_cut, logs=[0])
    figure(f"cut h3: declared failed by all 4 others after {detected:.1f} s")
    c.wait("h1,h2,h4,h5 still see each other alive",
           lambda: c.sees(others, {c.name(j): ALIVE for j in others}), 5.0)

    during = c.fire(0, "during", "2")
    c.wait("'during' on h1,h2,h4,h5", lambda: c.lists(others, [during]), SPREAD_TIMEOUT)
    isolated = c.fire(2, "isolated", "3")  # the cut host keeps serving its own clients
    c.wait("h3 lists its own 'isolated'", lambda: c.lists([2], [isolated]), 5.0, logs=[2])
    assert during not in c.event_ids(2), "a cut host received an event"
    assert not any(isolated in c.event_ids(i) for i in others), "an event left a cut host"

    t_restore = time.monotonic()
    c.lab.restore(2)
    alive = c.timed("all 5 alive on every host again", c.all_alive, HEAL_LIMIT, t_restore,
                    logs=[0, 2])
    caught_up = c.timed("every host lists before, during and isolated",
                        lambda: c.lists(range(5), [before, during, isolated]), HEAL_LIMIT,
                        t_restore, logs=[0, 2])
    figure(f"restore h3: all alive everywhere after {alive:.1f} s, "
          f"events caught up after {caught_up:.1f} s")
    no_duplicates(c, range(5))


@pytest.mark.timeout(400)  # the split is held ~60 s on purpose
def test_split_sides_keep_working_and_merge_events_on_heal(
        make_cluster: Callable[..., Cluster], figure: Callable[[str], None]) -> None:
    """A long 2|3 split, held until gossip_to_the_dead_time has passed since each side declared
    the other failed: memberlist no longer gossips to (and then forgets) the other side, so
    the heal has to come from Serf's reconnect of failed members (every 5 s in rumor)."""
    c = make_cluster(5)
    left, right = [0, 1], [2, 3, 4]
    left_sees_split = {"h1": ALIVE, "h2": ALIVE, "h3": FAILED, "h4": FAILED, "h5": FAILED}
    right_sees_split = {"h1": FAILED, "h2": FAILED, "h3": ALIVE, "h4": ALIVE, "h5": ALIVE}

    t_split = time.monotonic()
    c.lab.partition([left, right])
    early_l, early_r = c.fire(0, "early-left", "a"), c.fire(2, "early-right", "b")
    seen: dict[str, float] = {}

    def both_sides_split() -> bool:
        for side, observers, view in (("3-side", right, right_sees_split),
                                      ("2-side", left, left_sees_split)):
            if side not in seen and c.sees(observers, view):
                seen[side] = time.monotonic() - t_split
        return len(seen) == 2

    c.timed("each side sees the other side failed and its own side alive", both_sides_split,
            SPLIT_DETECT_LIMIT, t_split, logs=[0, 2])
    figure(f"2|3 split: the 3-side declared the 2 failed after {seen['3-side']:.1f} s, "
          f"the 2-side declared the 3 failed after {seen['2-side']:.1f} s")

    late_l, late_r = c.fire(1, "late-left", "c"), c.fire(4, "late-right", "d")
    c.wait("each side lists its own events",
           lambda: c.lists(left, [early_l, late_l]) and c.lists(right, [early_r, late_r]),
           SPREAD_TIMEOUT)
    for i in left:
        assert not {early_r, late_r} & set(c.event_ids(i)), "an event crossed the split"
    for i in right:
        assert not {early_l, late_l} & set(c.event_ids(i)), "an event crossed the split"

    # Hold the split (the outage's length, not an assertion) until both sides' memberlist has
    # reaped the other side; the views must stay split all along.
    hold_until = t_split + max(seen.values()) + GOSSIP_TO_THE_DEAD + 2.0
    while time.monotonic() < hold_until:
        assert c.sees(left, left_sees_split) and c.sees(right, right_sees_split), c.report()
        time.sleep(min(1.0, max(0.0, hold_until - time.monotonic())))
    held = time.monotonic() - t_split

    t_heal = time.monotonic()
    c.lab.heal()
    every = [early_l, late_l, early_r, late_r]
    alive = c.timed("all 5 alive on every host again", c.all_alive, HEAL_LIMIT, t_heal,
                    logs=[0, 2])
    merged = c.timed("every host lists the events of both sides",
                     lambda: c.lists(range(5), every), HEAL_LIMIT, t_heal, logs=[0, 2])
    figure(f"heal after a {held:.0f} s split: all alive everywhere after {alive:.1f} s, "
          f"events merged after {merged:.1f} s")
    no_duplicates(c, range(5))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restarted_agent_rejoins_gets_missed_events_and_no_duplicates(
        make_cluster: Callable[..., Cluster], sig: signal.Signals,
        figure: Callable[[str], None]) -> None:
    c = make_cluster(3)
    victim, others = 2, [0, 1]
    had = [c.fire(0, "before-1", "x"), c.fire(1, "before-2", "y")]
    c.wait("the 'before' events on every host", lambda: c.lists(range(3), had),
           SPREAD_TIMEOUT)
    had_ids = c.event_ids(victim)
    assert sorted(had_ids) == sorted(had)

    c.stop(victim, sig)
    # a graceful leave is announced; a kill has to be detected
    status, limit = (LEFT, 10.0) if sig == signal.SIGTERM else (FAILED, DETECT_LIMIT)
    t_stop = time.monotonic()
    took = c.timed(f"the others see h3 with status {status}",
                   lambda: c.sees(others, {"h3": status}), limit, t_stop, logs=[0, 2])
    figure(f"{sig.name}: h3 status {status} on the others after {took:.1f} s")

    missed = [c.fire(0, "while-down-1", "p"), c.fire(1, "while-down-2", "q")]
    c.wait("the 'while-down' events on the others", lambda: c.lists(others, missed),
           SPREAD_TIMEOUT)

    t_start = time.monotonic()
    c.start(victim)
    alive = c.timed("all 3 alive on every host after the restart", c.all_alive, HEAL_LIMIT,
                    t_start, logs=[victim])
    caught_up = c.timed("h3 lists the events fired while it was down",
                        lambda: c.lists([victim], had + missed), HEAL_LIMIT, t_start,
                        logs=[victim])
    figure(f"restart after {sig.name}: all alive after {alive:.1f} s, "
          f"missed events listed after {caught_up:.1f} s")
    ids = c.event_ids(victim)
    assert sorted(ids) == sorted(had + missed), \
        f"h3 lists {ids}, expected each of {had + missed} once\n{c.tail(victim)}"
    no_duplicates(c, range(3))
