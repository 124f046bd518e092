"""Admission of members a stranger told us about: vouched for by a member, or answering us.

memberlist adds every name an alive message or a push-pull mentions; one packet or stream
of invented names then fills the member table, and the inventions become probe, gossip and
push-pull targets.  Here a name announced by a stranger (a datagram not from a member's
gossip address, a stream not from a member's IP) waits in :class:`Admission` (not in the
member table: no probes, gossip, relaying or push-pull listing, and no Serf member event)
until a member announces it too (the first ping waits ``admit_delay`` for that: while a
cluster forms, most names reach a node from strangers first) or it answers a ping sent to
its advertised address under its name; memberlist and rumor both ignore pings for another
name, so an address cannot vouch for names it does not carry.  News from members, the
reply to our own join (the operator chose that seed) and an inbound stream's sender
introducing itself (TCP: its IP is real) are taken at once; a forged datagram source
address is the gap.

Bounds (``GossipConfig``): ``admit_per_message`` new names per packet or stream,
``admit_pending_max`` waiting at once, ``admit_pings_per_second`` verification pings (a
token bucket holding one second's worth); a name that has not answered within
``admit_attempts`` probe intervals (one ping per interval while pings are available) is
forgotten.  What exceeds a bound is dropped and counted.  This module is sans-IO: the
membership core sends the pings :meth:`Admission.due` returns.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from gossip import wire
from gossip.config import GossipConfig

_ONE = 1 - 1e-9  # a token, allowing for float rounding in the refill
_SLACK = 1e-6  # seconds: the refill deadline must move time forward


@dataclass(slots=True)
class Pending:
    alive: wire.Alive  # the newest announcement heard
    addr: str  # its address as text
    next_at: float  # when the next ping (or the giving up) is due
    give_up: float = 0.0  # forgotten at this time unless it answered
    seq: int = -1  # sequence number of the outstanding ping


@dataclass
class AdmissionMetrics:
    offered: int = 0  # distinct new names queued for verification
    admitted: int = 0
    refused: int = 0  # over admit_per_message or admit_pending_max
    expired: int = 0  # never answered


class Admission:
    def __init__(self, cfg: GossipConfig, now: float) -> None:
        self.cfg = cfg
        self.pending: dict[str, Pending] = {}
        self.by_seq: dict[int, str] = {}
        self.metrics = AdmissionMetrics()
        self._budget = cfg.admit_per_message
        self._tokens = cfg.admit_pings_per_second
        self._refilled = now
        self._heap: list[tuple[float, int, str, Pending]] = []  # (next_at, n, name, entry)
        self._n = 0
        self._addrs: dict[tuple[str, int], int] = {}  # gossip addresses of members
        self._ips: dict[str, int] = {}

    # --- who vouches: members, identified by the address they send from -------------------

    def member_at(self, addr: tuple[str, int]) -> None:
        self._addrs[addr] = self._addrs.get(addr, 0) + 1
        self._ips[addr[0]] = self._ips.get(addr[0], 0) + 1

    def member_gone(self, addr: tuple[str, int]) -> None:
        _decrement(self._addrs, addr)
        _decrement(self._ips, addr[0])

    def vouches(self, src: tuple[str, int], stream: bool = False) -> bool:
        """A datagram from a member's gossip address, or a TCP stream from a member's IP
        (any port: the connecting side's port is ephemeral)."""
        return src[0] in self._ips if stream else src in self._addrs

    def __len__(self) -> int:
        return len(self.pending)

    def begin_message(self) -> None:
        """A new packet or stream: its own budget of new names starts."""
        self._budget = self.cfg.admit_per_message

    def offer(self, now: float, alive: wire.Alive, addr: str) -> None:
        """A name we do not know was announced by someone else."""
        p = self.pending.get(alive.node)
        if p is not None:
            if alive.incarnation > p.alive.incarnation:
                p.alive, p.addr = alive, addr
            return
        if self._budget <= 0 or len(self.pending) >= self.cfg.admit_pending_max:
            self.metrics.refused += 1
            return
        self._budget -= 1
        self.metrics.offered += 1
        first = now + self.cfg.admit_delay  # a member may vouch for it meanwhile
        p = self.pending[alive.node] = Pending(
            alive, addr, first, give_up=first + self.cfg.admit_attempts * self.cfg.probe_interval)
        self._push(p)

    def _push(self, p: Pending) -> None:
        self._n += 1
        heapq.heappush(self._heap, (p.next_at, self._n, p.alive.node, p))

    def _live(self, entry: tuple[float, int, str, Pending]) -> bool:
        return self.pending.get(entry[2]) is entry[3] and entry[3].next_at == entry[0]

    def forget(self, name: str) -> None:
        p = self.pending.pop(name, None)
        if p is not None:
            self.by_seq.pop(p.seq, None)

    def answered(self, seq: int) -> Pending | None:
        """The pending member whose verification ping ``seq`` acknowledged, if any."""
        name = self.by_seq.pop(seq, None)
        if name is None:
            return None
        p = self.pending.pop(name, None)
        if p is not None:
            self.metrics.admitted += 1
        return p

    def deadline(self) -> float:
        heap, pending = self._heap, self.pending
        while heap:  # drop stale entries (_live, inlined: this runs after every packet)
            entry = heap[0]
            p = entry[3]
            if pending.get(entry[2]) is p and p.next_at == entry[0]:
                break
            heapq.heappop(heap)
        else:
            return math.inf
        t = entry[0]
        if self._tokens < _ONE and p.give_up > t:  # a ping waits for the bucket to refill
            rate = self.cfg.admit_pings_per_second
            t = max(t, min(p.give_up, self._refilled + (1 - self._tokens) / rate + _SLACK))
        return t

    def due(self, now: float, next_seq: Callable[[], int]) -> list[tuple[int, Pending]]:
        """Pings to send now as (seq, pending); forgets names that never answered.

        ``next_seq`` is the core's sequence-number allocator."""
        heap = self._heap
        if not heap or heap[0][0] > now:
            return []
        rate = self.cfg.admit_pings_per_second
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        out: list[tuple[int, Pending]] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            p = entry[3]
            if not self._live(entry):
                continue
            self.by_seq.pop(p.seq, None)
            if now >= p.give_up:
                del self.pending[entry[2]]
                self.metrics.expired += 1
                continue
            if self._tokens < _ONE:  # out of pings: retry when the bucket refills
                p.next_at = min(p.give_up, now + (1 - self._tokens) / rate + _SLACK)
                self._push(p)
                break
            self._tokens -= 1
            p.seq = next_seq()
            p.next_at = min(p.give_up, now + self.cfg.probe_interval)
            self.by_seq[p.seq] = entry[2]
            self._push(p)
            out.append((p.seq, p))
        return out


K = TypeVar("K")


def _decrement(counts: dict[K, int], key: K) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
