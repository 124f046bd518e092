"""The user-event dedup buffer (Serf's event buffer), keyed by LTime."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class Slot:
    ltime: int
    events: list[tuple[str, bytes]] = field(default_factory=list)


class EventDedup:
    """The user events seen recently, by LTime: the newest ``window`` LTimes are held (Serf's
    event buffer, larger here so bursts are not dropped as "too old"); push-pull offers the
    newest of them to peers."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.slots: dict[int, Slot] = {}
        self._heap: list[int] = []  # the LTimes of slots, oldest first

    def too_old(self, ltime: int, now_ltime: int) -> bool:
        """Serf's rule (older than the window behind the clock), except for times at or
        above the oldest slot still held: those can still be deduped, and a clock pushed
        ahead by a forged event must not make the honest events in flight "too old"."""
        return now_ltime > self.window and ltime < now_ltime - self.window and \
            (not self._heap or ltime < self._heap[0])

    def add(self, ltime: int, name: str, payload: bytes, trim: bool = True) -> bool:
        """Record an event; False if it is already held."""
        slot = self.slots.get(ltime)
        if slot is None:
            slot = self.slots[ltime] = Slot(ltime)
            heapq.heappush(self._heap, ltime)
            if trim:
                self.trim()
        elif (name, payload) in slot.events:
            return False
        slot.events.append((name, payload))
        return True

    def trim(self) -> None:
        """Keep the newest ``window`` slots (so every slot above the oldest is held)."""
        while len(self.slots) > self.window:
            del self.slots[heapq.heappop(self._heap)]

    def newest(self, n: int) -> list[Slot]:
        """The ``n`` newest slots, oldest first."""
        slots = self.slots
        return [slots[lt] for lt in sorted(slots)[-n:]]  # int keys: no key function
