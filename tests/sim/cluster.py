"""ClusterSim: a seeded, synchronous event-queue network that drives sans-IO gossip cores.

No trio, no sockets, no real time: every datagram and TCP exchange is an event on one heap,
ordered by simulated time.  Per-link loss, delay, duplication and partitions come from one
``random.Random(seed)``, so a run is reproducible from its seed.

A "core" is anything with the sans-IO surface shared by :class:`gossip.membership.Memberlist`
and :class:`gossip.serf.Serf`: ``receive_packet``, ``tick``, ``next_deadline``,
``take_effects``, ``handle_stream``, ``stream_reply``.  TCP exchanges are reliable (TCP
retransmits) but blocked by partitions and crashes, and take one link delay each way.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gossip import wire
from gossip.config import Addr, SendPacket, StreamRequest
from gossip.errors import DecodeError
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
    dropped: int = 0
    decode_errors: int = 0
    _heap: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
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
        heapq.heappush(self._heap, (t, next(self._seq), fn))  # type: ignore[call-overload]

    def _after_activity(self, addr: Addr) -> None:
        if addr in self.crashed:
            return
        core = self.nodes[addr]
        for eff in core.take_effects():
            self._route(addr, eff)
        t = max(core.next_deadline(), self.now)
        if t < self._tick_at.get(addr, float("inf")):
            self._tick_at[addr] = t
            self.at(t, lambda: self._tick(addr, t))

    def _tick(self, addr: Addr, t: float) -> None:
        if self._tick_at.get(addr) != t or addr in self.crashed:
            return
        del self._tick_at[addr]
        self.nodes[addr].tick(self.now)
        self._after_activity(addr)

    def _delay(self) -> float:
        return self.rng.uniform(self.link.delay_min, self.link.delay_max)

    def _route(self, src: Addr, eff: object) -> None:
        if isinstance(eff, SendPacket):
            copies = 2 if self.rng.random() < self.link.dup else 1
            for _ in range(copies):
                if self.rng.random() < self.link.loss:
                    self.dropped += 1
                    continue
                self.at(self.now + self._delay(), lambda d=eff.addr, p=eff.data:
                        self._deliver(src, d, p))
        elif isinstance(eff, StreamRequest):
            self.at(self.now + self._delay(), lambda: self._stream(src, eff))

    def _deliver(self, src: Addr, dst: Addr, data: bytes) -> None:
        if dst not in self.nodes or self._blocked(src, dst):
            self.dropped += 1
            return
        self.delivered += 1
        try:
            self.nodes[dst].receive_packet(self.now, src, data)
        except DecodeError:
            self.decode_errors += 1
        self._after_activity(dst)

    def _stream(self, src: Addr, req: StreamRequest) -> None:
        reply: StreamMessage | None = None
        dst = req.addr
        if dst in self.nodes and not self._blocked(src, dst):
            out = self.nodes[dst].handle_stream(self.now, src, wire.parse_stream(req.data))
            self._after_activity(dst)
            if out is not None:
                reply = wire.parse_stream(out)
        if req.expect_reply:
            def back() -> None:
                if src in self.crashed:
                    return
                self.nodes[src].stream_reply(self.now, req.token, reply)
                self._after_activity(src)
            self.at(self.now + self._delay(), back)

    def run_until(self, t_end: float, max_events: int = 50_000_000) -> None:
        for _ in range(max_events):
            if not self._heap or self._heap[0][0] > t_end:
                break
            t, _, fn = heapq.heappop(self._heap)
            self.now = t
            fn()
        else:
            raise RuntimeError("simulation exceeded its event budget")
        self.now = max(self.now, t_end)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def poke(self, addr: Addr) -> None:
        """Flush effects a test caused by calling a core directly."""
        self._after_activity(addr)
