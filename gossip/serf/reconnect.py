"""Re-contacting failed members, so a healed partition merges again (rumor's schedule).

Serf tries one failed member every 30 s with probability failed/alive.  rumor retries a failed
member soon after it failed (``RECONNECT_SOON``), then every ``reconnect_interval``, each time
about ``RECONNECT_FANOUT`` attempts cluster-wide, whatever the cluster's size; and a member
alive again after failing gets a push-pull at once (:meth:`Reconnector.welcome_back`).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Mapping

from gossip.config import Addr, GossipConfig
from gossip.serf.model import MemberStatus, SerfMember

RECONNECT_FANOUT = 3  # expected reconnect attempts per failed member per interval
RECONNECT_SOON = (0.5, 1.0, 2.0, 4.0)  # s after a failure: early retries, RECONNECT_FANOUT each
RECONNECT_SLICES = 2  # the periodic retry runs this often per interval, as likely in total


class Reconnector:
    """When to push-pull with which failed member.  It reads the Serf member table (and its
    status change counter ``gen``) when run, and asks ``push_pull(now, addr)`` for each attempt."""

    def __init__(self, gcfg: GossipConfig, now: float, rng: random.Random,
                 push_pull: Callable[[float, Addr], None]) -> None:
        self.gcfg = gcfg
        self.rng = rng
        self._push_pull = push_pull
        self.next_due = now + gcfg.reconnect_interval
        self._next_periodic = self.next_due
        self._last = now
        self._failed: tuple[int, list[SerfMember]] = (-1, [])
        # the early retries (RECONNECT_SOON) of the failed members: due times, sorted, and
        # the member each belongs to; rebuilt with _failed
        self._soon: tuple[list[float], list[SerfMember]] = ([], [])
        self._alive_count = 1  # other members alive, with _failed
        self._welcome = (-1, 0)  # (status counter, members alive) for welcome_back

    def member_failed(self, now: float) -> None:
        """A member just failed: its first early retry is due RECONNECT_SOON[0] from now."""
        self.next_due = min(self.next_due, now + RECONNECT_SOON[0])

    def welcome_back(self, now: float, members: Mapping[str, SerfMember], addr: Addr,
                     gen: int) -> None:
        """rumor: a failed member is alive again (often learnt by gossip, not by our own
        reconnect push-pull): push-pull with it now, about RECONNECT_FANOUT times
        cluster-wide, so the events each side fired meanwhile are exchanged at once instead
        of at the next 30 s push-pull.  The caller then marks that one member alive and
        bumps the status counter ``gen`` by one: the alive count is carried over to it, so
        a healed split's burst of returns counts the member table once, not once each."""
        if self._welcome[0] != gen:
            self._welcome = (gen, sum(1 for m in members.values()
                                      if m.status is MemberStatus.ALIVE))
        n_alive = self._welcome[1]
        self._welcome = (gen + 1, n_alive + 1)
        alive = max(1, n_alive - 1)
        if self.rng.random() < RECONNECT_FANOUT / alive:
            self._push_pull(now, addr)

    def _alive_others(self, members: Mapping[str, SerfMember], gen: int) -> int:
        """How many other members are alive (at least 1: a probability's divisor); counted
        once per change of a member's status (``gen``), with the failed list."""
        self._refresh_failed(members, gen)
        return self._alive_count

    def _refresh_failed(self, members: Mapping[str, SerfMember], gen: int) -> None:
        if self._failed[0] == gen:
            return
        failed_now: list[SerfMember] = []
        alive = 0
        failed_st, alive_st = MemberStatus.FAILED, MemberStatus.ALIVE
        for m in members.values():
            st = m.status
            if st is alive_st:
                alive += 1
            elif st is failed_st:
                failed_now.append(m)
        # every early retry of every failed member, in time order: each call looks only
        # at the retries that fell due since the last one (bisect), not at every member.
        # (time, i) is unique (i: the member's index), so the member itself is never compared
        # (built as one sorted run per step: the final sort then only merges the runs)
        by_time = sorted([(m.leave_time, i, m) for i, m in enumerate(failed_now)])
        schedule = sorted([(t + step, i, m) for step in RECONNECT_SOON for t, i, m in by_time])
        self._failed = (gen, failed_now)
        self._soon = ([d[0] for d in schedule], [d[2] for d in schedule])
        self._alive_count = max(1, alive - 1)

    def run(self, now: float, members: Mapping[str, SerfMember], gen: int, left: bool) -> None:
        """rumor: a failed member is retried soon (RECONNECT_SOON after its failure, about
        RECONNECT_FANOUT attempts cluster-wide each time), then every reconnect_interval as
        before. The periodic check runs RECONNECT_SLICES times per interval, each jittered
        (x0.5-1.5) so that nodes started together do not retry in step, with the probability
        divided accordingly: a big cluster sends as many attempts as before, a small one
        (where every node already tried every interval) up to RECONNECT_SLICES times as many,
        which keeps a healed split from waiting seconds for its first crossing attempt."""
        interval = self.gcfg.reconnect_interval
        self._refresh_failed(members, gen)
        failed = self._failed[1]
        last, self._last = self._last, now
        dues, whose = self._soon
        hi = bisect.bisect_right(dues, now)
        soon = dues[hi] if hi < len(dues) else math.inf
        if failed and not left:
            lo = bisect.bisect_right(dues, last)
            if lo < hi:
                alive = self._alive_others(members, gen)
                for m in whose[lo:hi]:
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
        if self.rng.random() < (RECONNECT_FANOUT * len(failed) / self._alive_others(members, gen)
                                / RECONNECT_SLICES):
            m = self.rng.choice(failed)
            self._push_pull(now, (m.addr, m.port))
