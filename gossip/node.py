"""trio shell that runs a :class:`gossip.serf.Serf` core with real time and sockets.

Thin by design: read datagrams and streams, hand them to the core with ``trio.current_time()``
as ``now``, perform the effects the core returns, and sleep until the core's next deadline.
Everything the core decides is therefore testable without this module (``tests/sim``), and
this module is tested with real loopback sockets and against the real ``serf`` agent.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
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
        self.gcfg = gossip or GossipConfig()
        self.scfg = serf or SerfConfig()
        self.keyring = keyring
        self.on_delivery = on_delivery
        self.rng = rng or random.Random()
        self.core: Serf | None = None
        self.udp: UdpTransport | None = None
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.stream_errors = 0
        self.keyring_saver: Callable[[Sequence[bytes]], None] | None = None
        # Go-regexp matcher for query tag filters (expr, value) -> matched; None: Python re
        self.tag_matcher: Callable[[str, str], bool] | None = None
        self._restore: Clocks | None = None
        self.stream_limit = StreamLimit(self.gcfg.max_inbound_streams)  # .refused: counted

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, start the core, serve until cancelled.  BindError if the port is taken."""
        self.udp = UdpTransport(self.bind)
        port = self.udp.port
        try:
            listener = await open_tcp_listener((self.bind[0], port))
        except OSError:
            self.udp.close()
            raise
        adv = self.advertise or (self.bind[0], port)
        if adv[1] == 0:
            adv = (adv[0], port)
        self.core = Serf(self.name, adv, rng=self.rng, now=trio.current_time(), tags=self.tags,
                         gossip=self.gcfg, config=self.scfg, keyring=self.keyring)
        self.core.queries.keyring_saver = self.keyring_saver
        if self.tag_matcher is not None:
            self.core.queries.tag_matcher = self.tag_matcher
        if self._restore is not None:
            self.restore_clocks(self._restore)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._udp_loop)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(serve_tcp, listener, self._serve_stream, self.stream_limit)
                task_status.started(port)
        finally:
            self.udp.close()
            await listener.aclose()

    @property
    def serf(self) -> Serf:
        if self.core is None:
            raise RuntimeError("node is not running")
        return self.core

    @property
    def port(self) -> int:
        return self.udp.port if self.udp is not None else self.bind[1]

    # --- operations -----------------------------------------------------------------------

    async def join(self, addrs: Sequence[Addr], ignore_old: bool = False) -> int:
        """Push-pull with every address; returns how many answered."""
        done = trio.Event()
        result = [0]

        def finished(now: float, n: int) -> None:
            result[0] = n
            done.set()
        self.serf.join(trio.current_time(), list(addrs), ignore_old, finished)
        self._flush()
        await done.wait()
        return result[0]

    def user_event(self, name: str, payload: bytes, coalesce: bool = False) -> int:
        ltime = self.serf.user_event(trio.current_time(), name, payload, coalesce)
        self._flush()
        return ltime

    def force_leave(self, node: str, prune: bool = False) -> bool:
        ok = self.serf.force_leave(trio.current_time(), node, prune)
        self._flush()
        return ok

    def set_tags(self, tags: dict[str, str]) -> None:
        self.serf.set_tags(trio.current_time(), tags)
        self._flush()

    async def leave(self, timeout: float | None = None) -> bool:
        """Graceful leave: wait until our departure has been gossiped (or ``timeout``)."""
        done = trio.Event()
        alone = not self.serf.ml.has_live_peers()
        self.serf.leave(trio.current_time(), done.set)
        self._flush()
        with trio.move_on_after(timeout if timeout is not None else
                                self.scfg.broadcast_timeout):
            await done.wait()
            if not alone:
                # stay up a moment to answer probes while the news spreads (Serf's
                # LeavePropagateDelay)
                await trio.sleep(self.gcfg.gossip_interval * 3)
            return True
        return False

    def members(self) -> list[SerfMember]:
        return self.serf.member_list()

    # --- queries, keyring, clocks ---------------------------------------------------------

    async def query(self, name: str, payload: bytes, *, timeout: float | None = None,
                    request_ack: bool = False, filter_nodes: Sequence[str] = (),
                    filter_tags: Mapping[str, str] | None = None,
                    relay_factor: int = 0) -> QueryResult:
        """Run a Serf query and wait for its deadline; ValueError if it is too big."""
        done = trio.Event()
        res = self.serf.queries.start(trio.current_time(), name, payload, timeout=timeout,
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
        agg = self.serf.queries.start_key_op(trio.current_time(), op, key, timeout=timeout,
                                             relay_factor=relay_factor,
                                             done=lambda now, r: done.set())
        self._flush()
        await done.wait()
        return agg

    def keyring_keys(self) -> tuple[bytes, ...]:
        """This node's gossip keys, primary first (empty when encryption is off)."""
        ring = self.serf.queries.keyring
        return ring.keys if ring is not None else ()

    def clocks(self) -> Clocks:
        s = self.serf
        return Clocks(s.clock.time() - 1, s.event_clock.time() - 1, s.query_clock.time() - 1)

    def restore_clocks(self, clocks: Clocks) -> None:
        """Never let the clocks go back past a snapshot; older queries are not replayed.

        May be called before ``run`` (applied when the core starts)."""
        if self.core is None:
            self._restore = clocks
            return
        s = self.core
        s.clock.witness(clocks.member)
        s.event_clock.witness(clocks.event)
        s.query_clock.witness(clocks.query)
        s.query_min_time = max(s.query_min_time, clocks.query + 1)

    # --- internals ----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Carry out everything the core asked for, hand deliveries up, wake the timer."""
        core = self.core
        if core is None:
            return
        for eff in core.take_effects():
            if isinstance(eff, SendPacket):
                if self.udp is not None:
                    self.udp.send(eff.addr, eff.data)
            elif isinstance(eff, StreamRequest) and self._nursery is not None:
                self._nursery.start_soon(self._stream_out, eff)
        deliveries = core.take_deliveries()
        if self.on_delivery is not None:
            for d in deliveries:
                try:
                    self.on_delivery(d)
                except Exception:  # the layer above must not kill gossip
                    log.exception("delivery handler failed")
        self._wake.set()

    async def _udp_loop(self) -> None:
        assert self.udp is not None and self.core is not None
        core = self.core
        while True:
            batch = await self.udp.receive_batch()
            now = trio.current_time()
            for data, src in batch:
                try:
                    core.receive_packet(now, src, data)
                except DecodeError as exc:
                    log.debug("dropped packet from %s:%d: %s", src[0], src[1], exc)
            self._flush()

    async def _timer_loop(self) -> None:
        assert self.core is not None
        core = self.core
        while True:
            self._wake = trio.Event()
            delay = core.next_deadline() - trio.current_time()
            if delay > 0:
                with trio.move_on_after(delay if math.isfinite(delay) else 3600):
                    await self._wake.wait()
                if trio.current_time() < core.next_deadline():
                    continue
            core.tick(trio.current_time())
            self._flush()
            await trio.sleep(0)

    async def _serve_stream(self, stream: trio.SocketStream, peer: Addr) -> None:
        core = self.serf
        async with stream:
            try:
                with trio.fail_after(self.gcfg.tcp_timeout):
                    msg = await read_message(stream, core.ml.parser())
                    log.debug("stream from %s:%d: %s", peer[0], peer[1], msg.kind.name)
                    reply = core.handle_stream(trio.current_time(), peer, msg)
                    self._flush()
                    if reply is not None:
                        await stream.send_all(reply)
            except (DecodeError, OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                self.stream_errors += 1
                core.ml.metrics.decode_errors += isinstance(exc, DecodeError)
                log.debug("stream from %s:%d failed: %s", peer[0], peer[1], exc)

    async def _stream_out(self, req: StreamRequest) -> None:
        core = self.serf
        parser = core.ml.parser() if req.expect_reply else None
        reply = await exchange(req.addr, req.data, parser, self.gcfg.tcp_timeout)
        log.debug("stream to %s:%d (%s): %s", req.addr[0], req.addr[1],
                  "exchange" if req.expect_reply else "one-way",
                  "no reply" if reply is None else f"reply {reply.kind.name}")
        if req.expect_reply:
            core.stream_reply(trio.current_time(), req.token, reply)
            self._flush()
