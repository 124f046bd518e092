"""Lamport clock with Serf's semantics (serf/lamport.go), bounded to what the wire can carry.

Serf's clocks are Go ``uint64``s that wrap; ours saturate at :data:`MAX_LTIME` instead, so a
value we hand out can always be encoded.  :meth:`LamportClock.plausible` is the check the Serf
layer applies to every received time: one message may not move a clock further than a
configured jump (``SerfConfig.max_ltime_jump``).
"""

from __future__ import annotations

MAX_LTIME = (1 << 64) - 1  # uint64, as every LTime field on the wire


class LamportClock:
    """``time`` is the next value to hand out; ``witness(v)`` moves past any seen value."""

    def __init__(self, start: int = 0) -> None:
        self.counter = min(start, MAX_LTIME)

    def time(self) -> int:
        return self.counter

    def increment(self) -> int:
        if self.counter < MAX_LTIME:
            self.counter += 1
        return self.counter

    def exhausted(self) -> bool:
        """True once the clock has reached the largest encodable time."""
        return self.counter >= MAX_LTIME

    def witness(self, v: int) -> None:
        if v >= self.counter:
            self.counter = min(v + 1, MAX_LTIME)

    def plausible(self, v: int, jump: int) -> bool:
        """``v`` is at most ``jump`` ahead of this clock (and encodable)."""
        return 0 <= v <= MAX_LTIME and v <= self.counter + jump
