"""Transmit-limited broadcast queue (memberlist ``TransmitLimitedQueue`` semantics).

Each queued message is piggybacked on outgoing packets until it has been sent
``retransmit_limit(mult, n)`` times.  Retrieval prefers the fewest-sent messages and, among
equally-sent ones, the newest that still fits.  A message with a ``key`` (memberlist's "named"
broadcasts: one per node name) replaces any queued message with the same key.

Items live in buckets by transmit count (a dict per count, insertion-ordered), so taking
messages and moving them to the next bucket is O(1) each: no sorting on the hot path.  The
queue also keeps a lower bound on its messages' sizes (the smallest queued since it was last
empty), so :meth:`BroadcastQueue.get` stops scanning as soon as the room left is below it
(at 1,000 nodes the queue holds ~580 messages and a packet takes ~10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


def retransmit_limit(mult: int, n: int) -> int:
    """``mult * ceil(log10(n + 1))``: 4 for n < 10 on LAN, 8 for n < 100..."""
    return mult * max(1, math.ceil(math.log10(n + 1)))


@dataclass(slots=True)
class _Item:
    msg: bytes
    key: str | None
    seq: int
    transmits: int = 0
    on_done: Callable[[], None] | None = None
    size: int = 0


@dataclass
class BroadcastQueue:
    """Messages waiting to be piggybacked, each bounded by a transmit count."""

    retransmit_mult: int = 4
    _buckets: dict[int, dict[int, _Item]] = field(default_factory=dict)
    _by_key: dict[str, _Item] = field(default_factory=dict)
    _seq: int = 0
    _len: int = 0
    dropped: int = 0
    _cap_n: int = -1
    _cap: int = 0
    _min_size: int = 0  # no queued message is smaller (meaningless while the queue is empty)

    def __len__(self) -> int:
        return self._len

    def queue(self, msg: bytes, key: str | None = None,
              on_done: Callable[[], None] | None = None) -> None:
        """Queue ``msg``; a keyed message invalidates the queued one with the same key."""
        if key is not None:
            old = self._by_key.get(key)
            if old is not None:
                self._remove(old)
        self._seq += 1
        size = len(msg)
        item = _Item(msg, key, self._seq, 0, on_done, size)
        self._buckets.setdefault(0, {})[item.seq] = item
        if not self._len or size < self._min_size:
            self._min_size = size
        self._len += 1
        if key is not None:
            self._by_key[key] = item

    def get(self, overhead: int, limit: int, n_nodes: int) -> list[bytes]:
        """Messages fitting in ``limit`` bytes, each costing ``len + overhead``."""
        if not self._len:
            return []
        if n_nodes != self._cap_n:  # log10 on every packet is measurable at 1,000 nodes
            self._cap_n = n_nodes
            self._cap = retransmit_limit(self.retransmit_mult, n_nodes)
        cap = self._cap
        buckets = self._buckets
        out: list[bytes] = []
        moves: list[tuple[int, list[_Item]]] = []
        room = limit
        misses = 0
        # below ``stop`` no queued message fits (or the packet counts as full): the scan ends
        stop = max(self._min_size + overhead, overhead + 1)
        for t in sorted(buckets):
            if room < stop:
                break
            taken: list[_Item] = []
            for item in reversed(buckets[t].values()):
                cost = item.size + overhead
                if cost > room:
                    misses += 1
                    if misses > 16:  # the packet is as good as full
                        room = 0
                        break
                    continue
                room -= cost
                out.append(item.msg)
                taken.append(item)
                if room < stop:
                    break
            if taken:
                moves.append((t, taken))
        # move each taken item one bucket up (or retire it); done after the scan so that no
        # item is taken twice in one call
        for t, taken in moves:
            bucket = buckets[t]
            nt = t + 1
            if nt >= cap:
                for item in taken:
                    del bucket[item.seq]
                    item.transmits = nt
                    self._len -= 1
                    self._finish(item)
            else:
                up = buckets.get(nt)
                if up is None:
                    up = buckets[nt] = {}
                for item in taken:
                    del bucket[item.seq]
                    item.transmits = nt
                    up[item.seq] = item
            if not bucket and buckets.get(t) is bucket:
                del buckets[t]
        return out

    def _unlink(self, item: _Item) -> None:
        bucket = self._buckets[item.transmits]
        del bucket[item.seq]
        if not bucket:
            del self._buckets[item.transmits]
        self._len -= 1

    def _finish(self, item: _Item) -> None:
        if item.key is not None and self._by_key.get(item.key) is item:
            del self._by_key[item.key]
        if item.on_done is not None:
            item.on_done()

    def _remove(self, item: _Item) -> None:
        self._unlink(item)
        self._finish(item)

    def prune(self, max_len: int) -> int:
        """Drop the most-transmitted (then oldest) messages until at most ``max_len`` remain."""
        dropped = 0
        for t in sorted(self._buckets, reverse=True):
            for item in list(self._buckets.get(t, {}).values()):
                if self._len <= max_len:
                    self.dropped += dropped
                    return dropped
                self._remove(item)
                dropped += 1
        self.dropped += dropped
        return dropped

    def reset(self) -> None:
        self._buckets.clear()
        self._by_key.clear()
        self._len = 0
