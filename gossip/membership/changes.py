"""State changes: alive, suspect, dead and left; suspicion timers; refutation; reaping.

The transition rules themselves live in :mod:`gossip.state`; this layer applies them to the
member table, keeps the derived caches honest, gossips what changed and tells the delegate.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from gossip import wire
from gossip.config import DEFAULT_VSN
from gossip.errors import DecodeError
from gossip.membership.member import MAX_INCARNATION, META_MAX_SIZE, Member
from gossip.membership.output import Output
from gossip.state import Action, Kind, State, decide
from gossip.suspicion import Suspicion, suspicion_timeout


def old_accusation(state: State, known_inc: int, inc: int) -> bool:
    """A suspect or dead message (or a push-pull's suspect, dead or left entry) carrying
    ``inc`` about another member we hold in ``state`` at ``known_inc`` changes nothing: it is
    older than what we know, or the member is already dead or left (both final until a newer
    alive).  The fast path of ``_suspect`` and ``_dead``: exactly their early returns for a
    known member that is not us, checked before building or dispatching the message."""
    return inc < known_inc or (inc == known_inc and (state is State.DEAD or state is State.LEFT))


class StateChanges(Output):
    def _sus_live(self, entry: tuple[float, int, str, Suspicion]) -> bool:
        s = entry[3]
        return self._suspicions.get(entry[2]) is s and s.deadline == entry[0]

    def _sus_push(self, name: str, s: Suspicion) -> None:
        self._sus_seq += 1
        heapq.heappush(self._sus_heap, (s.deadline, self._sus_seq, name, s))

    def _alive(self, now: float, a: wire.Alive, addr_text: str | None = None,
               verified: bool = False) -> None:
        m = self.members.get(a.node)
        if m is not None and m is not self.local and a.incarnation <= m.incarnation and \
                m.state is not State.LEFT:
            return  # the common case: old news (only a left node may change address)
        if addr_text is None:
            try:
                addr_text = wire.ip_from_bytes(a.addr)
            except DecodeError:
                return
        if len(a.vsn) >= 3 and (a.vsn[0] == 0 or a.vsn[1] == 0 or a.vsn[0] > a.vsn[1]):
            return  # memberlist rejects nonsensical protocol ranges
        if len(a.meta) > META_MAX_SIZE:
            return
        if m is not None and self._implausible(m, a.incarnation):
            return
        if m is self.local:
            if self.leaving:
                return
            if (m.addr, m.port) != (addr_text, a.port):
                self.delegate.notify_conflict(now, m, (addr_text, a.port))
                return
            if a.incarnation < self.local.incarnation:
                return
            if a.incarnation == self.local.incarnation and a.meta == self.local.meta and \
                    a.vsn == self.local.vsn:
                return
            self._refute(a.incarnation)
            return
        if m is None:
            if self.merging_join_reply or self._vouched or self._first_hand == addr_text:
                self._first_hand = None  # a TCP sender may introduce itself (once per stream)
                self.admission.forget(a.node)
                self._add_member(now, a, addr_text)
            else:  # heard of from a stranger: admitted once it answers our ping
                self.admission.offer(now, a, addr_text)
            return
        updates_addr = False
        if (m.addr, m.port) != (addr_text, a.port):
            if m.state is not State.LEFT:
                self.metrics.extra["address_conflicts"] = \
                    self.metrics.extra.get("address_conflicts", 0) + 1
                self.delegate.notify_conflict(now, m, (addr_text, a.port))
                return
            updates_addr = True
        outcome = decide(m.state, m.incarnation, Kind.ALIVE, a.incarnation)
        if outcome.action is not Action.MOVE and not updates_addr:
            return
        if updates_addr and a.incarnation < m.incarnation:
            return
        if updates_addr and not (verified or self._vouched or self.merging_join_reply):
            self.admission.offer(now, a, addr_text)  # the new address must answer first
            return
        was = m.state
        meta_changed = m.meta != a.meta
        self._suspicions.pop(m.name, None)
        if updates_addr:
            self.admission.member_gone(m.address)
            self.admission.member_at((addr_text, a.port))
        m.addr, m.port, m.meta, m.incarnation = addr_text, a.port, a.meta, a.incarnation
        self._pp_states = self._pp_dirty[m.name] = None
        if a.vsn:
            m.vsn = a.vsn
        if was is not State.ALIVE:
            m.state = State.ALIVE
            m.state_change = now
            if was is not State.SUSPECT:  # a suspect already is a gossip candidate
                self._candidates = None
        self._queue_alive(m)
        if was in (State.DEAD, State.LEFT):
            self.delegate.notify_join(now, m)
        elif meta_changed:
            self.delegate.notify_update(now, m)

    def _implausible(self, m: Member, inc: int) -> bool:
        """``inc`` is further ahead of what we hold for ``m`` than any real history gets."""
        if inc - m.incarnation <= self.cfg.max_incarnation_jump or self.merging_join_reply:
            return False
        self.metrics.incarnation_jumps_dropped += 1
        return True

    def _add_member(self, now: float, a: wire.Alive, addr_text: str) -> None:
        m = Member(a.node, addr_text, a.port, a.meta, a.incarnation, State.ALIVE, now,
                   a.vsn or DEFAULT_VSN)
        self.members[a.node] = m
        self.admission.member_at(m.address)
        self._pp_states = self._pp_dirty[m.name] = None
        if self._candidates is not None:  # a new alive member is a gossip candidate
            self._candidates.append(m)
        # a random position (randint is slow for the ~N^2 inserts of a big join)
        self._order.insert(int(self.rng.random() * (len(self._order) + 1)), a.node)
        self._queue_alive(m)
        self.delegate.notify_join(now, m)

    def _verify(self, now: float) -> None:
        """Ping the second-hand names that are due (see :mod:`gossip.admission`)."""
        src = wire.ip_to_bytes(self.local.addr)
        for seq, p in self.admission.due(now, self._next_seq):
            ping = wire.encode(wire.Ping(seq, p.alive.node, src, self.local.port, self.name))
            self._send_to((p.addr, p.alive.port), [ping])

    def _accusation_ends_here(self, m: Member, inc: int) -> bool:
        """The checks a suspect or dead message about known member ``m`` passes before its
        transition: True if it was implausible (counted), older than what we hold (a stale
        one about us makes us reassert), or about us (refuted unless we are leaving)."""
        if self._implausible(m, inc):
            return True
        if inc < m.incarnation:
            if m is self.local:
                self._reassert()
            return True
        if m is self.local:
            if not self.leaving:
                self._refute(inc)
            return True
        return False

    def _suspect(self, now: float, s: wire.Suspect) -> None:
        m = self.members.get(s.node)
        if m is None or self._accusation_ends_here(m, s.incarnation):
            return
        outcome = decide(m.state, m.incarnation, Kind.SUSPECT, s.incarnation)
        if outcome.action is Action.CONFIRM:  # Lifeguard: a new accuser shortens the timer
            timer = self._suspicions.get(m.name)
            if timer is not None and timer.confirm(now, s.sender):
                self._sus_push(m.name, timer)
                self.queue.queue(wire.encode(s), key=m.name)
            return
        if outcome.action is not Action.MOVE:
            return
        self.metrics.suspicions += 1
        m.incarnation = s.incarnation
        m.state = State.SUSPECT
        self._pp_states = self._pp_dirty[m.name] = None
        m.state_change = now
        self.queue.queue(wire.encode(s), key=m.name)
        n = len(self.members)
        k = self.cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        lo = suspicion_timeout(self.cfg.suspicion_mult, n, self.cfg.probe_interval)
        timer = Suspicion(now, s.sender, k, lo, lo * self.cfg.suspicion_max_timeout_mult)
        self._suspicions[m.name] = timer
        self._sus_push(m.name, timer)
        self._cap_confirmations()

    def _cap_confirmations(self) -> None:
        """rumor: confirmations can only come from members that are alive and not suspected
        themselves; when fewer remain than a timer expects (the small side of a split, where
        the whole far side is suspect), expect only those. memberlist keeps expecting them,
        so the small side of a 2|3 split needs 16-22 s to declare the far side failed."""
        need, alive = self.cfg.suspicion_mult - 2, State.ALIVE
        confirmers = -1  # alive members but us; counted only as far as ``need``
        for x in self.members.values():
            if x.state is alive:
                confirmers += 1
                if confirmers >= need:
                    return
        if confirmers >= need:
            return
        for name, timer in self._suspicions.items():
            if timer.cap(confirmers):
                self._sus_push(name, timer)
                m = self.members[name]  # our accusation, straight to the few who can confirm
                self._tell_confirmers(wire.encode(wire.Suspect(m.incarnation, name, self.name)))

    def _tell_confirmers(self, msg: bytes) -> None:
        """rumor: when only a few members are alive and unsuspected (the small side of a
        split), send them ``msg`` directly: gossip spends most of its few transmissions on
        the unreachable side, so they could miss it and wait for their own timers."""
        need, alive, local = self.cfg.suspicion_mult - 2, State.ALIVE, self.local
        few: list[Member] = []
        for x in self.members.values():
            if x.state is alive and x is not local:
                few.append(x)
                if len(few) >= need:
                    return  # enough of them: gossip reaches them
        if len(few) < need:
            for x in few:
                self._send_to(x.address, [msg], x)

    def _suspicion_expired(self, now: float, name: str) -> None:
        del self._suspicions[name]
        m = self.members.get(name)
        if m is None or m.state is not State.SUSPECT:
            return
        dead = wire.Dead(m.incarnation, name, self.name)
        self._dead(now, dead)
        self._tell_confirmers(wire.encode(dead))

    def _dead(self, now: float, d: wire.Dead) -> None:
        m = self.members.get(d.node)
        if m is None:
            self.admission.forget(d.node)  # it left (or died) before we could verify it
            return
        if self._accusation_ends_here(m, d.incarnation):
            return
        graceful = d.sender == d.node
        outcome = decide(m.state, m.incarnation, Kind.DEAD, d.incarnation, graceful)
        if outcome.action is not Action.MOVE or outcome.to is None:
            return
        self._suspicions.pop(m.name, None)
        self.queue.queue(wire.encode(d), key=m.name)
        m.incarnation = d.incarnation
        m.state = outcome.to
        self._pp_states = self._pp_dirty[m.name] = None
        m.state_change = now
        # still a gossip candidate (it was alive or suspect) until the dead time ends; rumor
        # also gossips to the just-left (memberlist does not), so a node named in a forged
        # leave hears of it and refutes at once rather than at the next push-pull
        self._candidates_until = min(self._candidates_until,
                                     now + self.cfg.gossip_to_the_dead_time)
        if outcome.to is State.DEAD:
            self.metrics.deaths += 1
        self.delegate.notify_leave(now, m)

    def _refute(self, accused: int) -> None:
        self.metrics.refutes += 1
        # never past uint32: at the ceiling a refute repeats it (only reachable through
        # max_incarnation_jump-sized steps, each of which we refuted)
        self.local.incarnation = min(max(self.local.incarnation + 1, accused + 1),
                                     MAX_INCARNATION)
        self._pp_states = self._pp_dirty[self.local.name] = None
        self.awareness.apply_delta(1)
        self._queue_alive(self.local)
        self.gossip_soon()

    def _reassert(self) -> None:
        """A stale accusation about us still circulates (rumor: memberlist ignores it), so
        whoever sent it may not have our refute yet: gossip our current alive again."""
        if not self.leaving:
            self._queue_alive(self.local)
            self.gossip_soon()

    def _queue_alive(self, m: Member) -> None:
        msg = wire.encode_alive(m.incarnation, m.name, wire.ip_to_bytes(m.addr), m.port, m.meta,
                                m.vsn)
        self.queue.queue(msg, key=m.name)

    def reap(self, now: float) -> list[str]:
        """Forget dead/left members older than gossip_to_the_dead_time (run on probe wrap)."""
        gone = [m.name for m in self.members.values()
                if m is not self.local and m.state in (State.DEAD, State.LEFT)
                and now - m.state_change > self.cfg.gossip_to_the_dead_time]
        for name in gone:
            self.admission.member_gone(self.members.pop(name).address)
            self._candidates = None
            self._pp_states = None
            self._pp_enc.pop(name, None)
            self._pp_dirty.pop(name, None)
            self._suspicions.pop(name, None)
        if gone:
            dead = set(gone)
            self._order = [n for n in self._order if n not in dead]
        return gone

    def leave(self, now: float, done: Callable[[], None] | None = None) -> None:
        """Broadcast our graceful departure; ``done`` runs once it has been gossiped."""
        self.leaving = True
        self.local.state = State.LEFT
        self.local.state_change = now
        self._pp_states = self._pp_dirty[self.local.name] = None
        msg = wire.encode(wire.Dead(self.local.incarnation, self.name, self.name))
        if not self.has_live_peers():  # nobody to tell (memberlist: anyAlive)
            if done is not None:
                done()
            return
        self.queue.queue(msg, key=self.name, on_done=done)
        self.gossip_soon()

    def update_meta(self, now: float) -> None:
        """Re-read the delegate's meta (tags changed) and announce it with a new incarnation."""
        self.local.meta = self.delegate.node_meta(META_MAX_SIZE)
        self.local.incarnation = min(self.local.incarnation + 1, MAX_INCARNATION)
        self._pp_states = self._pp_dirty[self.local.name] = None
        self._queue_alive(self.local)
        self.gossip_soon()
