"""Re-contacting failed members, so a healed partition merges again (rumor's schedule).

Serf tries one failed member every 30 s with probability failed/alive.  rumor retries a failed
member soon after it failed (``RECONNECT_SOON``), then every ``reconnect_interval``, each time
about ``RECONNECT_FANOUT`` attempts cluster-wide, whatever the cluster's size; and a member
alive again after failing gets a push-pull at once (:meth:`Reconnector.welcome_back`).

The Serf core tells the reconnector of every change to its member table (:meth:`Reconnector.
changed`, :meth:`Reconnector.erased`), which keeps the alive count, the failed members and
their early retries up to date one member at a time: a 500|500 split costs each node 500
small updates instead of 500 recounts of the whole table.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable

from gossip.config import Addr, GossipConfig
from gossip.serf.model import MemberStatus, SerfMember

RECONNECT_FANOUT = 3  # expected reconnect attempts per failed member per interval
RECONNECT_SOON = (0.5, 1.0, 2.0, 4.0)  # s after a failure: early retries, RECONNECT_FANOUT each
RECONNECT_SLICES = 2  # the periodic retry runs this often per interval, as likely in total

_ALIVE, _FAILED = MemberStatus.ALIVE, MemberStatus.FAILED


class Reconnector:
    """When to push-pull with which failed member.  It is told of each member's status change
    (:meth:`changed`) and removal (:meth:`erased`), and asks ``push_pull(now, addr)`` for each
    attempt."""

    def __init__(self, gcfg: GossipConfig, now: float, rng: random.Random,
                 push_pull: Callable[[float, Addr], None]) -> None:
        self.gcfg = gcfg
        self.rng = rng
        self._push_pull = push_pull
        self.next_due = now + gcfg.reconnect_interval
        self._next_periodic = self.next_due
        self._last = now
        # per member name in the table: (its place in the table's order, the status last
        # told, the failure time its early retries are keyed with).  The place is a counter
        # at insertion, so a reaped and re-added name goes last again, as in the table (a
        # dict: new keys iterate last)
        self._known: dict[str, tuple[int, MemberStatus, float]] = {}
        self._next_seq = 0
        self._alive = 0  # members alive (ourselves included)
        # the failed members in table order (rng.choice picks among them), with their places
        self._failed_seq: list[int] = []
        self._failed: list[SerfMember] = []
        # every early retry (RECONNECT_SOON) of every failed member, in time order: each run
        # looks only at the retries that fell due since the last one (bisect).  Keys are
        # (due time, place), unique; dues and whose are the same entries' times and members
        self._soon_keys: list[tuple[float, int]] = []
        self._dues: list[float] = []
        self._whose: list[SerfMember] = []

    @property
    def _alive_others(self) -> int:
        """How many other members are alive (at least 1: a probability's divisor)."""
        return max(1, self._alive - 1)

    def changed(self, m: SerfMember) -> None:
        """Member ``m`` was added to the table or its status (or failure time) may have
        changed: update the counts.  A member that newly failed gets its first early retry
        RECONNECT_SOON[0] after its failure (``m.leave_time``)."""
        new = m.status
        rec = self._known.get(m.name)
        if rec is None:
            seq, old, failed_at = self._next_seq, MemberStatus.NONE, 0.0
            self._next_seq += 1
        else:
            seq, old, failed_at = rec
            if new is old and (new is not _FAILED or m.leave_time == failed_at):
                return
        self._drop(seq, old, failed_at)
        if new is _ALIVE:
            self._alive += 1
        elif new is _FAILED:
            failed_at = m.leave_time
            i = bisect.bisect_left(self._failed_seq, seq)
            self._failed_seq.insert(i, seq)
            self._failed.insert(i, m)
            for step in RECONNECT_SOON:
                key = (failed_at + step, seq)
                i = bisect.bisect_left(self._soon_keys, key)
                self._soon_keys.insert(i, key)
                self._dues.insert(i, key[0])
                self._whose.insert(i, m)
            self.next_due = min(self.next_due, failed_at + RECONNECT_SOON[0])
        self._known[m.name] = (seq, new, failed_at)

    def erased(self, m: SerfMember) -> None:
        """Member ``m`` was removed from the table (reaped or pruned)."""
        rec = self._known.pop(m.name, None)
        if rec is not None:
            self._drop(*rec)

    def _drop(self, seq: int, status: MemberStatus, failed_at: float) -> None:
        """Take back what a member with this place and old status contributed."""
        if status is _ALIVE:
            self._alive -= 1
        elif status is _FAILED:
            i = bisect.bisect_left(self._failed_seq, seq)
            del self._failed_seq[i], self._failed[i]
            for step in RECONNECT_SOON:
                i = bisect.bisect_left(self._soon_keys, (failed_at + step, seq))
                del self._soon_keys[i], self._dues[i], self._whose[i]

    def welcome_back(self, now: float, addr: Addr) -> None:
        """rumor: a failed member is alive again (often learnt by gossip, not by our own
        reconnect push-pull): push-pull with it now, about RECONNECT_FANOUT times
        cluster-wide, so the events each side fired meanwhile are exchanged at once instead
        of at the next 30 s push-pull.  Called before that member is marked alive (the
        probability divides by the other members alive without it)."""
        if self.rng.random() < RECONNECT_FANOUT / self._alive_others:
            self._push_pull(now, addr)

    def run(self, now: float, left: bool) -> None:
        """rumor: a failed member is retried soon (RECONNECT_SOON after its failure, about
        RECONNECT_FANOUT attempts cluster-wide each time), then every reconnect_interval as
        before. The periodic check runs RECONNECT_SLICES times per interval, each jittered
        (x0.5-1.5) so that nodes started together do not retry in step, with the probability
        divided accordingly: a big cluster sends as many attempts as before, a small one
        (where every node already tried every interval) up to RECONNECT_SLICES times as many,
        which keeps a healed split from waiting seconds for its first crossing attempt."""
        interval = self.gcfg.reconnect_interval
        failed = self._failed
        alive = self._alive_others
        last, self._last = self._last, now
        dues = self._dues
        hi = bisect.bisect_right(dues, now)
        soon = dues[hi] if hi < len(dues) else math.inf
        if failed and not left:
            lo = bisect.bisect_right(dues, last)
            for m in self._whose[lo:hi]:
                if self.rng.random() < RECONNECT_FANOUT / alive:
                    self._push_pull(now, (m.addr, m.port))
        if now < self._next_periodic:
            self.next_due = min(self._next_periodic, soon)
            return
        self._next_periodic = now + interval / RECONNECT_SLICES * (0.5 + self.rng.random())
        self.next_due = min(self._next_periodic, soon)
        if not failed or left:
            return
        # Serf tries with probability failed/alive every 30 s; we try every 5 s, with
        # RECONNECT_FANOUT times that probability, so that a lone failed member gets about
        # RECONNECT_FANOUT attempts per interval from the whole cluster, whatever its size,
        # and a split with many failed members is retried by everyone.
        if self.rng.random() < RECONNECT_FANOUT * len(failed) / alive / RECONNECT_SLICES:
            m = self.rng.choice(failed)
            self._push_pull(now, (m.addr, m.port))
