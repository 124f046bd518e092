"""Regression tests for bugs the agent suite found in gossip/ and agent/http (now fixed)."""

from __future__ import annotations

import re
from typing import Any

import trio

from gossip.node import GossipNode
from tests.agent.helpers import free_host, in_process_agent, random_subnet


async def test_lone_gossip_node_leaves_without_waiting(autojump_clock: Any) -> None:
    node = GossipNode("alone", (f"{random_subnet()}.1", 0))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        t0 = trio.current_time()
        await node.leave()
        elapsed = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    # alone, there is nobody to tell: no 5 s broadcast timeout, no propagate delay
    assert elapsed < 0.5


async def test_huge_fire_body_413_names_a_limit() -> None:
    async with in_process_agent(free_host(ports=()), "huge") as a:
        r = await a.client.put("/v1/event/fire/x", content=b"z" * 70_000)
        assert r.status_code == 413
        assert re.search(r"\d+ bytes", r.text), r.text
        assert len(a.agent.store) == 0
