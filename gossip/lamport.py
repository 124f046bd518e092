"""Lamport clock with Serf's semantics (serf/lamport.go)."""

from __future__ import annotations


class LamportClock:
    """``time`` is the next value to hand out; ``witness(v)`` moves past any seen value."""

    def __init__(self, start: int = 0) -> None:
        self.counter = start

    def time(self) -> int:
        return self.counter

    def increment(self) -> int:
        self.counter += 1
        return self.counter

    def witness(self, v: int) -> None:
        if v >= self.counter:
            self.counter = v + 1
