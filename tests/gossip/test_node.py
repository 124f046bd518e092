"""gossip.node's public interface (what the agent uses) and the join-address parser, over real
loopback sockets: two nodes join, an event goes across, and the stats snapshot counts it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio

import gossip
from gossip import GossipNode, NodeStats, UserEvent, parse_join_address
from tests.agent.helpers import random_subnet


@pytest.mark.parametrize(("text", "want"), [
    ("10.0.0.1", ("10.0.0.1", 7946)),
    ("10.0.0.1:8301", ("10.0.0.1", 8301)),
    ("host.example", ("host.example", 7946)),
    ("[::1]:8301", ("::1", 8301)),
    ("[::1]", ("::1", 7946)),
    ("::1", ("::1", 7946)),
])
def test_join_address_forms(text: str, want: tuple[str, int]) -> None:
    assert parse_join_address(text, 7946) == want


@pytest.mark.parametrize(("text", "why"), [
    ("", "invalid address"), ("a b", "invalid address"), (":80", "invalid address"),
    ("[::1", "invalid address"), ("[::1]x", "invalid address"), ("[]:80", "invalid address"),
    ("h:0", "invalid port"), ("h:65536", "invalid port"), ("h:x", "invalid port"),
    ("[::1]:", "invalid port"),
])
def test_bad_join_addresses_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_join_address(text, 7946)


def test_key_decoding_has_one_owner() -> None:
    assert gossip.decode_b64_key(gossip.b64(b"k" * 16)) == b"k" * 16
    with pytest.raises(ValueError, match="illegal base64 data"):
        gossip.decode_b64_key("not base64!")
    assert gossip.USER_EVENT_SIZE_HARD_LIMIT == 9216


async def test_stats_snapshot_and_public_operations(autojump_clock: Any) -> None:
    net = random_subnet()
    got: list[UserEvent] = []
    a = GossipNode("a", (f"{net}.1", 0))
    b = GossipNode("b", (f"{net}.2", 0),
                   on_delivery=lambda d: got.append(d) if isinstance(d, UserEvent) else None)
    assert not a.running
    with pytest.raises(RuntimeError):
        a.stats()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        assert a.running and a.local_address == (f"{net}.1", a.port)
        before = a.stats()
        assert isinstance(before, NodeStats) and before.events_fired == 0
        assert await b.join([a.local_address]) == 1
        a.user_event("deploy", b"v1")
        with trio.fail_after(10):
            while not got:
                await trio.sleep(0.05)
        after = a.stats()
        assert after.events_fired == 1 and after.event_clock > before.event_clock
        assert after.push_pulls >= 1 or b.stats().push_pulls >= 1
        # b may have the event from its own catch-up push-pull before a's first datagram
        # (seen once in CI: packets_out 0 > 0): wait, boundedly, for a's gossip or probe
        with trio.fail_after(10):
            while a.stats().packets_out <= before.packets_out:
                await trio.sleep(0.05)
        with pytest.raises(dataclasses.FrozenInstanceError):
            after.events_fired = 2  # type: ignore[misc]
        nursery.cancel_scope.cancel()
    assert [e.name for e in got] == ["deploy"]
