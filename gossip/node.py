"""trio shell that runs a :class:`gossip.serf.Serf` core with real time and sockets.

Thin by design: read datagrams and streams, hand them to the core with ``trio.current_time()``
as ``now``, perform the effects the core returns, and sleep until the core's next deadline.
Everything the core decides is therefore testable without this module (``tests/sim``), and
this module is tested with real loopback sockets and against the real ``serf`` agent.

:class:`GossipNode`'s public methods and the :class:`NodeStats` snapshot are all the agent
sees of gossip (with the value types ``gossip/__init__.py`` exports); the Serf core behind
them stays private (``_serf``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import trio

from gossip.config import Addr, GossipConfig, SendPacket, StreamRequest
from gossip.crypto import Keyring
from gossip.errors import DecodeError
from gossip.keyops import KeyResponse
from gossip.queries import QueryResult
from gossip.serf import Delivery, Serf, SerfConfig, SerfMember
from gossip.transport import (
    StreamLimit,
    UdpTransport,
    exchange,
    open_tcp_listener,
    read_message,
    serve_tcp,
)

log = logging.getLogger("rumor.gossip")


class Clocks(NamedTuple):
    """The last Lamport times seen (member, user event, query), as Serf's snapshot keeps."""

    member: int
    event: int
    query: int


@dataclass(frozen=True)
class NodeStats:
    """One snapshot of a running node's figures (what the agent's ``/v1/agent/metrics`` reports).

    Gauges first, then counters since start.  Taken by :meth:`GossipNode.stats`."""

    awareness_score: int  # memberlist's local health: 0 is healthy
    broadcast_queue_depth: int  # membership + event + intent broadcasts waiting to go out
    member_clock: int  # Lamport clocks: the next time each will hand out
    event_clock: int
    query_clock: int
    members_unverified: int  # names heard of, not yet admitted (awaiting their ping answer)
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    decode_errors: int  # undecodable datagrams, streams and Serf messages
    probes: int
    probe_failures: int
    indirect_probes: int
    tcp_pings: int
    suspicions: int
    refutes: int
    deaths: int
    push_pulls: int
    events_fired: int  # user events this node started
    events_deduped: int  # user events received again (already in the dedup buffer)
    events_too_old: int  # user events older than the dedup window or the restore floor
    broadcasts_pruned: int  # broadcasts dropped because the queues were full
    queries_received: int
    queries_answered: int
    query_answers_relayed: int
    keyring_changes: int  # key operations applied here (install, use, remove)
    ltime_jumps_dropped: int  # Lamport times implausibly far ahead, dropped
    incarnation_jumps_dropped: int  # incarnations implausibly far ahead, dropped
    members_refused: int  # unknown names refused (admission limit or push-pull intent cap)
    members_unanswered: int  # unknown names that never answered their admission ping
    streams_refused: int  # inbound TCP streams refused at the concurrency limit


class GossipNode:
    """One cluster member: UDP + TCP on ``bind``, advertising ``advertise``."""

    def __init__(self, name: str, bind: Addr, *, advertise: Addr | None = None,
                 tags: dict[str, str] | None = None, gossip: GossipConfig | None = None,
                 serf: SerfConfig | None = None, keyring: Keyring | None = None,
                 on_delivery: Callable[[Delivery], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.name = name
        self.bind = bind
        self.advertise = advertise
        self.tags = dict(tags or {})
        self._gcfg = gossip or GossipConfig()
        self._scfg = serf or SerfConfig()
        self.keyring = keyring
        self.on_delivery = on_delivery
        self._rng = rng or random.Random()
        self._core: Serf | None = None
        self._udp: UdpTransport | None = None
        self._wake = trio.Event()
        self._sleep_until = -math.inf  # when the sleeping timer loop wakes by itself
        self._nursery: trio.Nursery | None = None
        self._stream_errors = 0
        self.keyring_saver: Callable[[Sequence[bytes]], None] | None = None
        # Go-regexp matcher for query tag filters (expr, value) -> matched; None: Python re
        self.tag_matcher: Callable[[str, str], bool] | None = None
        self._restore: Clocks | None = None
        self._stream_limit = StreamLimit(self._gcfg.max_inbound_streams)  # .refused: counted

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, start the core, serve until cancelled.  BindError if the port is taken."""
        self._udp = UdpTransport(self.bind)
        port = self._udp.port
        try:
            listener = await open_tcp_listener((self.bind[0], port))
        except OSError:
            self._udp.close()
            raise
        adv = self.advertise or (self.bind[0], port)
        if adv[1] == 0:
            adv = (adv[0], port)
        self._core = Serf(self.name, adv, rng=self._rng, now=trio.current_time(), tags=self.tags,
                          gossip=self._gcfg, config=self._scfg, keyring=self.keyring)
        self._core.queries.keyring_saver = self.keyring_saver
        if self.tag_matcher is not None:
            self._core.queries.tag_matcher = self.tag_matcher
        if self._restore is not None:
            self.restore_clocks(self._restore)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._udp_loop)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(serve_tcp, listener, self._serve_stream, self._stream_limit)
                task_status.started(port)
        finally:
            self._udp.close()
            await listener.aclose()

    @property
    def _serf(self) -> Serf:
        if self._core is None:
            raise RuntimeError("node is not running")
        return self._core

    @property
    def port(self) -> int:
        return self._udp.port if self._udp is not None else self.bind[1]

    @property
    def running(self) -> bool:
        """True once ``run`` has bound its sockets and started the core."""
        return self._core is not None

    @property
    def local_address(self) -> Addr:
        """The address other members reach this node at (advertised, with the bound port)."""
        local = self._serf.ml.local
        return local.addr, local.port

    def stats(self) -> NodeStats:
        """The node's figures now (see :class:`NodeStats`); RuntimeError if it is not running."""
        s = self._serf
        ml, sm, qm, adm = s.ml.metrics, s.metrics, s.queries.metrics, s.ml.admission
        return NodeStats(
            awareness_score=s.ml.awareness.score,
            broadcast_queue_depth=len(s.ml.queue) + len(s.event_queue) + len(s.intents),
            member_clock=s.clock.time(), event_clock=s.event_clock.time(),
            query_clock=s.query_clock.time(), members_unverified=len(adm),
            packets_in=ml.packets_in, packets_out=ml.packets_out, bytes_in=ml.bytes_in,
            bytes_out=ml.bytes_out, decode_errors=ml.decode_errors + sm.decode_errors,
            probes=ml.probes, probe_failures=ml.probe_failures,
            indirect_probes=ml.indirect_probes, tcp_pings=ml.tcp_pings,
            suspicions=ml.suspicions, refutes=ml.refutes, deaths=ml.deaths,
            push_pulls=ml.push_pulls, events_fired=sm.events_fired,
            events_deduped=sm.events_deduped, events_too_old=sm.events_too_old,
            broadcasts_pruned=sm.queue_pruned, queries_received=sm.queries_received,
            queries_answered=qm.queries_answered, query_answers_relayed=qm.relayed,
            keyring_changes=qm.key_ops_applied, ltime_jumps_dropped=sm.ltime_jumps_dropped,
            incarnation_jumps_dropped=ml.incarnation_jumps_dropped,
            members_refused=adm.metrics.refused + sm.intents_capped,
            members_unanswered=adm.metrics.expired, streams_refused=self._stream_limit.refused)

    # --- operations -----------------------------------------------------------------------

    async def join(self, addrs: Sequence[Addr], ignore_old: bool = False) -> int:
        """Push-pull with every address; returns how many answered."""
        done = trio.Event()
        result = [0]

        def finished(now: float, n: int) -> None:
            result[0] = n
            done.set()
        self._serf.join(trio.current_time(), list(addrs), ignore_old, finished)
        self._flush()
        await done.wait()
        return result[0]

    def user_event(self, name: str, payload: bytes, coalesce: bool = False) -> int:
        ltime = self._serf.user_event(trio.current_time(), name, payload, coalesce)
        self._flush()
        return ltime

    def force_leave(self, node: str, prune: bool = False) -> bool:
        ok = self._serf.force_leave(trio.current_time(), node, prune)
        self._flush()
        return ok

    async def leave(self, timeout: float | None = None) -> bool:
        """Graceful leave: wait until our departure has been gossiped (or ``timeout``)."""
        done = trio.Event()
        alone = not self._serf.ml.has_live_peers()
        self._serf.leave(trio.current_time(), done.set)
        self._flush()
        with trio.move_on_after(timeout if timeout is not None else
                                self._scfg.broadcast_timeout):
            await done.wait()
            if not alone:
                # stay up a moment to answer probes while the news spreads (Serf's
                # LeavePropagateDelay)
                await trio.sleep(self._gcfg.gossip_interval * 3)
            return True
        return False

    def members(self) -> list[SerfMember]:
        return self._serf.member_list()

    # --- queries, keyring, clocks ---------------------------------------------------------

    async def query(self, name: str, payload: bytes, *, timeout: float | None = None,
                    request_ack: bool = False, filter_nodes: Sequence[str] = (),
                    filter_tags: Mapping[str, str] | None = None,
                    relay_factor: int = 0) -> QueryResult:
        """Run a Serf query and wait for its deadline; ValueError if it is too big."""
        done = trio.Event()
        res = self._serf.queries.start(trio.current_time(), name, payload, timeout=timeout,
                                      request_ack=request_ack, filter_nodes=filter_nodes,
                                      filter_tags=filter_tags, relay_factor=relay_factor,
                                      done=lambda now, r: done.set())
        self._flush()
        await done.wait()
        return res

    async def key_operation(self, op: str, key: bytes = b"", timeout: float | None = None,
                            relay_factor: int = 0) -> KeyResponse:
        """Serf's KeyManager: ``op`` is install, use, remove or list; every member answers.

        Returns once all members answered or the query timed out; ``KeyResponse.error()``
        says whether it succeeded everywhere."""
        done = trio.Event()
        agg = self._serf.queries.start_key_op(trio.current_time(), op, key, timeout=timeout,
                                             relay_factor=relay_factor,
                                             done=lambda now, r: done.set())
        self._flush()
        await done.wait()
        return agg

    def keyring_keys(self) -> tuple[bytes, ...]:
        """This node's gossip keys, primary first (empty when encryption is off)."""
        ring = self._serf.queries.keyring
        return ring.keys if ring is not None else ()

    def clocks(self) -> Clocks:
        s = self._serf
        return Clocks(s.clock.time() - 1, s.event_clock.time() - 1, s.query_clock.time() - 1)

    def restore_clocks(self, clocks: Clocks) -> None:
        """Never let the clocks go back past a snapshot; older queries are not replayed.

        May be called before ``run`` (applied when the core starts)."""
        if self._core is None:
            self._restore = clocks
            return
        s = self._core
        s.clock.witness(clocks.member)
        s.event_clock.witness(clocks.event)
        s.query_clock.witness(clocks.query)
        s.query_min_time = max(s.query_min_time, clocks.query + 1)

    def witness_event_time(self, ltime: int) -> None:
        """Never hand out an event Lamport time at or below ``ltime`` (events held on disk)."""
        self._serf.witness_event_time(ltime)

    def ignore_events_before(self, ltime: int) -> None:
        """Drop user events older than ``ltime`` from now on (Serf's snapshot eventMinTime)."""
        s = self._serf
        s.event_min_time = max(s.event_min_time, ltime)

    def remember_events(self, events: Iterable[tuple[int, str, bytes]]) -> int:
        """Put ``(ltime, name, payload)`` user events held elsewhere (a restarted agent's
        store) into the dedup buffer, so push-pull offers them to peers; nothing is delivered.
        Returns how many were new."""
        return self._serf.remember_events(events)

    # --- internals ----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Carry out everything the core asked for, hand deliveries up, and wake the timer
        if the core's next deadline is now earlier than the one it sleeps until (after most
        packets it is not: no task switch for them)."""
        core = self._core
        if core is None:
            return
        for eff in core.take_effects():
            if isinstance(eff, SendPacket):
                if self._udp is not None:
                    self._udp.send(eff.addr, eff.data)
            elif isinstance(eff, StreamRequest) and self._nursery is not None:
                self._nursery.start_soon(self._stream_out, eff)
        deliveries = core.take_deliveries()
        if self.on_delivery is not None:
            for d in deliveries:
                try:
                    self.on_delivery(d)
                except Exception:  # the layer above must not kill gossip
                    log.exception("delivery handler failed")
        if core.next_deadline() < self._sleep_until:
            self._wake.set()

    async def _udp_loop(self) -> None:
        assert self._udp is not None and self._core is not None
        core = self._core
        while True:
            batch = await self._udp.receive_batch()
            now = trio.current_time()
            for data, src in batch:
                try:
                    core.receive_packet(now, src, data)
                except DecodeError as exc:
                    log.debug("dropped packet from %s:%d: %s", src[0], src[1], exc)
            self._flush()

    async def _timer_loop(self) -> None:
        assert self._core is not None
        core = self._core
        while True:
            self._wake = trio.Event()
            due = core.next_deadline()
            delay = due - trio.current_time()
            if delay > 0:
                self._sleep_until = due
                with trio.move_on_after(delay if math.isfinite(delay) else 3600):
                    await self._wake.wait()
                self._sleep_until = -math.inf
                if trio.current_time() < core.next_deadline():
                    continue
            core.tick(trio.current_time())
            self._flush()
            await trio.sleep(0)

    async def _serve_stream(self, stream: trio.SocketStream, peer: Addr) -> None:
        core = self._serf
        async with stream:
            try:
                with trio.fail_after(self._gcfg.tcp_timeout):
                    msg = await read_message(stream, core.ml.parser())
                    log.debug("stream from %s:%d: %s", peer[0], peer[1], msg.kind.name)
                    reply = core.handle_stream(trio.current_time(), peer, msg)
                    self._flush()
                    if reply is not None:
                        await stream.send_all(reply)
            except (DecodeError, OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                self._stream_errors += 1
                core.ml.metrics.decode_errors += isinstance(exc, DecodeError)
                log.debug("stream from %s:%d failed: %s", peer[0], peer[1], exc)

    async def _stream_out(self, req: StreamRequest) -> None:
        core = self._serf
        parser = core.ml.parser() if req.expect_reply else None
        reply = await exchange(req.addr, req.data, parser, self._gcfg.tcp_timeout)
        log.debug("stream to %s:%d (%s): %s", req.addr[0], req.addr[1],
                  "exchange" if req.expect_reply else "one-way",
                  "no reply" if reply is None else f"reply {reply.kind.name}")
        if req.expect_reply:
            core.stream_reply(trio.current_time(), req.token, reply)
            self._flush()
