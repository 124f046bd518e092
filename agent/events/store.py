"""``EventStore``: the newest ``capacity`` events in arrival order, deduped by ID, each with a
per-agent arrival ``seq`` for resumable streams, Consul's blocking-list semantics
(``wait_list``, ``effective_wait``), and optional persistence (``agent.events.logfile``) so a
restarted agent keeps its list (protocol.md §4.4-4.5).

No sockets, no HTTP; trio is used only to park waiters (and fsync in a thread).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import trio

from agent.datadir import DataFileError
from agent.events.logfile import EventLog, StoreState
from agent.events.record import Event, id_to_index, is_event_id

MAX_QUERY_TIME = 600.0  # Consul's maxQueryTime for the event-list blocking query (no jitter)

SeqEvents = list[tuple[int, Event]]  # (arrival seq, event), oldest first
EventList = list[Event]


def effective_wait(wait: float | None) -> float:
    """The timeout of a blocking list with ``index > 0`` (Consul ``EventList``).

    No ``wait`` (or ``0``) means the 600 s maximum; longer waits are capped at 600 s; a negative
    wait (Go accepts ``-5s``) times out at once. No jitter is added for this endpoint.
    """
    if wait is None or wait == 0:
        return MAX_QUERY_TIME
    return min(max(wait, 0.0), MAX_QUERY_TIME)




class EventStore:
    """The newest ``capacity`` events in arrival order, with Consul's blocking list.

    Each stored event gets ``seq`` (1, 2, ...; never reused, survives eviction and restarts).
    Waking uses one shared ``trio.Event`` replaced on every add, so N parked waiters cost one
    event. Metrics: ``stored``, ``deduped``, ``evicted`` (counters for this process), ``parked``
    (waiters now), ``loaded`` (events restored from disk), ``persist_errors``, ``fsyncs``.

    Persistence (with ``path``): every add appends one line to an ``EventLog``; ``sync()``
    makes everything added so far durable (group commit).
    """

    def __init__(self, capacity: int = 256, path: Path | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._events: deque[tuple[int, Event, int]] = deque()  # (seq, event, index)
        self._ids: set[str] = set()
        self._next_seq = 1
        self.max_ltime = 0
        self.stored = 0
        self.deduped = 0
        self.evicted = 0
        self.parked = 0
        self.loaded = 0
        self._changed = trio.Event()
        self.on_add: list[Callable[[], None]] = []  # called synchronously after each add
        self._log = EventLog(path, capacity) if path is not None else None
        if self._log is not None:
            self._load(self._log)

    # adding and reading

    def add(self, ev: Event) -> bool:
        """Store ``ev``; False (and no change) when an event with this ID is already held."""
        if not is_event_id(ev.id):
            raise ValueError(f"event ID {ev.id!r} is not UUID-shaped")
        if ev.id in self._ids:
            self.deduped += 1
            return False
        seq = self._insert(self._next_seq, ev)
        self.stored += 1
        if self._log is not None:
            self._log.append(seq, ev, self._state)
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        for callback in self.on_add:
            callback()
        return True

    def _insert(self, seq: int, ev: Event) -> int:
        self._events.append((seq, ev, id_to_index(ev.id)))
        self._ids.add(ev.id)
        self._next_seq = seq + 1
        self.max_ltime = max(self.max_ltime, ev.ltime)
        while len(self._events) > self.capacity:
            _, old, _ = self._events.popleft()
            self._ids.discard(old.id)
            self.evicted += 1
        return seq

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __iter__(self) -> Iterator[Event]:
        return iter([ev for _, ev, _ in self._events])

    @property
    def last_seq(self) -> int:
        """The seq of the newest event ever stored (0 before the first)."""
        return self._next_seq - 1

    @property
    def first_seq(self) -> int:
        """The seq of the oldest event still held (``last_seq + 1`` when empty).

        A stream resuming from ``s < first_seq - 1`` has missed evicted events.
        """
        return self._events[0][0] if self._events else self._next_seq

    def index(self, name: str | None = None) -> int:
        """The ``X-Consul-Index`` of ``list(name)`` without building the list."""
        for _, ev, idx in reversed(self._events):
            if not name or ev.name == name:
                return idx
        return 1

    def list(self, name: str | None = None) -> tuple[int, EventList]:
        """(index, events oldest to newest), exact ``name`` filter; index 1 when empty."""
        rows = [(ev, idx) for _, ev, idx in self._events if not name or ev.name == name]
        return (rows[-1][1] if rows else 1), [ev for ev, _ in rows]

    def since(self, seq: int, name: str | None = None) -> SeqEvents:
        """Held events with arrival seq greater than ``seq``, oldest first."""
        out: SeqEvents = []
        for s, ev, _ in reversed(self._events):
            if s <= seq:
                break
            if not name or ev.name == name:
                out.append((s, ev))
        out.reverse()
        return out

    # blocking

    async def _park(self) -> None:
        changed = self._changed
        self.parked += 1
        try:
            await changed.wait()
        finally:
            self.parked -= 1

    async def wait_list(
        self, name: str | None, index: int, timeout: float
    ) -> tuple[int, EventList]:
        """Consul's blocking ``/v1/event/list`` (protocol.md §4.5).

        ``index`` 0 returns at once. Otherwise park only while the current index for ``name``
        equals ``index`` (a bigger or smaller one returns at once); every add wakes the waiter,
        which re-checks; after ``timeout`` seconds return the (unchanged) result.
        Pass ``effective_wait(wait)`` as the timeout for Consul's defaults and cap.
        """
        if index == 0 or self.index(name) != index:
            await trio.lowlevel.checkpoint()
        else:
            with trio.move_on_after(max(timeout, 0.0)):
                while self.index(name) == index:
                    await self._park()
        return self.list(name)

    async def wait_seq(
        self, seq: int, timeout: float, name: str | None = None
    ) -> SeqEvents:
        """Events after ``seq`` (see ``since``), waiting up to ``timeout`` s for the first one.

        Returns ``[]`` on timeout.
        """
        found = self.since(seq, name)
        if found:
            await trio.lowlevel.checkpoint()
            return found
        with trio.move_on_after(max(timeout, 0.0)):
            while not found:
                await self._park()
                found = self.since(seq, name)
        return found

    # persistence

    @property
    def persist_errors(self) -> int:
        return self._log.persist_errors if self._log is not None else 0

    @property
    def fsyncs(self) -> int:
        return self._log.fsyncs if self._log is not None else 0

    async def sync(self) -> None:
        """Return once every event added so far is on disk (fsync in a worker thread).

        Group commit: callers arriving while an fsync runs wait for the next one, which covers
        all of them. Raises ``OSError`` when the log cannot be made durable (nothing to do
        without a data dir)."""
        if self._log is None:
            await trio.lowlevel.checkpoint()
            return
        await self._log.sync()

    def close(self) -> None:
        """Close the persistence file (the store stays usable in memory)."""
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _state(self) -> StoreState:
        return self._next_seq, self.max_ltime, [(seq, ev) for seq, ev, _ in self._events]

    def _load(self, file: EventLog) -> None:
        next_seq, max_ltime, rewrite = file.load(self.__contains__, self._insert)
        self.evicted = 0  # eviction while loading is not a runtime event
        self._next_seq = max(self._next_seq, next_seq)
        self.max_ltime = max(self.max_ltime, max_ltime)
        self.loaded = len(self._events)
        if rewrite:
            try:
                file.compact(*self._state())
            except OSError as exc:
                raise DataFileError(f"cannot rewrite {file.path}: "
                                    f"{exc.strerror or exc}") from None
