"""Push-pull anti-entropy and join: the full-state exchange over TCP, its merge, the
periodic rhythm (scaled with cluster size, ramped after a join) and inbound streams."""

from __future__ import annotations

import math
from collections.abc import Callable

from gossip import wire
from gossip.config import Addr
from gossip.errors import DecodeError
from gossip.membership.changes import StateChanges, old_accusation
from gossip.state import State
from gossip.wire import MsgType, StreamMessage

CATCH_UP_MAX = 16.0  # last catch-up push-pull after a join, in seconds


class PushPull(StateChanges):
    def push_pull_soon(self, now: float, delay: float) -> None:
        """Bring the next anti-entropy push-pull forward to at most ``delay`` from now."""
        self._next_push_pull = min(self._next_push_pull, now + delay)

    def push_pull_request(self, join: bool) -> bytes:
        states = self._pp_states  # reset to None by every change to the member table
        if states is None:  # re-encode only the members that changed since the last one
            enc, ipb = wire.encode_node_state, wire.ip_to_bytes  # both memoised
            members, encoded = self.members, self._pp_enc
            for name in self._pp_dirty:
                m = members.get(name)
                if m is not None:
                    encoded[name] = enc(m.name, ipb(m.addr), m.port, m.meta, m.incarnation,
                                        m.state, m.vsn)
            self._pp_dirty.clear()
            states = self._pp_states = list(encoded.values())
        return self._wrap_stream(wire.encode_push_pull_parts(
            join, states, self.delegate.local_state(join)))

    def start_push_pull(self, now: float, addr: Addr, join: bool,
                        done: Callable[[float, bool], None] | None = None) -> None:
        """Ask the shell to push-pull with ``addr``; ``done(now, ok)`` reports the outcome."""
        def on_reply(t: float, reply: StreamMessage | None) -> None:
            ok = reply is not None and reply.push_pull is not None
            if ok:
                assert reply is not None and reply.push_pull is not None
                self.merging_join_reply = join  # the seed we chose: its numbers are trusted
                self._vouched = self.admission.vouches(addr)  # a member we connected to
                try:
                    self.merge_remote_state(t, reply.push_pull)
                finally:
                    self.merging_join_reply = self._vouched = False
                if join and self.cfg.catch_up_push_pull:
                    self._pp_ramp = 2.0
                    self._next_push_pull = min(self._next_push_pull, t + 1.0)
            if done is not None:
                done(t, ok)
        self.metrics.push_pulls += 1
        self._stream(addr, self.push_pull_request(join), on_reply)

    def handle_stream(self, now: float, src: Addr, msg: StreamMessage) -> bytes | None:
        """Serve one inbound TCP request; the returned bytes (if any) are the reply."""
        self.metrics.streams_in += 1
        if msg.kind == MsgType.PUSH_PULL and msg.push_pull is not None:
            reply = self.push_pull_request(msg.push_pull.join)
            self._vouched = self.admission.vouches(src, stream=True)
            self._first_hand = src[0]
            try:
                self.merge_remote_state(now, msg.push_pull)
            finally:
                self._vouched, self._first_hand = False, None
            return reply
        if msg.kind == MsgType.PING and isinstance(msg.message, wire.Ping):
            if msg.message.node and msg.message.node != self.name:
                self.metrics.wrong_node_pings += 1
                return None
            return self._wrap_stream(wire.encode(wire.Ack(msg.message.seq_no)))
        if msg.kind == MsgType.USER and isinstance(msg.message, wire.UserMsg):
            self.delegate.notify_msg(now, msg.message.payload)
            return None
        return None

    def merge_remote_state(self, now: float, pp: wire.PushPull) -> None:
        members, local, alive, left = self.members, self.local, State.ALIVE, State.LEFT
        self.admission.begin_message()
        for r in pp.nodes:
            m = members.get(r.name)  # fast paths: the same early returns as _alive's, ...
            if m is not None and m is not local:
                if r.state == alive:
                    if r.incarnation <= m.incarnation and m.state is not left:
                        continue
                elif old_accusation(m.state, m.incarnation, r.incarnation):  # ... _suspect's
                    continue
            try:
                addr = wire.ip_from_bytes(r.addr)
            except DecodeError:
                continue
            if r.state == State.ALIVE:
                self._alive(now, wire.Alive(r.incarnation, r.name, r.addr, r.port, r.meta,
                                            r.vsn), addr_text=addr)
            elif r.state == State.LEFT:
                self._dead(now, wire.Dead(r.incarnation, r.name, r.name))
            else:  # a remote "dead" only makes us suspect (memberlist mergeState)
                self._suspect(now, wire.Suspect(r.incarnation, r.name, self.name))
        if self.admission.pending:
            self._verify(now)
        if pp.user_state:
            self.delegate.merge_remote_state(now, pp.user_state, pp.join)

    def _periodic_push_pull(self, now: float) -> None:
        peers = [m for m in self.members.values()
                 if m is not self.local and m.state is State.ALIVE]
        if peers:
            self.start_push_pull(now, self.rng.choice(peers).address, join=False)

    def _push_pull_due(self, now: float) -> None:
        interval = self.cfg.push_pull_interval * _push_pull_scale(len(self.members))
        if self._pp_ramp < interval:
            interval = self._pp_ramp
            self._pp_ramp *= 2
            if self._pp_ramp > CATCH_UP_MAX:  # 1, 2, 4, 8, 16 s, then the normal rhythm
                self._pp_ramp = math.inf
        self._next_push_pull = now + interval
        self._periodic_push_pull(now)



def _push_pull_scale(n: int) -> float:
    """memberlist pushPullScale: 1 up to 32 nodes, then +1 per doubling."""
    if n <= 32:
        return 1.0
    return math.ceil(math.log2(n) - math.log2(32)) + 1.0
