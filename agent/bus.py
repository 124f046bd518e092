"""The agent's event bus: one indexed, durable log of user events and member changes.

Owns:

* ``Record``: one bus entry (``Index``, ``Topic``, ``Type``, ``Key``, ``FilterKeys``,
  ``Payload``), with its renderings (Nomad's NDJSON line, an SSE frame, ...) made once and
  cached, so N subscribers of one format cost one encoding.
* ``Bus``: the newest ``capacity`` records (``-stream-buffer``), each with an agent-local
  Index that only grows and is never reused (with a data dir: across restarts too, see
  ``agent.buslog``); ``publish`` hands a new record to every live subscriber in one loop.
* ``Subscription``: one reader.  It first catches up from the buffer (starting after the Index
  it asked for, with a ``Stream``/``Gap`` record when records it asked for are gone), then
  goes live: ``publish`` writes the record's cached frame straight to the reader's socket if
  its task is parked waiting (``DirectSlot``: no task wake-up, one ``os.write``), else appends
  it to its bounded queue.  A live subscriber whose queue is full
  (it stopped reading) is closed: its queue is dropped and replaced by one ``Stream``/
  ``Closed`` record saying why and where to resume, so it never slows ``publish``, gossip or
  anybody else, and its memory stays bounded.  A *durable* subscription (webhook sinks) never
  goes live: it reads the buffer at its own pace and is never closed.
* The ACL hook (topic filters live in ``agent.topics``): every subscriber has
  ``may_read(record) -> bool``; ``Bus.access(token)`` builds it (allow-all
  until ACLs plug in).
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from agent.http.types import DirectSlot, go_json
from agent.topics import STREAM_TOPIC

log = logging.getLogger("rumor.bus")

NODE_TYPES = {"join": "NodeJoin", "leave": "NodeLeave", "failed": "NodeFailed",
              "update": "NodeUpdate", "reap": "NodeReap"}
EVENT_TYPE = "UserEvent"
MAX_INDEX = (1 << 63) - 1
QUEUE_LIMIT = 1024  # records queued for one live subscriber before it is closed as too slow
HOT = 256  # renderings are cached for the newest HOT records only
HEARTBEAT_INTERVAL = 10.0  # idle live subscribers get a heartbeat this often (Nomad: 10 s)

MayRead = Callable[["Record"], bool]
Match = Callable[["Record"], bool]


def allow_all(record: Record) -> bool:
    return True


def open_access(token: str | None) -> MayRead:
    """The default ``Bus.access``: every token may read every record (no ACLs yet)."""
    return allow_all


@dataclass(eq=False, slots=True)
class Record:
    index: int
    topic: str
    type: str
    key: str
    time: float
    payload: bytes  # a JSON object, Go-encoded
    filter_keys: tuple[str, ...] | None = None
    _cache: dict[str, bytes] | None = field(default=None, repr=False)

    def cached(self, kind: str, render: Callable[[Record], bytes]) -> bytes:
        """``render(self)``, computed once per kind while the record is among the newest."""
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        out = cache.get(kind)
        if out is None:
            out = cache[kind] = render(self)
        return out

    def event_json(self) -> bytes:
        """Nomad's Event object: Topic, Type, Key, Namespace, FilterKeys, Index, Payload."""
        return self.cached("event", _event_json)

    def ndjson(self) -> bytes:
        """One line of ``/v1/event/stream``: ``{"Index":N,"Events":[event]}\\n``."""
        return self.cached("ndjson", _ndjson)

    def sse(self) -> bytes:
        """One Server-Sent Events frame: ``id:`` Index, ``event:`` Topic, ``data:`` event."""
        return self.cached("sse", _sse)


def _event_json(r: Record) -> bytes:
    head = go_json({"Topic": r.topic, "Type": r.type, "Key": r.key, "Namespace": "",
                    "FilterKeys": list(r.filter_keys) if r.filter_keys is not None else None,
                    "Index": r.index})
    return head[:-1] + b',"Payload":' + r.payload + b"}"


def _ndjson(r: Record) -> bytes:
    return b'{"Index":%d,"Events":[%s]}\n' % (r.index, r.event_json())


def _sse(r: Record) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (r.index, r.topic.encode(), r.event_json())


# --- subscriptions ------------------------------------------------------------------------


class Subscription:
    """One reader of the bus; ``await next()`` gives records in Index order, None at the end."""

    def __init__(self, bus: Bus, match: Match, may_read: MayRead, cursor: int, limit: int,
                 durable: bool) -> None:
        self.bus, self.match, self.may_read = bus, match, may_read
        self.cursor = cursor  # Index of the last record handed out (or skipped)
        self.limit, self.durable = limit, durable
        self.queue: deque[Record] = deque()
        self.live = False
        self.done = False
        self.high_water = 0  # the longest its queue ever was
        self._wake = trio.Event()
        # direct writes (streams): while the reader is parked waiting (idle), push writes the
        # record's frame straight to its socket; a partial write leaves the rest in `raw`
        self.direct: DirectSlot | None = None
        self.frame: Callable[[Record], bytes] | None = None
        self.idle = False
        self.raw = b""

    def wants(self, r: Record) -> bool:
        if not self.match(r):
            return False
        try:
            return bool(self.may_read(r))
        except Exception:
            log.exception("bus: may_read failed; record %d withheld", r.index)
            return False

    def _write_direct(self, r: Record) -> bool:
        """Write ``r`` to an idle reader's socket now; False if it must be queued instead."""
        slot, frame = self.direct, self.frame
        if not self.idle or self.queue or self.raw or slot is None or slot.fd < 0 \
                or frame is None:
            return False
        data = frame(r)
        try:
            n = os.write(slot.fd, data)
        except OSError:  # full (BlockingIOError) or broken: the reader's own write decides
            return False
        if n < len(data):
            self.raw = data[n:]
            self.bus.direct_partial += 1
            self._wake.set()
        self.bus.direct_writes += 1
        return True

    def push(self, r: Record) -> None:
        """Called by ``Bus.publish`` for live subscribers: queue it, or close if full."""
        if not self.wants(r):
            if not self.queue:
                self.cursor = r.index
            return
        if self._write_direct(r):
            self.cursor = r.index
            return
        if len(self.queue) >= self.limit:
            self.bus.slow_closed += 1
            self.close(f"subscriber too slow: {len(self.queue)} records queued unread; "
                       f"resume with index={self.cursor}")
            return
        self.queue.append(r)
        if len(self.queue) > self.high_water:
            self.high_water = len(self.queue)
        self._wake.set()

    def push_heartbeat(self) -> None:
        """Called by the bus's heartbeat loop: an idle reader gets ``HEARTBEAT``."""
        if not self.queue and not self._write_direct(HEARTBEAT):
            self.queue.append(HEARTBEAT)
            self._wake.set()

    def close(self, reason: str) -> None:
        """End the subscription: the reader gets one Stream/Closed record, then None."""
        if self.done:
            return
        self.queue.clear()
        self.queue.append(self.bus.stream_record(
            "Closed", {"Reason": reason, "LastIndex": self.cursor}, self.cursor))
        self.done = True
        self.bus.unsubscribe(self)
        self._wake.set()

    def poll(self) -> Record | None:
        """The next record if one is ready now, else None (never waits).  ``RAW``: the rest
        of a partly written direct frame is waiting in ``take_raw()``."""
        if self.raw:
            return RAW
        if self.queue:
            r = self.queue.popleft()
            if r.topic != STREAM_TOPIC:
                self.cursor = r.index
            return r
        if self.done or self.live:
            return None
        return self._catch_up()

    async def next(self) -> Record | None:
        """The next record, waiting for one; None once the subscription is over."""
        while True:
            r = self.poll()
            if r is not None:
                return r
            if self.done:
                await trio.lowlevel.checkpoint()
                return None
            if self.live:
                self._wake = trio.Event()
                self.idle = True
                try:
                    await self._wake.wait()
                finally:
                    self.idle = False
            elif self.durable:
                await self.bus.changed()

    def take_raw(self) -> bytes:
        raw, self.raw = self.raw, b""
        return raw

    def _catch_up(self) -> Record | None:
        bus = self.bus
        while self.cursor < bus.last_index:
            first = bus.first_index
            if self.cursor < first - 1:
                gap = bus.stream_record("Gap", {"Requested": self.cursor,
                                                "FirstAvailable": first}, first - 1)
                self.cursor = first - 1
                return gap
            r = bus.after(self.cursor)
            if r is None:
                break
            self.cursor = r.index
            if self.wants(r):
                return r
        if not self.durable:
            self.live = True
            bus.go_live(self)
        return None


# --- the bus ------------------------------------------------------------------------------


class Bus:
    def __init__(self, capacity: int = 10_000, path: Path | None = None, *,
                 queue_limit: int = QUEUE_LIMIT, start: int | None = None) -> None:
        """A new log (or none: no data dir) starts numbering at ``start``, by default the
        current Unix time in milliseconds: an agent without a data dir (or whose data dir was
        wiped) then still never reuses an Index after a restart (unless it published more than
        1,000 records a second), and a client resuming with an Index from before gets a Gap
        instead of unrelated records.  An existing log continues its own numbering."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.queue_limit = queue_limit
        self._recs: list[Record] = []
        self._lo = 0
        self._next = start if start is not None else max(1, int(time.time() * 1000))
        self._live: dict[Subscription, None] = {}
        self._changed = trio.Event()
        self.heartbeat_interval = HEARTBEAT_INTERVAL
        self.access: Callable[[str | None], MayRead] = open_access  # ACL hook
        self.published = 0
        self.slow_closed = 0
        self.direct_writes = 0
        self.direct_partial = 0
        self.log = None
        if path is not None:
            from agent.buslog import BusLog

            self.log = BusLog(path, capacity)
            records, loaded_next = self.log.load()
            self._recs = records
            if loaded_next > 1 or records:  # else a new (or wiped) log: numbering as above
                self._next = loaded_next

    # reading

    @property
    def last_index(self) -> int:
        return self._next - 1

    @property
    def first_index(self) -> int:
        return self._recs[self._lo].index if len(self._recs) > self._lo else self._next

    def __len__(self) -> int:
        return len(self._recs) - self._lo

    def after(self, index: int) -> Record | None:
        """The oldest held record with an Index above ``index`` (numbers may have holes:
        after an unclean restart, numbering resumes past a reservation)."""
        recs = self._recs
        pos = bisect.bisect_right(recs, index, lo=self._lo, key=_index_of)
        return recs[pos] if pos < len(recs) else None

    def held(self) -> list[Record]:
        return self._recs[self._lo:]

    @property
    def subscribers(self) -> int:
        return len(self._live)

    async def changed(self) -> None:
        await self._changed.wait()

    # writing

    def publish(self, topic: str, kind: str, key: str, payload: Any,
                filter_keys: tuple[str, ...] | None = None) -> Record:
        r = Record(self._next, topic, kind, key, time.time(), go_json(payload), filter_keys)
        self._next += 1
        recs = self._recs
        recs.append(r)
        if len(recs) - self._lo > self.capacity:
            recs[self._lo] = _EVICTED
            self._lo += 1
            if self._lo >= self.capacity:
                del recs[: self._lo]
                self._lo = 0
        cold = len(recs) - 1 - HOT
        if cold >= self._lo:
            recs[cold]._cache = None
        self.published += 1
        if self.log is not None:
            self.log.append(r, self._next)
        for sub in list(self._live):
            sub.push(r)
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        return r

    def publish_event(self, event_json: dict[str, Any]) -> Record:
        """A user event, Payload exactly as ``/v1/event/list`` renders it; Key = its name."""
        return self.publish("Event", EVENT_TYPE, event_json["Name"], event_json,
                            (event_json["ID"],))

    def publish_member(self, kind: str, member_json: dict[str, Any]) -> Record:
        """A member change (Serf's join/leave/failed/update/reap); Key = the node name."""
        return self.publish("Node", NODE_TYPES[kind], member_json["Name"], member_json)

    def stream_record(self, kind: str, payload: dict[str, Any], index: int) -> Record:
        """A record about a subscription itself (Gap, Closed): not stored, not numbered."""
        return Record(index, STREAM_TOPIC, kind, "", time.time(), go_json(payload))

    # subscribing

    def subscribe(self, match: Match, may_read: MayRead = allow_all, after: int | None = None,
                  *, durable: bool = False, limit: int | None = None) -> Subscription:
        """A reader of the records after Index ``after``; ``None``: only new ones; 0: all held.

        ``after`` beyond the newest Index (an index from before the agent lost its log) is
        answered with a Gap record and the whole buffer.
        """
        if after is None:
            start = self.last_index
        elif after == 0:
            start = self.first_index - 1
        else:
            start = after
        sub = Subscription(self, match, may_read, start, limit or self.queue_limit, durable)
        if start > self.last_index:
            first = self.first_index
            sub.queue.append(self.stream_record("Gap", {"Requested": start,
                                                        "FirstAvailable": first}, first - 1))
            sub.cursor = first - 1
        return sub

    async def run_heartbeats(self) -> None:
        """Every ``heartbeat_interval`` s, one loop hands every idle live subscriber a
        ``HEARTBEAT`` (one timer for all, instead of one per subscriber)."""
        last = trio.current_time()
        while True:
            await trio.sleep(min(self.heartbeat_interval, 1.0))
            now = trio.current_time()
            if now - last >= self.heartbeat_interval:
                last = now
                for sub in list(self._live):
                    sub.push_heartbeat()

    def go_live(self, sub: Subscription) -> None:
        self._live[sub] = None

    def unsubscribe(self, sub: Subscription) -> None:
        sub.done = True
        self._live.pop(sub, None)

    def close(self) -> None:
        """A clean shutdown: the next start continues numbering without a jump."""
        if self.log is not None:
            self.log.close(self._next)


def _index_of(r: Record) -> int:
    return r.index


_EVICTED = Record(0, STREAM_TOPIC, "Evicted", "", 0.0, b"{}")
HEARTBEAT = Record(0, STREAM_TOPIC, "Heartbeat", "", 0.0, b"{}")  # never written as a record
RAW = Record(0, STREAM_TOPIC, "Raw", "", 0.0, b"{}")  # see Subscription.poll
