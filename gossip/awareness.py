"""Lifeguard local health awareness: a score that stretches our own timeouts when we are slow.

The score lives in ``[0, max_multiplier - 1]``; probe intervals (and the wait for indirect
acks) are multiplied by ``score + 1``.  It rises when we miss nacks we expected or have to
refute a rumour about ourselves, and falls after each successful probe.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int = 8) -> None:
        self.max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max - 1)

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
