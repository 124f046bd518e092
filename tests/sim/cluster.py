"""ClusterSim: a seeded, synchronous event-queue network that drives sans-IO gossip cores.

No trio, no sockets, no real time: every datagram and TCP exchange is an event on one heap,
ordered by simulated time.  Per-link loss, delay, duplication and partitions come from one
``random.Random(seed)``, so a run is reproducible from its seed.

A "core" is anything with the sans-IO surface shared by :class:`gossip.membership.Memberlist`
and :class:`gossip.serf.Serf`: ``receive_packet``, ``tick``, ``next_deadline``,
``take_effects``, ``handle_stream``, ``stream_reply``.  TCP exchanges are reliable (TCP
retransmits) but blocked by partitions and crashes, and take one link delay each way.

:class:`SerfCluster` builds ``n`` Serf cores on top of a :class:`ClusterSim` and records what
scenario tests assert on: every dead/left transition any node made (``downs``), the user
events each node delivered, and the Serf member events ("failed", "leave", ...).
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import pickle
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from gossip import wire
from gossip.config import Addr, GossipConfig, SendPacket, StreamRequest
from gossip.errors import DecodeError
from gossip.membership import Member
from gossip.serf import MemberEvent, MemberStatus, Serf, SerfConfig, UserEvent
from gossip.state import State
from gossip.wire import StreamMessage


class Core(Protocol):
    def receive_packet(self, now: float, src: Addr, data: bytes) -> None: ...
    def tick(self, now: float) -> None: ...
    def next_deadline(self) -> float: ...
    def take_effects(self) -> list[Any]: ...
    def handle_stream(self, now: float, src: Addr, msg: StreamMessage) -> bytes | None: ...
    def stream_reply(self, now: float, token: int, reply: StreamMessage | None) -> None: ...


@dataclass
class Link:
    loss: float = 0.0
    dup: float = 0.0
    delay_min: float = 0.0005
    delay_max: float = 0.003


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reference counting still frees everything).

    At 1,000 nodes the cores hold millions of long-lived objects and create no garbage
    cycles, so the collector's full passes over that heap are pure overhead for the
    simulator; it is switched back on afterwards."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


# kinds of queued events (the heap holds plain tuples: no closure per datagram)
_DELIVER, _TICK, _STREAM, _REPLY, _CALL = range(5)


@dataclass
class ClusterSim:
    seed: int = 0
    link: Link = field(default_factory=Link)
    now: float = 0.0
    rng: random.Random = field(init=False)
    nodes: dict[Addr, Core] = field(default_factory=dict)
    crashed: set[Addr] = field(default_factory=set)
    group: dict[Addr, int] = field(default_factory=dict)  # partition id per node (0 = none)
    delivered: int = 0
    dropped: int = 0  # datagrams that never arrived: link loss, crashes, partitions
    lost: int = 0  # of which dropped by the link's random loss
    sent: int = 0  # datagrams handed to the network (copies from duplication included)
    decode_errors: int = 0
    # sees every datagram and TCP exchange a node starts (before loss, partitions, crashes)
    on_send: Callable[[Addr, SendPacket | StreamRequest], None] | None = None
    # (time, sequence number, kind, three arguments); the sequence number keeps events at
    # equal times in scheduling order, so a run is a pure function of its seed
    _heap: list[tuple[float, int, int, Any, Any, Any]] = field(default_factory=list)
    _seq: Iterable[int] = field(default_factory=itertools.count)
    _tick_at: dict[Addr, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # --- topology -------------------------------------------------------------------------

    def add(self, addr: Addr, core: Core) -> Core:
        self.nodes[addr] = core
        self._after_activity(addr)
        return core

    def crash(self, addr: Addr) -> None:
        """Stop a node dead: it neither sends, receives nor ticks any more."""
        self.crashed.add(addr)

    def partition(self, *groups: Iterable[Addr]) -> None:
        self.group = {}
        for i, g in enumerate(groups, start=1):
            for a in g:
                self.group[a] = i

    def heal(self) -> None:
        self.group = {}

    def _blocked(self, a: Addr, b: Addr) -> bool:
        if a in self.crashed or b in self.crashed:
            return True
        return self.group.get(a, 0) != self.group.get(b, 0)

    # --- scheduling ---------------------------------------------------------------------------

    def at(self, t: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at simulated time ``t``."""
        heapq.heappush(self._heap, (t, next(self._seq), _CALL, fn, None, None))  # type: ignore[call-overload]

    def _after_activity(self, addr: Addr) -> None:
        if addr in self.crashed:
            return
        core = self.nodes[addr]
        effects = core.take_effects()
        if effects:
            route = self._route
            for eff in effects:
                route(addr, eff)
        t = core.next_deadline()
        if t < self.now:
            t = self.now
        if t < self._tick_at.get(addr, math.inf):
            self._tick_at[addr] = t
            heapq.heappush(self._heap, (t, next(self._seq), _TICK, addr, t, None))  # type: ignore[call-overload]

    def _tick(self, addr: Addr, t: float) -> None:
        if self._tick_at.get(addr) != t or addr in self.crashed:
            return
        del self._tick_at[addr]
        self.nodes[addr].tick(self.now)
        self._after_activity(addr)

    def _delay(self) -> float:
        return self.rng.uniform(self.link.delay_min, self.link.delay_max)

    def _route(self, src: Addr, eff: object) -> None:
        if self.on_send is not None and isinstance(eff, (SendPacket, StreamRequest)):
            self.on_send(src, eff)
        if type(eff) is SendPacket:
            link, rnd = self.link, self.rng.random
            copies = 2 if link.dup and rnd() < link.dup else 1
            for _ in range(copies):
                self.sent += 1
                if link.loss and rnd() < link.loss:
                    self.dropped += 1
                    self.lost += 1
                    continue
                delay = link.delay_min + (link.delay_max - link.delay_min) * rnd()
                heapq.heappush(self._heap, (self.now + delay, next(self._seq),  # type: ignore[call-overload]
                                            _DELIVER, src, eff.addr, eff.data))
        elif isinstance(eff, StreamRequest):
            heapq.heappush(self._heap, (self.now + self._delay(), next(self._seq),  # type: ignore[call-overload]
                                        _STREAM, src, eff, None))

    def _deliver(self, src: Addr, dst: Addr, data: bytes) -> None:
        core = self.nodes.get(dst)
        if core is None or ((self.crashed or self.group) and self._blocked(src, dst)):
            self.dropped += 1
            return
        self.delivered += 1
        try:
            core.receive_packet(self.now, src, data)
        except DecodeError:
            self.decode_errors += 1
        self._after_activity(dst)

    def _stream(self, src: Addr, req: StreamRequest) -> None:
        reply: StreamMessage | None = None
        dst = req.addr
        if dst in self.nodes and not self._blocked(src, dst):
            try:  # a shell drops a stream it cannot parse; the caller sees a failed exchange
                out = self.nodes[dst].handle_stream(self.now, src, _parse(self.nodes[dst],
                                                                          req.data))
                if out is not None:
                    reply = _parse(self.nodes[src], out)
            except DecodeError:
                self.decode_errors += 1
            self._after_activity(dst)
        if req.expect_reply:
            heapq.heappush(self._heap, (self.now + self._delay(), next(self._seq),  # type: ignore[call-overload]
                                        _REPLY, src, req.token, reply))

    def _reply(self, src: Addr, token: int, reply: StreamMessage | None) -> None:
        if src in self.crashed:
            return
        self.nodes[src].stream_reply(self.now, token, reply)
        self._after_activity(src)

    def run_until(self, t_end: float, max_events: int = 50_000_000) -> None:
        # the loop inlines _deliver, _tick and _after_activity for the common events (a
        # datagram, a tick): at 1,000 nodes the calls cost as much as the event itself
        heap, pop, push = self._heap, heapq.heappop, heapq.heappush
        nodes, crashed, tick_at, seq = self.nodes, self.crashed, self._tick_at, self._seq
        route, inf, rnd = self._route, math.inf, self.rng.random
        with no_cyclic_gc():
            for _ in range(max_events):
                if not heap or heap[0][0] > t_end:
                    break
                now, _, kind, a, b, c = pop(heap)
                self.now = now
                if kind == _DELIVER:
                    core = nodes.get(b)
                    if core is None or ((crashed or self.group) and self._blocked(a, b)):
                        self.dropped += 1
                        continue
                    self.delivered += 1
                    try:
                        core.receive_packet(now, a, c)
                    except DecodeError:
                        self.decode_errors += 1
                    addr = b
                elif kind == _TICK:
                    if tick_at.get(a) != b or a in crashed:
                        continue
                    del tick_at[a]
                    core = nodes[a]
                    core.tick(now)
                    addr = a
                elif kind == _STREAM:
                    self._stream(a, b)
                    continue
                elif kind == _REPLY:
                    self._reply(a, b, c)
                    continue
                else:
                    a()
                    continue
                # _after_activity(addr), inlined (addr is not crashed here)
                effects = core.take_effects()
                if effects:
                    for eff in effects:
                        # _route(addr, eff), inlined for a lossless datagram without on_send
                        link = self.link
                        if type(eff) is SendPacket and self.on_send is None and \
                                not link.dup and not link.loss:
                            self.sent += 1
                            delay = link.delay_min + (link.delay_max - link.delay_min) * rnd()
                            push(heap, (now + delay, next(seq),  # type: ignore[call-overload]
                                        _DELIVER, addr, eff.addr, eff.data))
                        else:
                            route(addr, eff)
                t = core.next_deadline()
                if t < now:
                    t = now
                if t < tick_at.get(addr, inf):
                    tick_at[addr] = t
                    push(heap, (t, next(seq), _TICK, addr, t, None))  # type: ignore[call-overload]
            else:
                raise RuntimeError("simulation exceeded its event budget")
        self.now = max(self.now, t_end)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def poke(self, addr: Addr) -> None:
        """Flush effects a test caused by calling a core directly."""
        self._after_activity(addr)


# --- Serf clusters --------------------------------------------------------------------------


def _parse(receiver: Core, data: bytes) -> StreamMessage:
    """Parse a whole stream as ``receiver`` would (with its keyring, if it has one)."""
    ml = getattr(receiver, "ml", receiver)
    ring = getattr(ml, "keyring", None)
    return wire.parse_stream(data, ring.decrypt_stream if ring is not None else None)


def node_addr(i: int) -> Addr:
    """A distinct private address for node ``i`` (62,500 per /8 before wrapping)."""
    return (f"10.{i // 62500 % 250}.{i // 250 % 250}.{i % 250 + 1}", 7946)


@dataclass(frozen=True)
class Down:
    """One node's memberlist declared another dead (``State.DEAD``) or left (``LEFT``)."""

    time: float
    observer: str
    subject: str
    state: State


class SimSerf(Serf):
    """A Serf core that also logs every dead/left transition it makes (memberlist's
    NotifyLeave), so a scenario can check "never declared dead" over a whole run."""

    downs: list[Down]

    def notify_leave(self, now: float, n: Member) -> None:
        self.downs.append(Down(now, self.name, n.name, n.state))
        super().notify_leave(now, n)


class SerfCluster:
    """``n`` Serf cores named ``n0``..``n{n-1}`` in one seeded :class:`ClusterSim`."""

    def __init__(self, n: int, *, seed: int = 0, link: Link | None = None,
                 tags: dict[str, str] | None = None, gossip: GossipConfig | None = None,
                 config: SerfConfig | None = None) -> None:
        self.sim = ClusterSim(seed=seed, link=link or Link())
        self.seed = seed
        self.tags = tags if tags is not None else {"role": "sim"}
        self.gossip = gossip
        self.config = config
        self.nodes: list[SimSerf] = []
        self.by_name: dict[str, SimSerf] = {}
        self.addr: dict[str, Addr] = {}
        self.downs: list[Down] = []  # shared by every node
        self.user_events: dict[str, list[UserEvent]] = {}
        self.member_events: list[tuple[float, str, MemberEvent]] = []  # all but "join"
        self.other_deliveries: list[tuple[float, Serf, object]] = []  # e.g. NameConflict
        self.joined_after = 0.0  # simulated seconds the join took (set by joined())
        for _ in range(n):
            self.add_node()

    # --- building ------------------------------------------------------------------------

    def add_node(self, name: str | None = None) -> SimSerf:
        i = len(self.nodes)
        name = name or f"n{i}"
        addr = node_addr(i)
        core = SimSerf(name, addr, rng=random.Random(self.seed * 1_000_003 + i),
                       now=self.sim.now, tags=self.tags, gossip=self.gossip, config=self.config)
        core.downs = self.downs
        self.nodes.append(core)
        self.by_name[name] = core
        self.addr[name] = addr
        self.user_events[name] = []
        self.sim.add(addr, core)
        return core

    def join(self, node: Serf, seeds: list[str]) -> None:
        node.join(self.sim.now, [self.addr[s] for s in seeds])
        self.sim.poke(self.addr[node.name])

    def join_all(self, seeds: int = 1) -> None:
        """Every node but ``n0`` joins one of the first ``seeds`` nodes (round robin)."""
        names = [n.name for n in self.nodes[:seeds]]
        for i, node in enumerate(self.nodes[1:], start=1):
            self.join(node, [names[i % len(names)] if i >= len(names) else names[0]])

    def reseed(self, seed: int) -> None:
        """Draw everything from ``seed`` from now on: the network (loss, delays) and every
        node (each its own stream, as when built with that seed)."""
        self.seed = seed
        self.sim.seed = seed
        self.sim.rng.seed(seed)
        for i, node in enumerate(self.nodes):
            node.rng.seed(seed * 1_000_003 + i)  # shared with its memberlist and reconnector

    # --- running and observing ---------------------------------------------------------

    def run(self, dt: float) -> None:
        with no_cyclic_gc():  # collecting allocates an event record per delivery
            self.sim.run_for(dt)
            self.collect()

    def run_until(self, cond: Callable[[], bool], timeout: float, step: float = 0.5) -> float:
        """Run in ``step``s until ``cond()``; the simulated time it took.  AssertionError after
        ``timeout`` simulated seconds."""
        start = self.sim.now
        with no_cyclic_gc():  # the conditions build sets over every node's member list
            while not cond():
                if self.sim.now - start >= timeout:
                    raise AssertionError(f"condition not reached within {timeout} s "
                                         f"(simulated, from t={start:.1f})")
                self.run(step)
        return self.sim.now - start

    def collect(self) -> None:
        """Drain every node's deliveries into ``user_events`` / ``member_events``."""
        now = self.sim.now
        for node in self.nodes:
            out = node.take_deliveries()
            if not out:
                continue
            mine = self.user_events[node.name]
            for d in out:
                if isinstance(d, UserEvent):
                    mine.append(d)
                elif isinstance(d, MemberEvent):
                    if d.kind != "join":
                        self.member_events.append((now, node.name, d))
                else:
                    self.other_deliveries.append((now, node, d))

    def live(self) -> list[SimSerf]:
        return [n for n in self.nodes if self.addr[n.name] not in self.sim.crashed]

    def crash(self, name: str) -> None:
        self.sim.crash(self.addr[name])

    def partition(self, *groups: list[str]) -> None:
        self.sim.partition(*[[self.addr[n] for n in g] for g in groups])

    def heal(self) -> None:
        self.sim.heal()

    @staticmethod
    def with_status(node: Serf, status: MemberStatus) -> set[str]:
        return {m.name for m in node.members.values() if m.status is status}

    def all_see(self, names: set[str], status: MemberStatus = MemberStatus.ALIVE,
                among: list[SimSerf] | None = None) -> bool:
        """Every live node (or ``among``) sees exactly ``names`` with ``status``."""
        return all(self.with_status(n, status) == names for n in (among or self.live()))

    def sees(self, observers: list[SimSerf], subjects: set[str],
             status: MemberStatus) -> bool:
        """Every observer holds every subject with ``status``."""
        for o in observers:
            members = o.members
            for s in subjects:
                m = members.get(s)
                if m is None or m.status is not status:
                    return False
        return True


def converged(c: SerfCluster, names: set[str]) -> bool:
    """Every live node's Serf and memberlist hold exactly ``names``, all alive."""
    return c.all_see(names) and all(
        sum(1 for m in n.ml.members.values() if m.state is State.ALIVE) == len(names)
        for n in c.live())


JOIN_SEED = 11  # the seed every shared join (:func:`joined`) is simulated with
_JOINS: dict[int, bytes] = {}  # n -> that converged n-node cluster, pickled


def joined(n: int, seed: int) -> SerfCluster:
    """``n`` nodes that joined ``n0`` and converged (at the link's default 0 % loss), whose
    network and nodes draw from ``seed`` from then on.

    The join itself is shared: simulated once per process and size (with ``JOIN_SEED``), kept
    pickled, and every call gets its own copy.  A 1,000-node join costs ~66 s of CPU and a
    copy ~7 s, and the big scenarios all start from one.  Each call gets a copy, never the
    original, so that every caller starts from the very same state (a set rebuilt by
    unpickling may iterate in another order than the one it was copied from)."""
    snap = _JOINS.get(n)
    if snap is None:
        c = SerfCluster(n, seed=JOIN_SEED)
        c.join_all()
        names = {x.name for x in c.nodes}
        c.joined_after = c.run_until(lambda: converged(c, names), timeout=60, step=1.0)
        with no_cyclic_gc():
            snap = _JOINS[n] = pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL)
        del c
    with no_cyclic_gc():
        copy: SerfCluster = pickle.loads(snap)
    copy.reseed(seed)
    return copy
