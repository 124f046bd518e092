"""The membership core: :class:`Memberlist`, its shell interface, timers and dispatch."""

from __future__ import annotations

import heapq
import math
import random

from gossip import wire
from gossip.config import DEFAULT_VSN, Addr, GossipConfig
from gossip.errors import DecodeError
from gossip.membership.changes import old_accusation
from gossip.membership.member import Delegate, WireCipher
from gossip.membership.probing import Probing
from gossip.membership.pushpull import PushPull
from gossip.state import State


class Memberlist(Probing, PushPull):
    """One SWIM member: the parts (probing, push-pull over state changes over output over
    :class:`~gossip.membership.base.MemberlistState`) combined behind the shell interface."""

    def __init__(self, config: GossipConfig, name: str, addr: Addr, *, rng: random.Random,
                 now: float, delegate: Delegate | None = None, keyring: WireCipher | None = None,
                 vsn: bytes = DEFAULT_VSN) -> None:
        super().__init__(config, name, addr, rng=rng, now=now, delegate=delegate,
                         keyring=keyring, vsn=vsn)
        self._queue_alive(self.local)

    def next_deadline(self) -> float:
        t = min(self._next_probe, self._next_push_pull)
        if self.admission.pending:
            t = min(t, self.admission.deadline())
        if self._gossip_now:
            t = min(t, self._last_extra + self._extra_gap)
        # an idle gossip tick does nothing, so it is only due when there is something to send
        if self._next_gossip < t and (self.queue or self.delegate.has_broadcasts()):
            t = self._next_gossip
        p = self._probe
        if p is not None:
            t = min(t, p.end_at if p.indirect_sent else p.indirect_at)
        for r in self._relays.values():
            if r.deadline < t:
                t = r.deadline
        heap = self._sus_heap
        while heap and not self._sus_live(heap[0]):
            heapq.heappop(heap)
        if heap and heap[0][0] < t:
            t = heap[0][0]
        return t

    def receive_packet(self, now: float, src: Addr, data: bytes) -> None:
        self.metrics.packets_in += 1
        self.metrics.bytes_in += len(data)
        try:
            plain = data
            if self.keyring is not None:
                try:
                    plain = self.keyring.decrypt_packet(data)
                except DecodeError:
                    if self.cfg.verify_incoming:
                        raise
            msgs = wire.decode_packet(plain)
        except DecodeError:
            self.metrics.decode_errors += 1
            raise
        members, local, alive, left = self.members, self.local, wire.Alive, State.LEFT
        suspect, dead = wire.Suspect, wire.Dead
        error: DecodeError | None = None
        self.admission.begin_message()
        self._vouched = self.admission.vouches(src)
        for msg in msgs:
            if type(msg) is alive:  # fast path: old news about a known node (most gossip)
                m = members.get(msg.node)
                if m is not None and m is not local and m.state is not left and \
                        msg.incarnation <= m.incarnation:
                    continue
            elif type(msg) is suspect or type(msg) is dead:  # old news too (a split: ~N^2)
                m = members.get(msg.node)
                if m is not None and m is not local and \
                        old_accusation(m.state, m.incarnation, msg.incarnation):
                    continue
            try:
                self._handle(now, src, msg)
            except DecodeError as exc:  # a bad delegate message: like memberlist, still
                error = exc  # handle the other parts of the packet, then report it
        self._vouched = False
        if self.admission.pending:
            self._verify(now)
        if error is not None:
            self.metrics.decode_errors += 1
            raise error

    def tick(self, now: float) -> None:
        if self.admission.pending:
            self._verify(now)
        heap = self._sus_heap  # suspicion deadlines, earliest first; stale entries skipped
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._sus_live(entry):
                self._suspicion_expired(now, entry[2])
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                if relay.want_nack:
                    self._send_to(relay.requester, [wire.encode(wire.Nack(relay.orig_seq))])
        p = self._probe
        if p is not None:
            if not p.indirect_sent and now >= p.indirect_at:
                self._probe_indirect(p)
            elif p.indirect_sent and now >= p.end_at:
                self._probe_failed(now, p)
        if now >= self._next_probe:
            if self._probe is not None:  # overran: the end handler above should have fired
                self._probe_failed(now, self._probe)
            self._start_probe(now)
        extra = self._gossip_now and now >= self._last_extra + self._extra_gap
        if extra:
            if self._soon_at < self._last_extra + self._extra_gap:  # held back: a burst
                self._extra_gap = min(2 * self._extra_gap, self.cfg.gossip_interval)
            else:
                self._extra_gap = max(self._extra_gap / 2, self.cfg.gossip_on_new_gap)
            self._last_extra = now
        if extra or now >= self._next_gossip:
            if now >= self._next_gossip:
                # after idle time (no tick while there was nothing to send) restart the beat
                nxt = self._next_gossip + self.cfg.gossip_interval
                self._next_gossip = nxt if nxt > now else now + self.cfg.gossip_interval
            self._gossip_now = False
            self._soon_at = math.inf
            self._gossip(now)
        if now >= self._next_push_pull:
            self._push_pull_due(now)

    def _handle(self, now: float, src: Addr, msg: wire.Message) -> None:
        t = type(msg)
        if t is wire.Alive:
            self._alive(now, msg)  # type: ignore[arg-type]
        elif t is wire.Ping:
            self._on_ping(src, msg)  # type: ignore[arg-type]
        elif t is wire.Ack:
            self._on_ack(now, msg.seq_no)  # type: ignore[union-attr]
        elif t is wire.Suspect:
            self._suspect(now, msg)  # type: ignore[arg-type]
        elif t is wire.Dead:
            self._dead(now, msg)  # type: ignore[arg-type]
        elif t is wire.UserMsg:
            if msg.payload:  # type: ignore[union-attr]
                self.delegate.notify_msg(now, msg.payload)  # type: ignore[union-attr]
        elif t is wire.IndirectPingReq:
            self._on_indirect(now, src, msg)  # type: ignore[arg-type]
        elif t is wire.Nack:
            if self._probe is not None and self._probe.seq == msg.seq_no:  # type: ignore
                self._probe.nacks += 1
