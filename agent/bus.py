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
  goes live: ``publish`` appends to its bounded queue.  A live subscriber whose queue is full
  (it stopped reading) is closed: its queue is dropped and replaced by one ``Stream``/
  ``Closed`` record saying why and where to resume, so it never slows ``publish``, gossip or
  anybody else, and its memory stays bounded.  A *durable* subscription (webhook sinks) never
  goes live: it reads the buffer at its own pace and is never closed.
* Topic filters (Nomad's ``Topic:Key`` with ``*`` and glob keys) and the ACL hook: every
  subscriber has ``may_read(record) -> bool``; ``Bus.access(token)`` builds it (allow-all
  until ACLs plug in).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from agent.http.types import go_json

log = logging.getLogger("rumor.bus")

TOPICS = ("Event", "Node")  # what rumor publishes
# Nomad's other topics: accepted in filters (so Nomad clients and its documented curl lines
# work unchanged), never published by rumor
NOMAD_TOPICS = ("Job", "Eval", "Alloc", "Deployment", "NodeDrain", "NodePool", "Service")
NODE_TYPES = {"join": "NodeJoin", "leave": "NodeLeave", "failed": "NodeFailed",
              "update": "NodeUpdate", "reap": "NodeReap"}
EVENT_TYPE = "UserEvent"
STREAM_TOPIC = "Stream"
MAX_INDEX = (1 << 63) - 1
QUEUE_LIMIT = 1024  # records queued for one live subscriber before it is closed as too slow
HOT = 256  # renderings are cached for the newest HOT records only
MAX_TOPICS = 32
MAX_KEY = 256

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


# --- topic filters ------------------------------------------------------------------------


class TopicError(ValueError):
    """A ``topic`` parameter that does not parse; the message says which and why."""


class TopicFilter:
    """Nomad's ``?topic=Topic:Key`` set: ``*`` topic or key, keys may be fnmatch globs.

    A key matches a record's Key or any of its FilterKeys.  ``Stream`` records (Gap,
    Closed) always pass: they are about the subscription itself.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._any: set[str] = set()
        self._exact: dict[str, set[str]] = {}
        self._globs: dict[str, re.Pattern[str]] = {}
        globs: dict[str, list[str]] = {}
        for topic, key in pairs:
            if key == "*":
                self._any.add(topic)
            elif any(c in key for c in "*?["):
                globs.setdefault(topic, []).append(fnmatch.translate(key))
            else:
                self._exact.setdefault(topic, set()).add(key)
        for topic, parts in globs.items():
            self._globs[topic] = re.compile("|".join(f"(?:{p})" for p in parts))

    def __call__(self, r: Record) -> bool:
        if r.topic == STREAM_TOPIC:
            return True
        return self._match(r.topic, r) or self._match("*", r)

    def _match(self, topic: str, r: Record) -> bool:
        if topic in self._any:
            return True
        keys = (r.key, *(r.filter_keys or ()))
        exact = self._exact.get(topic)
        if exact is not None and any(k in exact for k in keys):
            return True
        glob = self._globs.get(topic)
        return glob is not None and any(glob.match(k) for k in keys)


def parse_topics(values: list[str]) -> TopicFilter:
    """Parse repeated ``topic`` parameters (none: everything); TopicError on bad syntax."""
    if not values:
        return TopicFilter([("*", "*")])
    if len(values) > MAX_TOPICS:
        raise TopicError(f"at most {MAX_TOPICS} topic parameters, got {len(values)}")
    pairs = []
    for raw in values:
        topic, sep, key = raw.partition(":")
        if not sep:
            key = "*"
        if not topic:
            raise TopicError(f"topic {raw!r}: empty topic name (use Topic or Topic:Key)")
        if topic != "*" and topic not in TOPICS and topic not in NOMAD_TOPICS:
            raise TopicError(f"unknown topic {topic!r}; rumor publishes {', '.join(TOPICS)} "
                             f"(and accepts * and Nomad's {', '.join(NOMAD_TOPICS)})")
        if not key:
            raise TopicError(f"topic {raw!r}: empty key after ':' (use {topic}:* for all)")
        if len(key) > MAX_KEY or any(ord(c) < 32 for c in key):
            raise TopicError(f"topic {raw[:40]!r}: key must be at most {MAX_KEY} printable "
                             "characters")
        pairs.append((topic, key))
    return TopicFilter(pairs)


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

    def wants(self, r: Record) -> bool:
        if not self.match(r):
            return False
        try:
            return bool(self.may_read(r))
        except Exception:
            log.exception("bus: may_read failed; record %d withheld", r.index)
            return False

    def push(self, r: Record) -> None:
        """Called by ``Bus.publish`` for live subscribers: queue it, or close if full."""
        if not self.wants(r):
            if not self.queue:
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
        """The next record if one is ready now, else None (never waits)."""
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
                await self._wake.wait()
            elif self.durable:
                await self.bus.changed()

    def _catch_up(self) -> Record | None:
        bus = self.bus
        while self.cursor < bus.last_index:
            first = bus.first_index
            if self.cursor < first - 1:
                gap = bus.stream_record("Gap", {"Requested": self.cursor,
                                                "FirstAvailable": first}, first - 1)
                self.cursor = first - 1
                return gap
            r = bus.get(self.cursor + 1)
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
                 queue_limit: int = QUEUE_LIMIT) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.queue_limit = queue_limit
        self._recs: list[Record] = []
        self._lo = 0
        self._next = 1
        self._live: dict[Subscription, None] = {}
        self._changed = trio.Event()
        self.access: Callable[[str | None], MayRead] = open_access  # ACL hook
        self.published = 0
        self.slow_closed = 0
        self.log = None
        if path is not None:
            from agent.buslog import BusLog

            self.log = BusLog(path, capacity)
            records, self._next = self.log.load()
            self._recs = records

    # reading

    @property
    def last_index(self) -> int:
        return self._next - 1

    @property
    def first_index(self) -> int:
        return self._recs[self._lo].index if len(self._recs) > self._lo else self._next

    def __len__(self) -> int:
        return len(self._recs) - self._lo

    def get(self, index: int) -> Record:
        return self._recs[self._lo + index - self.first_index]

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
            self.log.append(r, self.held(), self._next)
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

    def go_live(self, sub: Subscription) -> None:
        self._live[sub] = None

    def unsubscribe(self, sub: Subscription) -> None:
        sub.done = True
        self._live.pop(sub, None)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


_EVICTED = Record(0, STREAM_TOPIC, "Evicted", "", 0.0, b"{}")
