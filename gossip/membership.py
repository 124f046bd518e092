"""SWIM membership core (memberlist semantics), sans-IO.

The core is plain state.  The shell (or the simulator) calls:

* ``receive_packet(now, src, data)`` for every datagram (raises ``DecodeError`` on garbage),
* ``handle_stream(now, src, msg)`` for every complete inbound TCP request (returns the reply),
* ``stream_reply(now, token, msg_or_None)`` when an exchange it asked for completes or fails,
* ``tick(now)`` whenever ``now >= next_deadline()``,

and then drains ``take_effects()``: datagrams to send and TCP exchanges to run.  Time and
randomness come in as ``now`` and the injected ``random.Random``; nothing here sleeps, reads a
clock or touches a socket.

What it implements: randomized round-robin probing with direct ping, indirect ping-req via k
members (with nacks), TCP fallback ping; suspicion with Lifeguard confirmations and local
health awareness; incarnation refutation; dead / left; reaping; piggybacked broadcasts;
push-pull anti-entropy and join.  Transition rules live in :mod:`gossip.state`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gossip import wire
from gossip.admission import Admission
from gossip.awareness import Awareness
from gossip.broadcast import BroadcastQueue
from gossip.config import DEFAULT_VSN, Addr, Effect, GossipConfig, SendPacket, StreamRequest
from gossip.errors import DecodeError
from gossip.state import Action, Kind, State, decide
from gossip.suspicion import Suspicion, suspicion_timeout
from gossip.wire import MsgType, StreamMessage

META_MAX_SIZE = 512
CATCH_UP_MAX = 16.0  # last catch-up push-pull after a join, in seconds
ENCRYPTION_OVERHEAD = 29
MAX_INCARNATION = (1 << 32) - 1  # uint32 on the wire: we never emit more


class Keyring(Protocol):
    def encrypt_packet(self, plaintext: bytes) -> bytes: ...
    def decrypt_packet(self, blob: bytes) -> bytes: ...
    def encrypt_stream(self, plaintext: bytes) -> bytes: ...
    def decrypt_stream(self, header5: bytes, blob: bytes) -> bytes: ...


@dataclass(slots=True)
class Member:
    name: str
    addr: str
    port: int
    meta: bytes
    incarnation: int
    state: State
    state_change: float
    vsn: bytes = DEFAULT_VSN

    @property
    def address(self) -> Addr:
        return (self.addr, self.port)

    @property
    def pmax(self) -> int:
        return self.vsn[1] if len(self.vsn) > 1 else 0


class Delegate:
    """Hooks for the layer above (Serf).  The defaults do nothing."""

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, now: float, msg: bytes) -> None:
        pass

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return []

    def has_broadcasts(self) -> bool:
        return False

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        pass

    def notify_join(self, now: float, m: Member) -> None:
        pass

    def notify_leave(self, now: float, m: Member) -> None:
        pass

    def notify_update(self, now: float, m: Member) -> None:
        pass

    def notify_conflict(self, now: float, existing: Member, other: Addr) -> None:
        """An alive for ``existing.name`` came from another address (memberlist Conflict)."""


@dataclass(slots=True)
class _Probe:
    target: str
    seq: int
    start: float
    indirect_at: float
    end_at: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    requester: Addr
    orig_seq: int
    want_nack: bool
    deadline: float


@dataclass
class Metrics:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    decode_errors: int = 0
    probes: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    tcp_pings: int = 0
    suspicions: int = 0
    refutes: int = 0
    deaths: int = 0
    push_pulls: int = 0
    streams_in: int = 0
    wrong_node_pings: int = 0
    incarnation_jumps_dropped: int = 0  # suspect/dead/alive implausibly far ahead
    extra: dict[str, int] = field(default_factory=dict)


class Memberlist:
    def __init__(self, config: GossipConfig, name: str, addr: Addr, *, rng: random.Random,
                 now: float, delegate: Delegate | None = None, keyring: Keyring | None = None,
                 vsn: bytes = DEFAULT_VSN) -> None:
        self.cfg = config
        self.name = name
        self.rng = rng
        self.delegate = delegate or Delegate()
        self.keyring = keyring
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.queue = BroadcastQueue(config.retransmit_mult)
        self.metrics = Metrics()
        self.members: dict[str, Member] = {}
        self.leaving = False
        self._effects: list[Effect] = []
        self._order: list[str] = []
        self._probe_idx = 0
        self._seq = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._sus_heap: list[tuple[float, int, str, Suspicion]] = []
        self._sus_seq = 0
        self._streams: dict[int, Callable[[float, StreamMessage | None], None]] = {}
        self._token = 0
        self._next_probe = now + config.probe_interval * rng.random()
        self._next_gossip = now + config.gossip_interval * rng.random()
        self._gossip_now = False
        self._last_extra = -math.inf  # when the last extra (fresh-broadcast) round went out
        self._next_push_pull = now + config.push_pull_interval * rng.random()
        # rumor: after a join, push-pull again after 1, 2, 4... s (until the normal interval)
        # so that members announced while we were joining are never left to gossip luck
        self._pp_ramp = math.inf
        self._candidates: list[Member] | None = None  # gossip targets, rebuilt on change
        self._pp_states: list[bytes] | None = None  # encoded member table, rebuilt on change
        self._candidates_until = math.inf
        self.merging_join_reply = False  # True while merging the reply to our own join
        self.admission = Admission(config, now)  # second-hand names waiting for an ack
        self._vouched = False  # True while handling a packet or stream from a member
        self._first_hand: str | None = None  # IP of an inbound stream's sender, until used
        meta = self.delegate.node_meta(META_MAX_SIZE)
        self.local = Member(name, addr[0], addr[1], meta, 1, State.ALIVE, now, vsn)
        self.members[name] = self.local
        self.admission.member_at(addr)
        self._order.append(name)
        self._queue_alive(self.local)

    # --- shell interface -----------------------------------------------------------------

    def take_effects(self) -> list[Effect]:
        out, self._effects = self._effects, []
        return out

    def next_deadline(self) -> float:
        t = min(self._next_probe, self._next_push_pull)
        if self.admission.pending:
            t = min(t, self.admission.deadline())
        if self._gossip_now:
            t = min(t, self._last_extra + self.cfg.gossip_on_new_gap)
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

    def _sus_live(self, entry: tuple[float, int, str, Suspicion]) -> bool:
        s = entry[3]
        return self._suspicions.get(entry[2]) is s and s.deadline == entry[0]

    def _sus_push(self, name: str, s: Suspicion) -> None:
        self._sus_seq += 1
        heapq.heappush(self._sus_heap, (s.deadline, self._sus_seq, name, s))

    def num_members(self) -> int:
        return len(self.members)

    def alive_members(self) -> list[Member]:
        return [m for m in self.members.values() if m.state in (State.ALIVE, State.SUSPECT)]

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
        error: DecodeError | None = None
        self.admission.begin_message()
        self._vouched = self.admission.vouches(src)
        for msg in msgs:
            if type(msg) is alive:  # fast path: old news about a known node (most gossip)
                m = members.get(msg.node)
                if m is not None and m is not local and m.state is not left and \
                        msg.incarnation <= m.incarnation:
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
                self._suspicion_expired(now, entry[2], entry[3])
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                if relay.want_nack:
                    self._send_to(relay.requester, [wire.encode(wire.Nack(relay.orig_seq))])
        p = self._probe
        if p is not None:
            if not p.indirect_sent and now >= p.indirect_at:
                self._probe_indirect(now, p)
            elif p.indirect_sent and now >= p.end_at:
                self._probe_failed(now, p)
        if now >= self._next_probe:
            if self._probe is not None:  # overran: the end handler above should have fired
                self._probe_failed(now, self._probe)
            self._start_probe(now)
        extra = self._gossip_now and now >= self._last_extra + self.cfg.gossip_on_new_gap
        if extra:
            self._last_extra = now
        if extra or now >= self._next_gossip:
            if now >= self._next_gossip:
                # after idle time (no tick while there was nothing to send) restart the beat
                nxt = self._next_gossip + self.cfg.gossip_interval
                self._next_gossip = nxt if nxt > now else now + self.cfg.gossip_interval
            self._gossip_now = False
            self._gossip(now)
        if now >= self._next_push_pull:
            interval = self.cfg.push_pull_interval * _push_pull_scale(len(self.members))
            if self._pp_ramp < interval:
                interval = self._pp_ramp
                self._pp_ramp *= 2
                if self._pp_ramp > CATCH_UP_MAX:  # 1, 2, 4, 8, 16 s, then the normal rhythm
                    self._pp_ramp = math.inf
            self._next_push_pull = now + interval
            self._periodic_push_pull(now)

    def push_pull_soon(self, now: float, delay: float) -> None:
        """Bring the next anti-entropy push-pull forward to at most ``delay`` from now."""
        self._next_push_pull = min(self._next_push_pull, now + delay)

    def gossip_soon(self) -> None:
        """Ask for an extra gossip round at the next tick (fresh broadcasts go out at once)."""
        if self.cfg.gossip_on_new:
            self._gossip_now = True

    # --- joining, leaving, streams ---------------------------------------------------------

    def push_pull_request(self, join: bool) -> bytes:
        states = self._pp_states  # reset to None by every change to the member table
        if states is None:
            enc, ipb = wire.encode_node_state, wire.ip_to_bytes  # both memoised
            states = self._pp_states = [
                enc(m.name, ipb(m.addr), m.port, m.meta, m.incarnation, m.state, m.vsn)
                for m in self.members.values()]
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
            if r.state == alive:  # fast path: the same early return as _alive's
                m = members.get(r.name)
                if m is not None and m is not local and r.incarnation <= m.incarnation and \
                        m.state is not left:
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

    def leave(self, now: float, done: Callable[[], None] | None = None) -> None:
        """Broadcast our graceful departure; ``done`` runs once it has been gossiped."""
        self.leaving = True
        self.local.state = State.LEFT
        self.local.state_change = now
        self._pp_states = None
        msg = wire.encode(wire.Dead(self.local.incarnation, self.name, self.name))
        if not self.has_live_peers():  # nobody to tell (memberlist: anyAlive)
            if done is not None:
                done()
            return
        self.queue.queue(msg, key=self.name, on_done=done)
        self.gossip_soon()

    def has_live_peers(self) -> bool:
        return any(m.state is State.ALIVE and m is not self.local
                   for m in self.members.values())

    def update_meta(self, now: float) -> None:
        """Re-read the delegate's meta (tags changed) and announce it with a new incarnation."""
        self.local.meta = self.delegate.node_meta(META_MAX_SIZE)
        self.local.incarnation = min(self.local.incarnation + 1, MAX_INCARNATION)
        self._pp_states = None
        self._queue_alive(self.local)
        self.gossip_soon()

    # --- message handling --------------------------------------------------------------------

    def _handle(self, now: float, src: Addr, msg: wire.Message) -> None:
        t = type(msg)
        if t is wire.Alive:
            self._alive(now, msg)  # type: ignore[arg-type]
        elif t is wire.Ping:
            self._on_ping(now, src, msg)  # type: ignore[arg-type]
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

    def _reply_addr(self, src: Addr, addr: bytes, port: int) -> Addr:
        if addr and port:
            try:
                return (wire.ip_from_bytes(addr), port)
            except DecodeError:
                return src
        return src

    def _on_ping(self, now: float, src: Addr, p: wire.Ping) -> None:
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
        self._relays[seq] = _Relay(requester, req.seq_no, req.nack, now + self.cfg.probe_timeout)
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
        self._pp_states = None
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
        self._pp_states = None
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

    def _suspect(self, now: float, s: wire.Suspect) -> None:
        m = self.members.get(s.node)
        if m is None or self._implausible(m, s.incarnation):
            return
        if s.incarnation < m.incarnation:
            if m is self.local:
                self._reassert()
            return
        if m is self.local:
            if not self.leaving:
                self._refute(s.incarnation)
            return
        outcome = decide(m.state, m.incarnation, Kind.SUSPECT, s.incarnation)
        if outcome.action is Action.CONFIRM:
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
        self._pp_states = None
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
        confirmers = sum(1 for x in self.members.values() if x.state is State.ALIVE) - 1
        if confirmers >= self.cfg.suspicion_mult - 2:
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
        few = [x for x in self.members.values() if x.state is State.ALIVE and x is not self.local]
        if len(few) < self.cfg.suspicion_mult - 2:
            for x in few:
                self._send_to(x.address, [msg], x)

    def _suspicion_expired(self, now: float, name: str, s: Suspicion) -> None:
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
        if self._implausible(m, d.incarnation):
            return
        if d.incarnation < m.incarnation:
            if m is self.local:
                self._reassert()
            return
        if m is self.local:
            if not self.leaving:
                self._refute(d.incarnation)
            return
        graceful = d.sender == d.node
        outcome = decide(m.state, m.incarnation, Kind.DEAD, d.incarnation, graceful)
        if outcome.action is not Action.MOVE or outcome.to is None:
            return
        self._suspicions.pop(m.name, None)
        self.queue.queue(wire.encode(d), key=m.name)
        m.incarnation = d.incarnation
        m.state = outcome.to
        self._pp_states = None
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
        self._pp_states = None
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

    # --- probing --------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _start_probe(self, now: float) -> None:
        interval = self.awareness.scale(self.cfg.probe_interval)
        self._next_probe = now + interval
        target = self._next_target(now)
        if target is None:
            return
        self.metrics.probes += 1
        seq = self._next_seq()
        self._probe = _Probe(target.name, seq, now, now + self.cfg.probe_timeout, now + interval)
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

    def reap(self, now: float) -> list[str]:
        """Forget dead/left members older than gossip_to_the_dead_time (run on probe wrap)."""
        gone = [m.name for m in self.members.values()
                if m is not self.local and m.state in (State.DEAD, State.LEFT)
                and now - m.state_change > self.cfg.gossip_to_the_dead_time]
        for name in gone:
            self.admission.member_gone(self.members.pop(name).address)
            self._candidates = None
            self._pp_states = None
            self._suspicions.pop(name, None)
        if gone:
            dead = set(gone)
            self._order = [n for n in self._order if n not in dead]
        return gone

    def _probe_indirect(self, now: float, p: _Probe) -> None:
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

    def _probe_failed(self, now: float, p: _Probe) -> None:
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

    # --- gossip and push-pull ---------------------------------------------------------------

    def _budget(self) -> int:
        b = self.cfg.udp_buffer_size - wire.COMPOUND_HEADER_OVERHEAD
        return b - ENCRYPTION_OVERHEAD if self.keyring is not None else b

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

    def _periodic_push_pull(self, now: float) -> None:
        peers = [m for m in self.members.values()
                 if m is not self.local and m.state is State.ALIVE]
        if peers:
            self.start_push_pull(now, self.rng.choice(peers).address, join=False)

    def _local_push_pull(self, join: bool) -> wire.PushPull:
        nodes = tuple(wire.PushNodeState(m.name, wire.ip_to_bytes(m.addr), m.port, m.meta,
                                         m.incarnation, int(m.state), m.vsn)
                      for m in self.members.values())
        return wire.PushPull(join, nodes, self.delegate.local_state(join))

    # --- output -----------------------------------------------------------------------------

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


def _push_pull_scale(n: int) -> float:
    """memberlist pushPullScale: 1 up to 32 nodes, then +1 per doubling."""
    if n <= 32:
        return 1.0
    return math.ceil(math.log2(n) - math.log2(32)) + 1.0
