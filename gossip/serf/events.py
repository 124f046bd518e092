"""User events: firing, the dedup buffer keyed by LTime, and spreading them (gossip, or TCP
for one too big for a datagram, with a push-pull brought forward after a burst)."""

from __future__ import annotations

from collections.abc import Iterable

from gossip import wire
from gossip.config import USER_EVENT_SIZE_HARD_LIMIT
from gossip.serf.base import SerfState
from gossip.serf.codec import SerfMsg, encode_msg
from gossip.serf.model import ClockExhausted, SerfError, UserEvent
from gossip.state import State

BURST_EVENTS = 16  # new events within one second that make a burst (about one packet's worth)
BURST_REPAIR_DELAY = 2.0  # seconds until the push-pull that repairs a burst's gaps


class UserEvents(SerfState):
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
        msg = encode_msg(SerfMsg.USER_EVENT, {"LTime": ltime, "Name": name, "Payload": payload,
                                           "CC": coalesce})
        if len(msg) > limit + 64 and len(msg) > USER_EVENT_SIZE_HARD_LIMIT:
            raise SerfError(f"encoded user event exceeds configured limit of {limit} bytes "
                            "after encoding")
        self.event_clock.increment()
        self.metrics.events_fired += 1
        self._handle_user_event(now, ltime, name, payload, coalesce, msg)
        return ltime

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
            cur, window = self.event_clock.time(), self.dedup.window
            if ltime < self.event_min_time or (cur > window and ltime < cur - window):
                continue
            added += self.dedup.add(ltime, name, payload, trim=False)
        if added:
            self._events_gen += 1
            self.dedup.trim()
        return added

    def _handle_user_event(self, now: float, ltime: int, name: str, payload: bytes,
                           cc: bool, raw: bytes | None, *,
                           rebroadcast: bool = True) -> bool:
        self.event_clock.witness(ltime)
        if ltime < self.event_min_time:
            self.metrics.events_too_old += 1
            return False
        if self.dedup.too_old(ltime, self.event_clock.time()):
            self.metrics.events_too_old += 1
            return False
        if not self.dedup.add(ltime, name, payload):
            self.metrics.events_deduped += 1
            return False
        self._events_gen += 1
        self.metrics.events_received += 1
        self._out.append(UserEvent(ltime, name, payload, cc))
        if rebroadcast:
            if raw is None:
                raw = encode_msg(SerfMsg.USER_EVENT, {"LTime": ltime, "Name": name,
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
        if len(raw) <= wire.gossiped_user_msg_limit(self.gcfg.udp_buffer_size,
                                                    self.ml.keyring is not None):
            self.event_queue.queue(raw)
            self.ml.gossip_soon(now)
            return
        peers = [m for m in self.ml.alive_members() if m is not self.ml.local
                 and m.state is State.ALIVE]
        for p in self.rng.sample(peers, min(self.gcfg.gossip_nodes, len(peers))):
            self.metrics.events_reliable_sent += 1
            self.ml.send_reliable(p.address, raw)
