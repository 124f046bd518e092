"""The Serf core: :class:`Serf`, its sans-IO surface, operations, memberlist delegate
dispatch and the glue to :mod:`gossip.queries`."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

from gossip import wire
from gossip.config import Addr, Effect, GossipConfig
from gossip.errors import DecodeError
from gossip.membership import Member, Memberlist, WireCipher
from gossip.queries import Queries
from gossip.query_wire import Query, decode_query, decode_query_response
from gossip.serf.codec import SerfMsg, encode_msg, encode_tags, parse_intent, parse_user_event
from gossip.serf.model import (
    Delivery,
    MemberStatus,
    NameConflict,
    SerfConfig,
    SerfError,
    SerfMember,
)
from gossip.serf.pushpull import PushPullState

log = logging.getLogger("rumor.gossip")


class Serf(PushPullState):
    def __init__(self, name: str, addr: Addr, *, rng: random.Random, now: float,
                 tags: Mapping[str, str] | None = None,
                 gossip: GossipConfig | None = None, config: SerfConfig | None = None,
                 keyring: WireCipher | None = None) -> None:
        super().__init__(name, rng=rng, now=now, tags=tags, gossip=gossip, config=config)
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
        return min(self.ml.next_deadline(), self._next_reap, self.reconnector.next_due,
                   self._next_queue_check, self.queries.deadline())

    def tick(self, now: float) -> None:
        self.ml.tick(now)
        self.queries.expire(now)
        if now >= self._next_reap:
            self._next_reap = now + self.cfg.reap_interval
            self._reap(now)
        if now >= self.reconnector.next_due:
            self.reconnector.run(now, self.left)
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
            msg = encode_msg(SerfMsg.LEAVE, {"LTime": ltime, "Node": self.name, "Prune": False})
            self.intents.queue(msg, on_done=ml_leave)
            self.ml.gossip_soon(now)
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
        self.intents.queue(encode_msg(SerfMsg.LEAVE, {"LTime": ltime, "Node": node,
                                                    "Prune": prune}))
        self.ml.gossip_soon(now)
        return True

    def set_tags(self, now: float, tags: Mapping[str, str]) -> None:
        self.tags = dict(tags)
        self.ml.update_meta(now)
        local = self.members.get(self.name)
        if local is not None:
            local.tags = dict(self.tags)

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
            ltime, node, prune = parse_intent(msg)
            self.metrics.intents_received += 1
            if self._plausible(self.clock, ltime) and \
                    self._leave_intent(now, ltime, node, prune):
                self.intents.queue(msg)
                self.ml.gossip_soon(now)
        elif t == SerfMsg.JOIN:
            ltime, node, _ = parse_intent(msg)
            self.metrics.intents_received += 1
            if self._plausible(self.clock, ltime) and self._join_intent(now, ltime, node):
                self.intents.queue(msg)
        elif t == SerfMsg.USER_EVENT:
            ltime, name, payload, cc = parse_user_event(msg)
            if self._plausible(self.event_clock, ltime):
                self._handle_user_event(now, ltime, name, payload, cc, msg)
        elif t == SerfMsg.QUERY:
            self._handle_query(now, msg)
        elif t == SerfMsg.QUERY_RESPONSE:
            self.queries.on_response(now, decode_query_response(msg[1:]))
        elif t == 9:  # messageRelayType: a query answer to forward
            self.queries.on_relay(msg)
        else:
            raise DecodeError(f"unknown serf message type {t}")

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
            self.ml.gossip_soon(now)
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
