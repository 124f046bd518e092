"""Serf's user-event coalescing (serf/coalesce.go, coalesce_user.go), sans-IO.

Only events fired with "can coalesce" set take part.  Per event name, only the events with
the highest LTime seen are kept (all of them if several share it).  The batch is released
when no event arrived for ``quiescent`` seconds, or ``period`` seconds after its first
event, whichever comes first.  Other events pass straight through.
"""

from __future__ import annotations

import math
from typing import Generic, Protocol, TypeVar


class _Event(Protocol):
    @property
    def ltime(self) -> int: ...

    @property
    def name(self) -> str: ...


E = TypeVar("E", bound=_Event)


class Coalescer(Generic[E]):
    def __init__(self, period: float, quiescent: float) -> None:
        if period <= 0 or quiescent <= 0:
            raise ValueError("coalescing needs a positive period and quiescent period")
        self.period = period
        self.quiescent = quiescent
        self._latest: dict[str, tuple[int, list[E]]] = {}
        self._period_end = math.inf
        self._quiet_end = math.inf

    def add(self, now: float, ev: E) -> None:
        if not self._latest:
            self._period_end = now + self.period
        self._quiet_end = now + self.quiescent
        held = self._latest.get(ev.name)
        if held is None or held[0] < ev.ltime:
            self._latest[ev.name] = (ev.ltime, [ev])
        elif held[0] == ev.ltime:
            held[1].append(ev)

    def deadline(self) -> float:
        return min(self._period_end, self._quiet_end)

    def flush_due(self, now: float) -> list[E]:
        if not self._latest or now < self.deadline():
            return []
        out = [ev for _, evs in self._latest.values() for ev in evs]
        self._latest.clear()
        self._period_end = self._quiet_end = math.inf
        return out

    def __len__(self) -> int:
        return sum(len(evs) for _, evs in self._latest.values())
