"""Serf layer on top of the SWIM core, sans-IO: member status, intents, tags, user events.

Wire-compatible with Serf 0.9.4 (``serf/messages.go``): Serf messages travel as memberlist
user messages ``[8][serf type][msgpack]``; the push-pull user state is
``[2][msgpack messagePushPull]``; tags live in node meta as ``0xFF + msgpack(map)``.

Semantics follow Serf (Lamport clocks for member status, events and queries; an event dedup
buffer keyed by LTime; join/leave intents; failed/left member lists with reap and
reconnect), with rumor's improvements, each documented where it is made:

* fresh events are forwarded at once (``Memberlist.gossip_soon``), not on the next tick;
* events too big for one datagram go to ``gossip_nodes`` peers over TCP at once (Serf leaves
  them to the 30 s push-pull);
* the dedup window (``event_buffer``) is larger than Serf's 512 so bursts are not dropped as
  "too old";
* failed members are re-contacted every ``reconnect_interval`` (Serf: 30 s, throttled), and
  soon after they failed; a member alive again after failing gets a push-pull at once.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import logging
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from gossip import wire
from gossip.broadcast import BroadcastQueue
from gossip.coalesce import Coalescer
from gossip.config import USER_EVENT_SIZE_HARD_LIMIT, Addr, Effect, GossipConfig
from gossip.errors import DecodeError
from gossip.lamport import MAX_LTIME, LamportClock
from gossip.membership import Delegate, Keyring, Member, Memberlist
from gossip.queries import Queries
from gossip.query_wire import Query, decode_query, decode_query_response
from gossip.state import State

log = logging.getLogger("rumor.gossip")

RECONNECT_FANOUT = 3  # expected reconnect attempts per failed member per interval
RECONNECT_SOON = (0.5, 1.0, 2.0, 4.0)  # s after a failure: early retries, RECONNECT_FANOUT each
RECONNECT_SLICES = 2  # the periodic retry runs this often per interval, as likely in total
BURST_EVENTS = 16  # new events within one second that make a burst (about one packet's worth)
BURST_REPAIR_DELAY = 2.0  # seconds until the push-pull that repairs a burst's gaps
TAG_MAGIC = 0xFF


class SerfMsg(IntEnum):
    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5


class MemberStatus(IntEnum):
    """Serf member status; same numbers Consul's /v1/agent/members reports."""

    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4


class SerfError(ValueError):
    """A request the Serf layer refuses (e.g. an event over the size limit)."""


class ClockExhausted(SerfError):
    """The event clock has reached 2**64-1: no new event can be given a time."""


@dataclass(frozen=True)
class SerfConfig:
    event_size_limit: int = 512
    event_buffer: int = 4096  # Serf: 512; a larger window survives bursts
    push_pull_events: int = 512  # newest LTime slots carried in push-pull (Serf: whole ring)
    query_buffer: int = 512
    reap_interval: float = 15.0
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    recent_intent_timeout: float = 300.0
    broadcast_timeout: float = 5.0
    max_queue_depth: int = 4096
    protocol: int = 5
    coalesce_period: float = 0.0  # > 0 with quiescent_period > 0: coalesce CC events
    quiescent_period: float = 0.0  # (the serf agent uses 3 s / 1 s)
    # rumor: how far ahead of our clock a received Lamport time may be.  A legitimate jump
    # means that many events (intents, queries) happened that we never saw; 2**20 is 256
    # times our dedup window and far beyond any partition's backlog, while exhausting a
    # 64-bit clock would take 2**44 forged messages.  Further: dropped (ltime_jumps_dropped);
    # push-pull clocks advance by at most this much (the reply to our own join is exempt).
    max_ltime_jump: int = 1 << 20
    # rumor: names a push-pull's Serf state may add to recent intents (unknown members)
    max_new_intents: int = 64


@dataclass
class SerfMember:
    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: MemberStatus
    status_ltime: int = 0
    leave_time: float = 0.0
    vsn: bytes = b""


@dataclass(frozen=True)
class UserEvent:
    """A user event delivered to the layer above (once per LTime/name/payload)."""

    ltime: int
    name: str
    payload: bytes
    coalesce: bool = False


@dataclass(frozen=True)
class MemberEvent:
    kind: str  # "join", "leave", "failed", "update", "reap"
    member: SerfMember


@dataclass(frozen=True)
class NameConflict:
    """Another node claims our name and the cluster sided with it: Serf shuts down."""

    matching: int
    responses: int


Delivery = UserEvent | MemberEvent | NameConflict


def encode_tags(tags: Mapping[str, str]) -> bytes:
    return bytes([TAG_MAGIC]) + wire.packb(dict(tags))


def decode_tags(meta: bytes) -> dict[str, str]:
    """Serf protocol >= 3 tags; any other meta is the legacy role string."""
    return dict(_decode_tags(meta))


@functools.lru_cache(maxsize=4096)
def _decode_tags(meta: bytes) -> tuple[tuple[str, str], ...]:
    return tuple(_decode_tags_dict(meta).items())


def _decode_tags_dict(meta: bytes) -> dict[str, str]:
    if not meta:
        return {}
    if meta[0] != TAG_MAGIC:
        return {"role": meta.decode("utf-8", "replace")}
    try:
        obj = msgpack.unpackb(meta[1:], raw=True, strict_map_key=False)
    except Exception:
        return {}
    if not isinstance(obj, dict):
        return {}
    out: dict[str, str] = {}
    for k, v in obj.items():
        if isinstance(k, bytes) and isinstance(v, bytes):
            out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return out


def _encode(t: SerfMsg, body: dict[str, Any]) -> bytes:
    return bytes([t]) + wire.packb(body)


def _decode(buf: bytes, what: str) -> dict[bytes, Any]:
    return wire.unpack_map(buf, what)


@functools.lru_cache(maxsize=16384)
def _parse_intent(msg: bytes) -> tuple[int, str, bool]:
    """(LTime, Node, Prune) of a join or leave intent; memoised, as gossip repeats them."""
    if msg[0] == SerfMsg.LEAVE:
        m = _decode(msg[1:], "leave")
        return (wire.f_int(m, b"LTime", "leave"), wire.f_str(m, b"Node", "leave"),
                wire.f_bool(m, b"Prune", "leave"))
    m = _decode(msg[1:], "join")
    return wire.f_int(m, b"LTime", "join"), wire.f_str(m, b"Node", "join"), False


@functools.lru_cache(maxsize=16384)
def _parse_user_event(msg: bytes) -> tuple[int, str, bytes, bool]:
    """(LTime, Name, Payload, CC) of a user event message; memoised like intents."""
    w = "user event"
    m = _decode(msg[1:], w)
    return (wire.f_int(m, b"LTime", w), wire.f_str(m, b"Name", w), wire.f_bytes(m, b"Payload", w),
            wire.f_bool(m, b"CC", w))


@dataclass
class SerfMetrics:
    events_received: int = 0
    events_deduped: int = 0
    events_too_old: int = 0
    events_fired: int = 0
    events_reliable_sent: int = 0
    intents_received: int = 0
    queries_received: int = 0
    queue_pruned: int = 0
    decode_errors: int = 0
    ltime_jumps_dropped: int = 0  # received Lamport times too far ahead of ours
    intents_capped: int = 0  # unknown names in one push-pull beyond max_new_intents


@dataclass
class _Slot:
    ltime: int
    events: list[tuple[str, bytes]] = field(default_factory=list)


class Serf(Delegate):
    def __init__(self, name: str, addr: Addr, *, rng: random.Random, now: float,
                 tags: Mapping[str, str] | None = None,
                 gossip: GossipConfig | None = None, config: SerfConfig | None = None,
                 keyring: Keyring | None = None) -> None:
        self.name = name
        self.cfg = config or SerfConfig()
        if not 0 < self.cfg.event_size_limit <= USER_EVENT_SIZE_HARD_LIMIT:
            raise SerfError(f"event_size_limit must be 1..{USER_EVENT_SIZE_HARD_LIMIT}")
        self.rng = rng
        self.tags: dict[str, str] = dict(tags or {})
        self.clock = LamportClock(1)
        self.event_clock = LamportClock(1)
        self.query_clock = LamportClock(1)
        self.event_min_time = 0
        self.query_min_time = 0  # queries older than a restored snapshot are not replayed
        self._conflicts_logged: set[tuple[str, Addr]] = set()
        self.intents = BroadcastQueue((gossip or GossipConfig()).retransmit_mult)
        self.event_queue = BroadcastQueue((gossip or GossipConfig()).retransmit_mult)
        self.query_queue = BroadcastQueue((gossip or GossipConfig()).retransmit_mult)
        self.metrics = SerfMetrics()
        self.members: dict[str, SerfMember] = {}
        self.recent_intents: dict[str, tuple[SerfMsg, int, float]] = {}
        self._events: dict[int, _Slot] = {}
        self._slot_heap: list[int] = []  # the LTimes of _events, oldest first
        self._queries: dict[int, set[int]] = {}
        self._out: list[Delivery] = []
        self._ignore_old = False
        self.left = False
        self.gcfg = gossip or GossipConfig()
        self._next_reap = now + self.cfg.reap_interval
        self._next_reconnect = now + self.gcfg.reconnect_interval
        self._next_periodic = self._next_reconnect
        self._last_reconnect = now
        self._next_queue_check = now + 30.0
        self._burst_start, self._burst_new = -math.inf, 0  # burst detection for _spread
        self._gen = 0  # bumped by every change to what local_state() or _reconnect() read
        self._state_parts: tuple[int, tuple[bytes, bytes, bytes]] = (-1, (b"", b"", b""))
        self._failed: tuple[int, list[SerfMember]] = (-1, [])
        # the early retries (RECONNECT_SOON) of the failed members: due times, sorted, and
        # the member each belongs to; rebuilt with _failed
        self._soon: tuple[list[float], list[SerfMember]] = ([], [])
        self._alive_count = 1  # other members alive, with _failed
        self.coalescer: Coalescer[UserEvent] | None = None
        if self.cfg.coalesce_period > 0 and self.cfg.quiescent_period > 0:
            self.coalescer = Coalescer(self.cfg.coalesce_period, self.cfg.quiescent_period)
        self.ml = Memberlist(self.gcfg, name, addr, rng=rng, now=now, delegate=self,
                             keyring=keyring)
        self.queries = Queries(self)
        self.notify_join(now, self.ml.local)  # memberlist announces the local node too

    # --- sans-IO surface (same as Memberlist's, so shells and the simulator drive either) ---

    def receive_packet(self, now: float, src: Addr, data: bytes) -> None:
        self.ml.receive_packet(now, src, data)

    def handle_stream(self, now: float, src: Addr, msg: wire.StreamMessage) -> bytes | None:
        return self.ml.handle_stream(now, src, msg)

    def stream_reply(self, now: float, token: int, reply: wire.StreamMessage | None) -> None:
        self.ml.stream_reply(now, token, reply)

    def take_effects(self) -> list[Effect]:
        return self.ml.take_effects()

    def take_deliveries(self) -> list[Delivery]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float:
        return min(self.ml.next_deadline(), self._next_reap, self._next_reconnect,
                   self._next_queue_check, self.queries.deadline(),
                   self.coalescer.deadline() if self.coalescer is not None else math.inf)

    def tick(self, now: float) -> None:
        self.ml.tick(now)
        self.queries.expire(now)
        if self.coalescer is not None:
            self._out.extend(self.coalescer.flush_due(now))
        if now >= self._next_reap:
            self._next_reap = now + self.cfg.reap_interval
            self._reap(now)
        if now >= self._next_reconnect:
            self._reconnect(now)
        if now >= self._next_queue_check:
            self._next_queue_check = now + 30.0
            for q in (self.intents, self.event_queue, self.query_queue):
                self.metrics.queue_pruned += q.prune(max(self.cfg.max_queue_depth,
                                                         2 * len(self.members)))

    # --- operations ---------------------------------------------------------------------

    def join(self, now: float, addrs: list[Addr], ignore_old: bool = False,
             done: Any = None) -> None:
        """Push-pull (join=True) with every address; ``done(now, n_ok)`` once all answered."""
        pending = {"left": len(addrs), "ok": 0}
        self._ignore_old = ignore_old

        def one(t: float, ok: bool) -> None:
            pending["left"] -= 1
            pending["ok"] += int(ok)
            if pending["left"] == 0:
                self._ignore_old = False
                if pending["ok"] > 0:
                    self._broadcast_join(t, self.clock.time())
                if done is not None:
                    done(t, pending["ok"])
        if not addrs and done is not None:
            done(now, 0)
        for a in addrs:
            self.ml.start_push_pull(now, a, join=True, done=one)

    def user_event(self, now: float, name: str, payload: bytes, coalesce: bool = False) -> int:
        """Fire an event; returns its LTime.  SerfError over the size limit, ClockExhausted
        once the event clock can no longer advance."""
        limit = self.cfg.event_size_limit
        if len(name.encode()) + len(payload) > limit:
            raise SerfError(f"user event exceeds configured limit of {limit} bytes before "
                            "encoding")
        if self.event_clock.exhausted():
            raise ClockExhausted("the event clock has reached its largest value")
        ltime = self.event_clock.time()
        msg = _encode(SerfMsg.USER_EVENT, {"LTime": ltime, "Name": name, "Payload": payload,
                                           "CC": coalesce})
        if len(msg) > limit + 64 and len(msg) > USER_EVENT_SIZE_HARD_LIMIT:
            raise SerfError(f"encoded user event exceeds configured limit of {limit} bytes "
                            "after encoding")
        self.event_clock.increment()
        self.metrics.events_fired += 1
        self._handle_user_event(now, ltime, name, payload, coalesce, msg, fresh=True)
        return ltime

    def leave(self, now: float, done: Any = None) -> None:
        """Broadcast a leave intent, then memberlist's dead-about-self; ``done()`` after."""
        ltime = self.clock.time()
        self.clock.increment()
        self.left = True  # before the intent: our own leave must not be refuted
        self._leave_intent(now, ltime, self.name, prune=False)

        def ml_leave() -> None:
            self.ml.leave(now, done)
        if any(m.status is MemberStatus.ALIVE for n, m in self.members.items()
               if n != self.name):
            msg = _encode(SerfMsg.LEAVE, {"LTime": ltime, "Node": self.name, "Prune": False})
            self.intents.queue(msg, on_done=ml_leave)
            self.ml.gossip_soon()
        else:
            ml_leave()

    def force_leave(self, now: float, node: str, prune: bool = False) -> bool:
        """Serf RemoveFailedNode: broadcast a leave intent for a failed member."""
        m = self.members.get(node)
        if m is None:
            return False
        ltime = self.clock.time()
        self.clock.increment()
        self._leave_intent(now, ltime, node, prune)
        self.intents.queue(_encode(SerfMsg.LEAVE, {"LTime": ltime, "Node": node,
                                                    "Prune": prune}))
        self.ml.gossip_soon()
        return True

    def set_tags(self, now: float, tags: Mapping[str, str]) -> None:
        self.tags = dict(tags)
        self.ml.update_meta(now)
        local = self.members.get(self.name)
        if local is not None:
            local.tags = dict(self.tags)

    def witness_event_time(self, ltime: int) -> None:
        """Restore the event clock after a restart (the agent persists it)."""
        self.event_clock.witness(ltime)

    def remember_events(self, events: Iterable[tuple[int, str, bytes]]) -> int:
        """Put ``(ltime, name, payload)`` events held before a restart back into the event
        buffer without delivering them: push-pull then offers them to peers that lack them.
        Events outside the dedup window are left out; returns how many were added."""
        added = 0
        for ltime, name, payload in events:
            self.event_clock.witness(ltime)
            cur, window = self.event_clock.time(), self.cfg.event_buffer
            if ltime < self.event_min_time or (cur > window and ltime < cur - window):
                continue
            slot = self._events.get(ltime)
            if slot is None:
                slot = self._events[ltime] = _Slot(ltime)
                heapq.heappush(self._slot_heap, ltime)
            if (name, payload) not in slot.events:
                slot.events.append((name, payload))
                added += 1
        if added:
            self._gen += 1
            self._trim_events()
        return added

    def member_list(self) -> list[SerfMember]:
        return list(self.members.values())

    # --- memberlist delegate ----------------------------------------------------------

    def node_meta(self, limit: int) -> bytes:
        meta = encode_tags(self.tags)
        if len(meta) > limit:
            raise SerfError(f"encoded tags are {len(meta)} bytes, the limit is {limit}")
        return meta

    def has_broadcasts(self) -> bool:
        return bool(self.intents) or bool(self.event_queue) or bool(self.query_queue)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        n = self.ml.num_members()
        out = self.intents.get(overhead, limit, n)
        used = sum(map(len, out)) + overhead * len(out)
        for q in (self.query_queue, self.event_queue):
            if q:
                got = q.get(overhead, limit - used, n)
                used += sum(map(len, got)) + overhead * len(got)
                out.extend(got)
        return out

    def notify_msg(self, now: float, msg: bytes) -> None:
        try:
            self._notify_msg(now, msg)
        except DecodeError:
            self.metrics.decode_errors += 1
            raise

    def _notify_msg(self, now: float, msg: bytes) -> None:
        if not msg:
            raise DecodeError("empty serf message")
        t = msg[0]
        if t == SerfMsg.LEAVE:
            ltime, node, prune = _parse_intent(msg)
            self.metrics.intents_received += 1
            if self._plausible(self.clock, ltime) and \
                    self._leave_intent(now, ltime, node, prune):
                self.intents.queue(msg)
                self.ml.gossip_soon()
        elif t == SerfMsg.JOIN:
            ltime, node, _ = _parse_intent(msg)
            self.metrics.intents_received += 1
            if self._plausible(self.clock, ltime) and self._join_intent(now, ltime, node):
                self.intents.queue(msg)
        elif t == SerfMsg.USER_EVENT:
            ltime, name, payload, cc = _parse_user_event(msg)
            if self._plausible(self.event_clock, ltime):
                self._handle_user_event(now, ltime, name, payload, cc, msg, fresh=False)
        elif t == SerfMsg.QUERY:
            self._handle_query(now, msg)
        elif t == SerfMsg.QUERY_RESPONSE:
            self.queries.on_response(now, decode_query_response(msg[1:]))
        elif t == 9:  # messageRelayType: a query answer to forward
            self.queries.on_relay(msg)
        else:
            raise DecodeError(f"unknown serf message type {t}")

    def _plausible(self, clock: LamportClock, ltime: int) -> bool:
        """A received time is at most ``max_ltime_jump`` ahead of ``clock``; else counted."""
        if clock.plausible(ltime, self.cfg.max_ltime_jump):
            return True
        self.metrics.ltime_jumps_dropped += 1
        return False

    def local_state(self, join: bool) -> bytes:
        """``[2] + msgpack{LTime, StatusLTimes, LeftMembers, EventLTime, Events, QueryLTime}``.

        The three big fields are packed once per change (``_gen``) and spliced into the map:
        the bytes are the same as packing the whole dict (msgpack keeps insertion order)."""
        if self._state_parts[0] != self._gen:
            slots = sorted(self._events.values(),
                           key=lambda s: s.ltime)[-self.cfg.push_pull_events:]
            self._state_parts = (self._gen, (
                wire.packb({n: m.status_ltime for n, m in self.members.items()}),
                wire.packb([n for n, m in self.members.items()
                            if m.status is MemberStatus.LEFT]),
                wire.packb([{"LTime": s.ltime, "Events": [{"Name": n, "Payload": p}
                                                          for n, p in s.events]}
                            for s in slots])))
        status, left, events = self._state_parts[1]
        p = wire.packb
        return b"".join((bytes([SerfMsg.PUSH_PULL, 0x86]),
                         p("LTime"), p(self.clock.time()), p("StatusLTimes"), status,
                         p("LeftMembers"), left, p("EventLTime"), p(self.event_clock.time()),
                         p("Events"), events, p("QueryLTime"), p(self.query_clock.time())))

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        if not buf or buf[0] != SerfMsg.PUSH_PULL:
            return
        w = "serf push-pull"
        m = _decode(buf[1:], w)
        trusted = self.ml.merging_join_reply  # the seed we joined: adopt its clocks whole
        for key, clock in ((b"LTime", self.clock), (b"EventLTime", self.event_clock),
                           (b"QueryLTime", self.query_clock)):
            v = wire.f_int(m, key, w)
            if v > 0:
                if not trusted and not self._plausible(clock, v - 1):
                    v = clock.time() + self.cfg.max_ltime_jump + 1  # advance by the bound
                clock.witness(v - 1)
        status = m.get(b"StatusLTimes") or {}
        left = m.get(b"LeftMembers") or []
        if not isinstance(status, dict) or not isinstance(left, list):
            raise DecodeError(f"{w}: bad member lists")
        for lt in status.values():
            if isinstance(lt, bool) or not isinstance(lt, int) or not 0 <= lt <= MAX_LTIME:
                raise DecodeError(f"{w}: a status LTime is not a uint64")
        jump = math.inf if trusted else self.cfg.max_ltime_jump
        new_budget = self.cfg.max_new_intents  # unknown names this push-pull may record
        left_names = set()
        for raw in left:
            if isinstance(raw, bytes):
                name = raw.decode("utf-8", "replace")
                left_names.add(name)
                lt = min(status.get(raw, 0) + 1, MAX_LTIME)
                if lt > self.clock.time() + jump:
                    self.metrics.ltime_jumps_dropped += 1
                    continue
                if name not in self.members:
                    if new_budget <= 0:
                        self.metrics.intents_capped += 1
                        continue
                    new_budget -= 1
                self._leave_intent(now, lt, name, False)
        members, seen = self.members, 0
        for raw, lt in status.items():
            if isinstance(raw, bytes):
                name = raw.decode("utf-8", "replace")
                if name in left_names:
                    continue
                known = members.get(name)
                if known is not None and lt <= known.status_ltime:  # fast path: nothing new
                    if lt > seen:  # _join_intent would only have witnessed it
                        seen = lt
                    continue
                if lt > self.clock.time() + jump:
                    self.metrics.ltime_jumps_dropped += 1
                    continue
                if known is None:
                    if new_budget <= 0:
                        self.metrics.intents_capped += 1
                        continue
                    new_budget -= 1
                self._join_intent(now, lt, name)
        self.clock.witness(seen)
        if join and self._ignore_old:
            self.event_min_time = max(self.event_min_time, wire.f_int(m, b"EventLTime", w))
        events = m.get(b"Events") or []
        if not isinstance(events, list):
            raise DecodeError(f"{w}: bad event list")
        for slot in events:
            if not isinstance(slot, dict):
                continue
            lt = wire.f_int(slot, b"LTime", w)
            if lt > self.event_clock.time() + jump:
                self.metrics.ltime_jumps_dropped += 1
                continue
            for e in slot.get(b"Events") or []:
                if isinstance(e, dict):
                    self._handle_user_event(now, lt, wire.f_str(e, b"Name", w),
                                            wire.f_bytes(e, b"Payload", w), False, None,
                                            fresh=False, rebroadcast=False)

    def notify_join(self, now: float, n: Member) -> None:
        m = self.members.get(n.name)
        tags = decode_tags(n.meta)
        if m is None:
            m = SerfMember(n.name, n.addr, n.port, tags, MemberStatus.ALIVE, vsn=n.vsn)
            intent = self.recent_intents.pop(n.name, None)
            if intent is not None:
                kind, lt, _ = intent
                m.status_ltime = lt
                if kind is SerfMsg.LEAVE:
                    m.status = MemberStatus.LEAVING
            self.members[n.name] = m
        else:
            if m.status is MemberStatus.FAILED and not self.left:
                self._welcome_back(now, n)
            m.status = MemberStatus.ALIVE
            m.leave_time = 0.0
            m.addr, m.port, m.tags, m.vsn = n.addr, n.port, tags, n.vsn
        self._gen += 1
        self._out.append(MemberEvent("join", _snapshot(m)))

    def notify_leave(self, now: float, n: Member) -> None:
        m = self.members.get(n.name)
        if m is None:
            return
        if m.status is MemberStatus.LEAVING:
            m.status = MemberStatus.LEFT
            kind = "leave"
        elif m.status is MemberStatus.ALIVE:
            m.status = MemberStatus.FAILED
            kind = "failed"
            self._next_reconnect = min(self._next_reconnect, now + RECONNECT_SOON[0])
        else:
            return
        m.leave_time = now
        self._gen += 1
        self._out.append(MemberEvent(kind, _snapshot(m)))

    def notify_update(self, now: float, n: Member) -> None:
        m = self.members.get(n.name)
        if m is None:
            return
        m.addr, m.port, m.tags, m.vsn = n.addr, n.port, decode_tags(n.meta), n.vsn
        self._out.append(MemberEvent("update", _snapshot(m)))

    # --- intents -------------------------------------------------------------------------

    def _broadcast_join(self, now: float, ltime: int) -> None:
        self.clock.witness(ltime)
        self._join_intent(now, ltime, self.name)
        self.intents.queue(_encode(SerfMsg.JOIN, {"LTime": ltime, "Node": self.name}))
        self.ml.gossip_soon()

    def _upsert_intent(self, now: float, node: str, kind: SerfMsg, ltime: int) -> bool:
        old = self.recent_intents.get(node)
        if old is None or ltime > old[1]:
            self.recent_intents[node] = (kind, ltime, now)
            return True
        return False

    def _join_intent(self, now: float, ltime: int, node: str) -> bool:
        self.clock.witness(ltime)
        m = self.members.get(node)
        if m is None:
            return self._upsert_intent(now, node, SerfMsg.JOIN, ltime)
        if ltime <= m.status_ltime:
            return False
        m.status_ltime = ltime
        self._gen += 1
        if m.status is MemberStatus.LEAVING:
            m.status = MemberStatus.ALIVE
        return True

    def _leave_intent(self, now: float, ltime: int, node: str, prune: bool) -> bool:
        self.clock.witness(ltime)
        m = self.members.get(node)
        if m is None:
            return self._upsert_intent(now, node, SerfMsg.LEAVE, ltime)
        if ltime <= m.status_ltime:
            return False
        if node == self.name and not self.left:
            self._broadcast_join(now, self.clock.time())  # refute: we are not leaving
            return False
        m.status_ltime = ltime
        self._gen += 1
        if m.status is MemberStatus.ALIVE:
            m.status = MemberStatus.LEAVING
        elif m.status is MemberStatus.FAILED:
            m.status = MemberStatus.LEFT
            self._out.append(MemberEvent("leave", _snapshot(m)))
        elif m.status not in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return False
        if prune and m.status is MemberStatus.LEFT:
            self._erase(m)
        return True

    # --- events ------------------------------------------------------------------------

    def _handle_user_event(self, now: float, ltime: int, name: str, payload: bytes,
                           cc: bool, raw: bytes | None, *, fresh: bool,
                           rebroadcast: bool = True) -> bool:
        self.event_clock.witness(ltime)
        if ltime < self.event_min_time:
            self.metrics.events_too_old += 1
            return False
        cur = self.event_clock.time()
        window = self.cfg.event_buffer
        # Serf's rule (older than the window behind our clock), except for times at or above
        # the oldest slot we still hold: those we can still dedupe, and a clock pushed ahead
        # by a forged event must not make the honest events in flight "too old"
        if cur > window and ltime < cur - window and \
                (not self._slot_heap or ltime < self._slot_heap[0]):
            self.metrics.events_too_old += 1
            return False
        slot = self._events.get(ltime)
        if slot is None:
            slot = self._events[ltime] = _Slot(ltime)
            heapq.heappush(self._slot_heap, ltime)
            self._trim_events()
        elif (name, payload) in slot.events:
            self.metrics.events_deduped += 1
            return False
        slot.events.append((name, payload))
        self._gen += 1
        self.metrics.events_received += 1
        if cc and self.coalescer is not None:
            self.coalescer.add(now, UserEvent(ltime, name, payload, cc))
        else:
            self._out.append(UserEvent(ltime, name, payload, cc))
        if rebroadcast:
            if raw is None:
                raw = _encode(SerfMsg.USER_EVENT, {"LTime": ltime, "Name": name,
                                                   "Payload": payload, "CC": cc})
            self._spread(now, raw)
        return True

    def _spread(self, now: float, raw: bytes) -> None:
        """Gossip an event now; one too big for a datagram goes over TCP to a few peers.

        A burst (more new events within a second than one packet carries) is spread thinly:
        each packet takes different events to one peer, so a few (event, node) pairs can miss
        every copy (benchmarked: 1-4 of 200 x 16 at N=16).  Serf leaves those to the 30 s
        push-pull; we bring our next push-pull forward to ``BURST_REPAIR_DELAY`` instead.
        """
        if now - self._burst_start > 1.0:
            self._burst_start, self._burst_new = now, 0
        self._burst_new += 1
        if self._burst_new == BURST_EVENTS:
            self.ml.push_pull_soon(now, BURST_REPAIR_DELAY)
        budget = self.gcfg.udp_buffer_size - 2 - 2 - 1 - (29 if self.ml.keyring else 0) - 5
        if len(raw) <= budget:
            self.event_queue.queue(raw)
            self.ml.gossip_soon()
            return
        peers = [m for m in self.ml.alive_members() if m is not self.ml.local
                 and m.state is State.ALIVE]
        for p in self.rng.sample(peers, min(self.gcfg.gossip_nodes, len(peers))):
            self.metrics.events_reliable_sent += 1
            self.ml.send_reliable(p.address, raw)

    def _trim_events(self) -> None:
        """Keep the newest ``event_buffer`` slots (so every slot above the oldest is held)."""
        while len(self._events) > self.cfg.event_buffer:
            del self._events[heapq.heappop(self._slot_heap)]

    # --- queries (gossip.queries answers and originates them) -------------------------

    def _handle_query(self, now: float, msg: bytes) -> None:
        self.handle_own_query(now, msg, decode_query(msg[1:]), own=False)

    def handle_own_query(self, now: float, msg: bytes, q: Query, own: bool = True) -> None:
        """serf ``handleQuery``: witness, dedup by (LTime, ID), rebroadcast, then answer.
        A received query whose LTime jumps too far ahead of our clock is dropped (counted)."""
        ltime, qid = q.ltime, q.id
        self.metrics.queries_received += not own
        if not own and not self._plausible(self.query_clock, ltime):
            return
        self.query_clock.witness(ltime)
        if ltime < self.query_min_time:
            return
        cur = self.query_clock.time()
        if cur > self.cfg.query_buffer and ltime < cur - self.cfg.query_buffer:
            return
        seen = self._queries.setdefault(ltime, set())
        if qid in seen:
            return
        seen.add(qid)
        if len(self._queries) > self.cfg.query_buffer:
            for lt in sorted(self._queries)[:len(self._queries) - self.cfg.query_buffer]:
                del self._queries[lt]
        if not q.flags & 2:  # queryFlagNoBroadcast
            self.query_queue.queue(msg)
            self.ml.gossip_soon()
        self.queries.on_query(now, q)

    def notify_conflict(self, now: float, existing: Member, other: Addr) -> None:
        """memberlist saw an alive for ``existing.name`` from another address."""
        if existing.name != self.name:
            pair = (existing.name, other)
            if pair not in self._conflicts_logged and len(self._conflicts_logged) < 1024:
                self._conflicts_logged.add(pair)  # once per pair: gossip repeats alives
                log.warning("serf: Name conflict for '%s' both %s:%d and %s:%d are claiming",
                            existing.name, existing.addr, existing.port, other[0], other[1])
            return
        log.error("serf: Node name conflicts with another node at %s:%d. Names must be "
                  "unique! (Resolution enabled: true)", other[0], other[1])
        self.queries.resolve_conflict(now)

    def conflict_resolved(self, now: float, matching: int, responses: int) -> None:
        if matching >= responses // 2 + 1:
            log.info("serf: majority in name conflict resolution [%d / %d]", matching,
                     responses)
            return
        log.warning("serf: minority in name conflict resolution, quiting [%d / %d]",
                    matching, responses)
        self._out.append(NameConflict(matching, responses))

    # --- maintenance -------------------------------------------------------------------

    def _reap(self, now: float) -> None:
        for m in list(self.members.values()):
            if m.status is MemberStatus.FAILED and now - m.leave_time > \
                    self.cfg.reconnect_timeout:
                self._erase(m)
            elif m.status is MemberStatus.LEFT and now - m.leave_time > \
                    self.cfg.tombstone_timeout:
                self._erase(m)
        for node, (_, _, t) in list(self.recent_intents.items()):
            if now - t > self.cfg.recent_intent_timeout:
                del self.recent_intents[node]

    def _erase(self, m: SerfMember) -> None:
        self.members.pop(m.name, None)
        self._gen += 1
        self._out.append(MemberEvent("reap", _snapshot(m)))

    def _welcome_back(self, now: float, n: Member) -> None:
        """rumor: a failed member is alive again (often learnt by gossip, not by our own
        reconnect push-pull): push-pull with it now, about RECONNECT_FANOUT times
        cluster-wide, so the events each side fired meanwhile are exchanged at once instead
        of at the next 30 s push-pull."""
        alive = max(1, sum(1 for m in self.members.values()
                           if m.status is MemberStatus.ALIVE) - 1)
        if self.rng.random() < RECONNECT_FANOUT / alive:
            self.ml.start_push_pull(now, (n.addr, n.port), join=False)

    def _alive_others(self) -> int:
        """How many other members are alive (at least 1: a probability's divisor); counted
        once per change of the member table (``_gen``), with the failed list."""
        self._refresh_failed()
        return self._alive_count

    def _refresh_failed(self) -> None:
        if self._failed[0] == self._gen:
            return
        failed_now = [m for m in self.members.values() if m.status is MemberStatus.FAILED]
        # every early retry of every failed member, in time order: each call looks only
        # at the retries that fell due since the last one (bisect), not at every member
        schedule = sorted(((m.leave_time + step, i, m) for i, m in enumerate(failed_now)
                           for step in RECONNECT_SOON), key=lambda d: (d[0], d[1]))
        self._failed = (self._gen, failed_now)
        self._soon = ([d[0] for d in schedule], [d[2] for d in schedule])
        self._alive_count = max(1, sum(1 for m in self.members.values()
                                       if m.status is MemberStatus.ALIVE) - 1)

    def _reconnect(self, now: float) -> None:
        """rumor: a failed member is retried soon (RECONNECT_SOON after its failure, about
        RECONNECT_FANOUT attempts cluster-wide each time), then every reconnect_interval as
        before. The periodic check runs RECONNECT_SLICES times per interval, each jittered
        (x0.5-1.5) so that nodes started together do not retry in step, with the probability
        divided accordingly: a big cluster sends as many attempts as before, a small one
        (where every node already tried every interval) up to RECONNECT_SLICES times as many,
        which keeps a healed split from waiting seconds for its first crossing attempt."""
        interval = self.gcfg.reconnect_interval
        self._refresh_failed()
        failed = self._failed[1]
        last, self._last_reconnect = self._last_reconnect, now
        dues, whose = self._soon
        hi = bisect.bisect_right(dues, now)
        soon = dues[hi] if hi < len(dues) else math.inf
        if failed and not self.left:
            lo = bisect.bisect_right(dues, last)
            if lo < hi:
                alive = self._alive_others()
                for m in whose[lo:hi]:
                    if self.rng.random() < RECONNECT_FANOUT / alive:
                        self.ml.start_push_pull(now, (m.addr, m.port), join=False)
        if now < self._next_periodic:
            self._next_reconnect = min(self._next_periodic, soon)
            return
        self._next_periodic = now + interval / RECONNECT_SLICES * (0.5 + self.rng.random())
        self._next_reconnect = min(self._next_periodic, soon)
        if not failed or self.left:
            return
        # Serf tries with probability failed/alive every 30 s; we try every 5 s, with
        # RECONNECT_FANOUT times that probability, so that a lone failed member gets about
        # RECONNECT_FANOUT attempts per interval from the whole cluster, whatever its size,
        # and a split with many failed members is retried by everyone.
        if self.rng.random() < (RECONNECT_FANOUT * len(failed) / self._alive_others()
                                / RECONNECT_SLICES):
            m = self.rng.choice(failed)
            self.ml.start_push_pull(now, (m.addr, m.port), join=False)


def _snapshot(m: SerfMember) -> SerfMember:
    return SerfMember(m.name, m.addr, m.port, dict(m.tags), m.status, m.status_ltime,
                      m.leave_time, m.vsn)
