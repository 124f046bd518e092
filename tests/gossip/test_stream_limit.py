"""Inbound gossip TCP streams are capped (issue 13, item 3), over real loopback sockets:
connections past the cap are closed at once and counted, and a stream that never completes
is cut at ``tcp_timeout``, after which normal push-pulls get through again."""

from __future__ import annotations

import trio

from gossip.config import GossipConfig
from gossip.node import GossipNode
from tests.agent.helpers import random_subnet


async def test_streams_past_the_cap_are_refused_and_idle_ones_time_out() -> None:
    net = random_subnet()
    cfg = GossipConfig(max_inbound_streams=2, tcp_timeout=2.0)
    a = GossipNode("a", (f"{net}.1", 0), gossip=cfg)
    b = GossipNode("b", (f"{net}.2", 0), gossip=cfg)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port_a = await nursery.start(a.run)
            await nursery.start(b.run)
            idle = [await trio.open_tcp_stream(f"{net}.1", port_a) for _ in range(2)]
            for s in idle:
                await s.send_all(b"\x06")  # a push-pull that never completes
            await trio.sleep(0.2)
            assert a._stream_limit.active == 2
            third = await trio.open_tcp_stream(f"{net}.1", port_a)
            with trio.fail_after(1):  # closed at once, long before tcp_timeout
                assert await third.receive_some(10) == b""
            assert a._stream_limit.refused == 1
            await third.aclose()
            with trio.fail_after(cfg.tcp_timeout + 2):
                while a._stream_limit.active:
                    await trio.sleep(0.05)
            assert await b.join([(f"{net}.1", port_a)]) == 1
            for s in idle:
                await s.aclose()
            nursery.cancel_scope.cancel()
