"""A member flood over real loopback sockets (issue 13, item 3): three gossip nodes, and an
outsider who sends each of them a push-pull stream listing 20,000 invented members plus
datagrams full of invented alives.  No invention is ever listed, an event still reaches
every node within 2 s, and the inventions are forgotten within the admission window."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

from gossip import wire
from gossip.config import GossipConfig
from gossip.node import GossipNode
from gossip.serf import UserEvent
from gossip.state import State
from tests.agent.helpers import random_subnet

VSN = bytes([1, 5, 2, 2, 5, 5])


def flood_stream(n: int) -> bytes:
    return wire.encode_push_pull(wire.PushPull(False, tuple(
        wire.PushNodeState(f"fake-{i}", bytes([10, 99, i // 256 % 256, i % 256]), 7946,
                           b"\xff\x80", 1, State.ALIVE, VSN) for i in range(n)), b""))


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = trio.current_time()
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.02)
        return trio.current_time() - start
    raise AssertionError(f"not within {timeout} s: {what}")


async def test_member_flood_over_real_sockets() -> None:
    net = random_subnet()
    cfg = GossipConfig()
    got: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}

    def recorder(name: str) -> Callable[[object], None]:
        def on(d: object) -> None:
            if isinstance(d, UserEvent):
                got[name].append(d.payload)
        return on

    nodes = {n: GossipNode(n, (f"{net}.{i + 1}", 0), gossip=cfg, on_delivery=recorder(n))
             for i, n in enumerate("abc")}
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            ports = {n: await nursery.start(node.run) for n, node in nodes.items()}
            addr = {n: (f"{net}.{i + 1}", ports[n]) for i, n in enumerate("abc")}
            assert await nodes["b"].join([addr["a"]]) == 1
            assert await nodes["c"].join([addr["a"]]) == 1
            await eventually(lambda: all(len(x._serf.ml.members) == 3 for x in nodes.values()),
                             10, "three members everywhere")

            blob = flood_stream(20_000)
            swarm = wire.make_compound([wire.encode(wire.Alive(
                1, f"swarm-{i}", bytes([10, 98, 0, i % 250 + 1]), 7946, b"", VSN))
                for i in range(250)])
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((f"{net}.200", 0))
            for n in "abc":
                stream = await trio.open_tcp_stream(*addr[n])
                await stream.send_all(blob)
                await stream.receive_some(1 << 20)  # the node answers with its own state
                await stream.aclose()
                for _ in range(20):
                    udp.sendto(swarm, addr[n])
            udp.close()

            def no_fakes() -> bool:
                return all(set(x._serf.ml.members) == {"a", "b", "c"} and
                           set(x._serf.members) == {"a", "b", "c"} for x in nodes.values())

            assert no_fakes()
            nodes["b"].user_event("deploy", b"after-flood")
            took = await eventually(lambda: all(b"after-flood" in v for v in got.values()), 2.0,
                                    "the event reached every node")
            assert took <= 2.0 and no_fakes()
            for x in nodes.values():
                assert x._serf.ml.admission.metrics.refused >= 20_000 - cfg.admit_per_message
            await eventually(lambda: all(len(x._serf.ml.admission) == 0 for x in nodes.values()),
                             cfg.admit_attempts * cfg.probe_interval + 5, "inventions forgotten")
            assert no_fakes()
            nursery.cancel_scope.cancel()
