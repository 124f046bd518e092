"""Lifeguard suspicion timer: a suspect is declared dead sooner when others confirm it.

``min_timeout = mult * max(1, log10(n)) * probe_interval``, ``max = max_mult * min``.  The
timer starts at ``max`` when ``k`` independent confirmations are expected and shrinks
logarithmically with each confirmation from a new accuser, never below ``min``.
"""

from __future__ import annotations

import math


def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    """memberlist ``suspicionTimeout``: scaled by log10 of the cluster size."""
    node_scale = max(1.0, math.log10(max(1, n)))
    return math.floor(mult * node_scale * interval * 1000) / 1000


class Suspicion:
    """Deadline for one suspected node, shortened by independent confirmations."""

    def __init__(self, now: float, accuser: str, k: int, min_timeout: float,
                 max_timeout: float) -> None:
        self.start = now
        self.k = k
        self.min = min_timeout
        self.max = max_timeout if k > 0 else min_timeout
        self.confirmations: set[str] = {accuser}
        self.deadline = now + self.max

    def _remaining(self, confirmed: int) -> float:
        if self.k <= 0:
            return self.min
        frac = math.log(confirmed + 1) / math.log(self.k + 1)
        timeout = self.max - frac * (self.max - self.min)
        return max(math.floor(timeout * 1000) / 1000, self.min)

    def confirm(self, now: float, sender: str) -> bool:
        """Record a confirmation; True if it was new (worth re-gossiping)."""
        if sender in self.confirmations or len(self.confirmations) - 1 >= self.k:
            return False
        self.confirmations.add(sender)
        self.deadline = self.start + self._remaining(len(self.confirmations) - 1)
        return True

    def cap(self, k: int) -> bool:
        """At most ``k`` confirmations can still come (the other possible confirmers are
        themselves suspected or gone): expect no more than that, so the timer shortens as
        memberlist's would for a cluster that small. True if ``k`` was lowered."""
        k = max(k, len(self.confirmations) - 1)
        if k >= self.k:
            return False
        self.k = k
        if k <= 0:
            self.max = self.min
        self.deadline = min(self.deadline,
                            self.start + self._remaining(len(self.confirmations) - 1))
        return True

    def expired(self, now: float) -> bool:
        return now >= self.deadline
