"""Packet and stream output: gossip rounds, piggybacking, the datagram budget, framing.

Every datagram and TCP exchange the core asks for goes out through :meth:`_send_to` or
:meth:`_stream` here, as effects the shell drains.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gossip import wire
from gossip.config import Addr, SendPacket, StreamRequest
from gossip.membership.base import MemberlistState
from gossip.membership.member import Member
from gossip.state import State
from gossip.wire import MsgType, StreamMessage


class Output(MemberlistState):
    def gossip_soon(self, now: float = math.inf) -> None:
        """Ask for an extra gossip round at the next tick (fresh broadcasts go out at once).

        rumor: at most one extra round per gap, and the gap adapts.  A request made before
        the gap since the last extra round has passed (``now``, when known: Serf's fresh
        events, intents, queries) means a burst: the gap doubles, up to ``gossip_interval``,
        so the burst's messages share packets instead of each taking its own round to
        ``gossip_nodes`` peers (measured at 16 agents: 40 datagrams per event of a 200-event
        burst, Serf 3).  A request after the gap halves it again, down to
        ``gossip_on_new_gap``: an isolated fresh message still goes out at once."""
        if self.cfg.gossip_on_new:
            if not self._gossip_now:
                self._soon_at = now
            self._gossip_now = True

    def send_reliable(self, addr: Addr, payload: bytes) -> None:
        """A delegate message over TCP (no reply): for messages too big for one datagram."""
        self._token += 1
        self._effects.append(StreamRequest(addr, self._wrap_stream(
            wire.encode_user_stream(payload)), self._token, expect_reply=False))

    def send_user_packet(self, addr: Addr, payload: bytes) -> None:
        """One delegate message as its own datagram (memberlist SendToAddress)."""
        self._send_to(addr, [bytes([MsgType.USER]) + payload], None)

    def stream_reply(self, now: float, token: int, reply: StreamMessage | None) -> None:
        cb = self._streams.pop(token, None)
        if cb is not None:
            cb(now, reply)

    def parser(self) -> wire.StreamParser:
        """A parser for one inbound or reply stream, configured with our keyring."""
        dec = self.keyring.decrypt_stream if self.keyring is not None else None
        return wire.StreamParser(dec, self.keyring is not None and self.cfg.verify_incoming)

    def _budget(self) -> int:
        return wire.packet_budget(self.cfg.udp_buffer_size, self.keyring is not None)

    def _broadcasts(self, limit: int) -> list[bytes]:
        msgs = self.queue.get(wire.COMPOUND_OVERHEAD, limit, len(self.members))
        used = sum(map(len, msgs)) + wire.COMPOUND_OVERHEAD * len(msgs)
        overhead = wire.COMPOUND_OVERHEAD + wire.USER_MSG_OVERHEAD
        for u in self.delegate.get_broadcasts(overhead, limit - used):
            msgs.append(bytes([MsgType.USER]) + u)
        return msgs

    def _gossip(self, now: float) -> None:
        if not self.queue and not self.delegate.has_broadcasts():
            return
        candidates = self._gossip_candidates(now)
        if not candidates:
            return
        targets = self.rng.sample(candidates, min(self.cfg.gossip_nodes, len(candidates)))
        for t in targets:
            msgs = self._broadcasts(self._budget())
            if not msgs:
                return
            self._send_to(t.address, msgs, t)

    def _gossip_candidates(self, now: float) -> list[Member]:
        """Alive and suspect members, plus the recently dead or left (gossip to the dead)."""
        if self._candidates is None or now >= self._candidates_until:
            ttl = self.cfg.gossip_to_the_dead_time
            local, alive, suspect = self.local, State.ALIVE, State.SUSPECT
            # rebuilt on every change to the set, hundreds of times per node while a big
            # partition settles: comprehensions, not a loop with appends; dead and just-left
            # members stay candidates for ``ttl`` (a forged leave is heard and refuted)
            out = [m for m in self.members.values() if m is not local and (
                m.state is alive or m.state is suspect or now - m.state_change < ttl)]
            self._candidates_until = min(
                (m.state_change + ttl for m in out if m.state is not alive
                 and m.state is not suspect), default=math.inf)
            self._candidates = out
        return self._candidates

    def _stream(self, addr: Addr, data: bytes,
                cb: Callable[[float, StreamMessage | None], None]) -> None:
        self._token += 1
        self._streams[self._token] = cb
        self._effects.append(StreamRequest(addr, data, self._token))

    def _wrap_stream(self, plain: bytes) -> bytes:
        if self.cfg.compress:
            plain = wire.compress_message(plain)
        if self.keyring is not None:
            return self.keyring.encrypt_stream(plain)
        return plain

    def _send_piggybacked(self, addr: Addr, msg: bytes, member: Member | None) -> None:
        room = self._budget() - len(msg) - wire.COMPOUND_OVERHEAD
        extra = self._broadcasts(room) if room > 0 else []
        self._send_to(addr, [msg, *extra], member)

    def _send_to(self, addr: Addr, msgs: list[bytes], member: Member | None = None) -> None:
        packet = msgs[0] if len(msgs) == 1 else wire.make_compound(msgs)
        if self.cfg.compress:
            c = wire.compress_message(packet)
            if len(c) < len(packet):
                packet = c
        if member is not None and member.pmax >= 5:
            packet = wire.add_crc(packet)
        if self.keyring is not None:
            packet = self.keyring.encrypt_packet(packet)
        self.metrics.packets_out += 1
        self.metrics.bytes_out += len(packet)
        self._effects.append(SendPacket(addr, packet))
