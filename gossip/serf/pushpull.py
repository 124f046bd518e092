"""Serf's push-pull state: ``[2][msgpack messagePushPull]`` built (cached per change) and
merged (clocks, member status, left members, recent events), with rumor's bounds on what a
peer may make us adopt."""

from __future__ import annotations

import math

from gossip import wire
from gossip.errors import DecodeError
from gossip.lamport import MAX_LTIME
from gossip.serf.codec import SerfMsg, decode_msg
from gossip.serf.events import UserEvents
from gossip.serf.intents import Intents
from gossip.serf.model import MemberStatus


class PushPullState(Intents, UserEvents):
    def local_state(self, join: bool) -> bytes:
        """``[2] + msgpack{LTime, StatusLTimes, LeftMembers, EventLTime, Events, QueryLTime}``.

        The three big fields are packed once per change (the member table's ``_gen``, the
        event buffer's ``_events_gen``: an event no longer re-packs the member table) and
        spliced into the map: the bytes are the same as packing the whole dict (msgpack
        keeps insertion order)."""
        if self._state_parts[0] != self._gen:
            self._state_parts = (
                self._gen, wire.packb({n: m.status_ltime for n, m in self.members.items()}),
                wire.packb([n for n, m in self.members.items()
                            if m.status is MemberStatus.LEFT]))
        if self._state_events[0] != self._events_gen:
            slots = self.dedup.newest(self.cfg.push_pull_events)
            self._state_events = (self._events_gen, wire.packb(
                [{"LTime": s.ltime, "Events": [{"Name": n, "Payload": p} for n, p in s.events]}
                 for s in slots]))
        _, status, left = self._state_parts
        events = self._state_events[1]
        p = wire.packb
        return b"".join((bytes([SerfMsg.PUSH_PULL, 0x86]),
                         p("LTime"), p(self.clock.time()), p("StatusLTimes"), status,
                         p("LeftMembers"), left, p("EventLTime"), p(self.event_clock.time()),
                         p("Events"), events, p("QueryLTime"), p(self.query_clock.time())))

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        if not buf or buf[0] != SerfMsg.PUSH_PULL:
            return
        w = "serf push-pull"
        m = decode_msg(buf[1:], w)
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
                                            rebroadcast=False)
