"""Probing: randomized round-robin direct ping, indirect ping-req via k members (with
nacks), TCP fallback ping, relaying others' ping-reqs, and local health awareness."""

from __future__ import annotations

from gossip import wire
from gossip.config import Addr
from gossip.errors import DecodeError
from gossip.membership.base import Probe, Relay
from gossip.membership.changes import StateChanges
from gossip.membership.member import Member
from gossip.state import State
from gossip.wire import StreamMessage


class Probing(StateChanges):
    def _start_probe(self, now: float) -> None:
        interval = self.awareness.scale(self.cfg.probe_interval)
        self._next_probe = now + interval
        target = self._next_target(now)
        if target is None:
            return
        self.metrics.probes += 1
        seq = self._next_seq()
        self._probe = Probe(target.name, seq, now, now + self.cfg.probe_timeout, now + interval)
        ping = wire.encode(wire.Ping(seq, target.name, wire.ip_to_bytes(self.local.addr),
                                     self.local.port, self.name))
        if target.state is State.SUSPECT:
            sus = wire.encode(wire.Suspect(target.incarnation, target.name, self.name))
            self._send_to(target.address, [ping, sus], target)
        else:
            self._send_piggybacked(target.address, ping, target)

    def _next_target(self, now: float) -> Member | None:
        for _ in range(len(self._order) + 1):
            if self._probe_idx >= len(self._order):
                self.reap(now)
                self.rng.shuffle(self._order)
                self._probe_idx = 0
                if not self._order:
                    return None
            name = self._order[self._probe_idx]
            self._probe_idx += 1
            m = self.members.get(name)
            if m is None or m is self.local or m.state in (State.DEAD, State.LEFT):
                continue
            return m
        return None

    def _probe_indirect(self, p: Probe) -> None:
        p.indirect_sent = True
        target = self.members.get(p.target)
        if target is None:
            self._probe = None
            return
        self.metrics.indirect_probes += 1
        for relay in self._random_alive(self.cfg.indirect_checks, p.target):
            want_nack = relay.pmax >= 4
            if want_nack:
                p.expected_nacks += 1
            req = wire.IndirectPingReq(p.seq, wire.ip_to_bytes(target.addr), target.port,
                                       target.name, want_nack,
                                       wire.ip_to_bytes(self.local.addr), self.local.port,
                                       self.name)
            self._send_to(relay.address, [wire.encode(req)], relay)
        if self.cfg.tcp_pings and target.pmax >= 3:
            self.metrics.tcp_pings += 1
            ping = wire.encode(wire.Ping(p.seq, target.name))

            def on_tcp_ack(t: float, reply: StreamMessage | None, seq: int = p.seq) -> None:
                if reply is not None and isinstance(reply.message, wire.Ack) and \
                        reply.message.seq_no == seq:
                    self._on_ack(t, seq)
            self._stream(target.address, self._wrap_stream(ping), on_tcp_ack)

    def _random_alive(self, k: int, exclude: str) -> list[Member]:
        """Up to ``k`` distinct random alive members other than us and ``exclude``.

        Like memberlist's kRandomNodes, random picks from the probe order (so a probe in a big
        cluster costs O(k), not a shuffle of the member table); unlike it, a short result is
        completed from a full scan, so the only eligible relays are never missed."""
        order, members = self._order, self.members
        out: list[Member] = []
        n = len(order)
        for _ in range(3 * min(n, 64)):
            if len(out) >= k:
                return out
            m = members.get(order[int(self.rng.random() * n)])
            if m is not None and m.state is State.ALIVE and m is not self.local and \
                    m.name != exclude and m not in out:
                out.append(m)
        rest = [m for m in members.values() if m.state is State.ALIVE and m is not self.local
                and m.name != exclude and m not in out]
        self.rng.shuffle(rest)
        return out + rest[:k - len(out)]

    def _probe_failed(self, now: float, p: Probe) -> None:
        self._probe = None
        self.metrics.probe_failures += 1
        if p.expected_nacks > 0:
            if p.nacks < p.expected_nacks:
                self.awareness.apply_delta(p.expected_nacks - p.nacks)
        else:
            self.awareness.apply_delta(1)
        m = self.members.get(p.target)
        if m is None or m.state in (State.DEAD, State.LEFT):
            return
        self._suspect(now, wire.Suspect(m.incarnation, m.name, self.name))

    def _reply_addr(self, src: Addr, addr: bytes, port: int) -> Addr:
        if addr and port:
            try:
                return (wire.ip_from_bytes(addr), port)
            except DecodeError:
                return src
        return src

    def _on_ping(self, src: Addr, p: wire.Ping) -> None:
        if p.node and p.node != self.name:
            self.metrics.wrong_node_pings += 1
            return
        dst = self._reply_addr(src, p.source_addr, p.source_port)
        self._send_piggybacked(dst, wire.encode(wire.Ack(p.seq_no)), self.members.get(
            p.source_node))

    def _on_indirect(self, now: float, src: Addr, req: wire.IndirectPingReq) -> None:
        try:
            target = (wire.ip_from_bytes(req.target), req.port)
        except DecodeError:
            return
        requester = self._reply_addr(src, req.source_addr, req.source_port)
        seq = self._next_seq()
        self._relays[seq] = Relay(requester, req.seq_no, req.nack, now + self.cfg.probe_timeout)
        ping = wire.Ping(seq, req.node, wire.ip_to_bytes(self.local.addr), self.local.port,
                         self.name)
        self._send_to(target, [wire.encode(ping)], self.members.get(req.node))

    def _on_ack(self, now: float, seq: int) -> None:
        p = self._probe
        if p is not None and p.seq == seq:
            self._probe = None
            if not p.indirect_sent:
                self.awareness.apply_delta(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send_to(relay.requester, [wire.encode(wire.Ack(relay.orig_seq))])
            return
        if self.admission.by_seq:
            pending = self.admission.answered(seq)
            if pending is None:
                return
            if pending.alive.node in self.members:  # a left member's new address
                self._alive(now, pending.alive, pending.addr, verified=True)
            else:
                self._add_member(now, pending.alive, pending.addr)
