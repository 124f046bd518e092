"""Member status: join and leave intents (Lamport-ordered), memberlist's join / leave /
update notifications turned into Serf member events, and reaping failed and left members."""

from __future__ import annotations

import math

from gossip.membership import Member
from gossip.serf.base import SerfState
from gossip.serf.codec import SerfMsg, decode_tags, encode_msg
from gossip.serf.model import MemberEvent, MemberStatus, SerfMember, snapshot


class Intents(SerfState):
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
                self.reconnector.welcome_back(now, (n.addr, n.port))
            m.status = MemberStatus.ALIVE
            m.leave_time = 0.0
            m.addr, m.port, m.tags, m.vsn = n.addr, n.port, tags, n.vsn
        self._gen += 1
        self.reconnector.changed(m)
        self._out.append(MemberEvent("join", snapshot(m)))

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
        else:
            return
        m.leave_time = now
        self._gen += 1
        self.reconnector.changed(m)
        self._out.append(MemberEvent(kind, snapshot(m)))

    def notify_update(self, now: float, n: Member) -> None:
        m = self.members.get(n.name)
        if m is None:
            return
        m.addr, m.port, m.tags, m.vsn = n.addr, n.port, decode_tags(n.meta), n.vsn
        self._out.append(MemberEvent("update", snapshot(m)))

    def _broadcast_join(self, now: float, ltime: int) -> None:
        self.clock.witness(ltime)
        self._join_intent(now, ltime, self.name)
        self.intents.queue(encode_msg(SerfMsg.JOIN, {"LTime": ltime, "Node": self.name}))
        self.ml.gossip_soon(now)

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
            self.reconnector.changed(m)
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
            self._out.append(MemberEvent("leave", snapshot(m)))
        elif m.status not in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return False
        self.reconnector.changed(m)
        if prune and m.status is MemberStatus.LEFT:
            self._erase(m)
        return True

    def _reap(self, now: float) -> None:
        # the member scan is skipped while the table is unchanged since the last one and no
        # failed or left member can be due yet (a 1 s margin: the tests below still decide,
        # exactly as before); a steady 1,000-member table is not walked every reap_interval
        gen, due = self._reap_after
        if gen != self._gen or now + 1.0 >= due:
            due = math.inf
            timeouts = {MemberStatus.FAILED: self.cfg.reconnect_timeout,
                        MemberStatus.LEFT: self.cfg.tombstone_timeout}
            for m in list(self.members.values()):
                timeout = timeouts.get(m.status)
                if timeout is None:
                    continue
                if now - m.leave_time > timeout:
                    self._erase(m)
                else:
                    due = min(due, m.leave_time + timeout)
            self._reap_after = (self._gen, due)
        for node, (_, _, t) in list(self.recent_intents.items()):
            if now - t > self.cfg.recent_intent_timeout:
                del self.recent_intents[node]

    def _erase(self, m: SerfMember) -> None:
        self.members.pop(m.name, None)
        self._gen += 1
        self.reconnector.erased(m)
        self._out.append(MemberEvent("reap", snapshot(m)))
