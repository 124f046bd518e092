"""A seeded hostile peer for the simulator: well-formed gossip of every type, with boundary
numbers, unknown names and huge lists, injected into a :class:`tests.sim.cluster.SerfCluster`.

It has no core of its own: it writes datagrams and TCP requests straight into the simulated
network (from an address no honest node has), the way an outsider without the gossip key
could on an unencrypted cluster.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from gossip import wire
from gossip.config import Addr
from gossip.errors import DecodeError
from gossip.serf import SerfMsg
from gossip.state import State
from tests.sim.cluster import SerfCluster

BOUNDARY = (0, 1 << 31, (1 << 32) - 1, 1 << 63, (1 << 64) - 1)
U32 = (1 << 32) - 1
VSN = bytes([1, 5, 2, 2, 5, 5])
HOSTILE_ADDR: Addr = ("10.251.0.1", 7946)


def fake_members(n: int, prefix: str = "fake") -> tuple[wire.PushNodeState, ...]:
    """``n`` invented alive members at addresses nobody has."""
    return tuple(wire.PushNodeState(f"{prefix}-{i}", bytes([10, 252, i // 256 % 256, i % 256]),
                                    7946, b"\xff\x80", 1, State.ALIVE, VSN) for i in range(n))


def serf_msg(t: SerfMsg, **body: object) -> bytes:
    return bytes([wire.MsgType.USER, t]) + wire.packb(body)


class HostilePeer:
    def __init__(self, cluster: SerfCluster, seed: int, honest: list[str]) -> None:
        self.c = cluster
        self.rng = random.Random(seed)
        self.honest = honest
        self.sent: dict[str, int] = {}

    # --- values --------------------------------------------------------------------------

    def _num(self, bits: int, near: int = 0) -> int:
        """A boundary value that fits ``bits``, or one just past ``near`` (plausible)."""
        r = self.rng.random()
        if r < 0.3:
            return min(near + self.rng.randint(0, 50), (1 << bits) - 1)
        return min(self.rng.choice(BOUNDARY), (1 << bits) - 1)

    def _name(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(self.honest)
        return "" if r < 0.55 else f"ghost-{self.rng.randint(0, 10**6)}"

    def _ip(self) -> bytes:
        r = self.rng.random()
        if r < 0.3:
            return wire.ip_to_bytes(self.c.addr[self.rng.choice(self.honest)][0])
        return bytes([10, 253, self.rng.randint(0, 255), self.rng.randint(1, 254)])

    def _inc_of(self, name: str) -> int:
        """The incarnation honest nodes hold for ``name`` (a forgery they would believe)."""
        node = self.c.by_name.get(name)
        return node.ml.local.incarnation if node is not None else 0

    # --- messages of every type ------------------------------------------------------------

    def _memberlist_msg(self) -> tuple[str, bytes]:
        kind = self.rng.choice(["ping", "indirect", "ack", "nack", "suspect", "alive", "dead"])
        name = self._name()
        inc = self._num(32, self._inc_of(name))
        port = self.rng.choice([0, 1, 7946, 65535])
        msg: wire.Message
        if kind == "ping":
            msg = wire.Ping(self._num(32), name, self._ip(), port, self._name())
        elif kind == "indirect":
            msg = wire.IndirectPingReq(self._num(32), self._ip(), port, name,
                                       self.rng.random() < 0.5, self._ip(), port, self._name())
        elif kind == "ack":
            msg = wire.Ack(self._num(32), bytes(self.rng.randint(0, 100)))
        elif kind == "nack":
            msg = wire.Nack(self._num(32))
        elif kind == "suspect":
            msg = wire.Suspect(inc, name, self._name())
        elif kind == "alive":
            msg = wire.Alive(inc, name, self._ip(), port, b"\xff\x80", VSN)
        else:
            msg = wire.Dead(inc, name, self.rng.choice([name, self._name()]))
        return kind, wire.encode(msg)

    def _serf_msg(self) -> tuple[str, bytes]:
        kind = self.rng.choice(["event", "query", "leave", "join", "query_response"])
        node = self.c.by_name[self.honest[0]]
        if kind == "event":
            lt = self._num(64, node.event_clock.time())
            return kind, serf_msg(SerfMsg.USER_EVENT, LTime=lt, Name="evil",
                                  Payload=bytes(self.rng.randint(0, 400)), CC=False)
        if kind == "query":
            return kind, serf_msg(SerfMsg.QUERY, LTime=self._num(64, node.query_clock.time()),
                                  ID=self._num(32), Addr=self._ip(), Port=7946, Filters=[],
                                  Flags=self.rng.choice([0, 1, 2, 3, U32]),
                                  RelayFactor=self.rng.choice([0, 255]),
                                  Timeout=self.rng.choice([0, (1 << 63) - 1, -(1 << 63)]),
                                  Name="q", Payload=b"")
        lt = self._num(64, node.clock.time())
        if kind == "leave":
            return kind, serf_msg(SerfMsg.LEAVE, LTime=lt, Node=self._name(),
                                  Prune=self.rng.random() < 0.5)
        if kind == "join":
            return kind, serf_msg(SerfMsg.JOIN, LTime=lt, Node=self._name())
        return kind, serf_msg(SerfMsg.QUERY_RESPONSE, LTime=lt, ID=self._num(32), From="x",
                              Flags=1, Payload=b"")

    def _packet(self) -> tuple[str, bytes]:
        r = self.rng.random()
        if r < 0.45:
            return self._memberlist_msg()
        if r < 0.85:
            return self._serf_msg()
        parts = [(self._memberlist_msg() if self.rng.random() < 0.5 else self._serf_msg())[1]
                 for _ in range(self.rng.randint(2, 40))]
        alives = [wire.encode(wire.Alive(1, f"swarm-{self.rng.randint(0, 10**6)}",
                                         self._ip(), 7946, b"", VSN)) for _ in range(200)]
        return "compound", wire.make_compound((parts + alives)[:wire.MAX_COMPOUND_PARTS])

    def push_pull(self, fakes: int) -> bytes:
        """A push-pull listing ``fakes`` inventions, real names with boundary numbers and a
        Serf state full of boundary clocks."""
        real = tuple(wire.PushNodeState(n, self._ip(), 7946, b"\xff\x80",
                                        self._num(32, self._inc_of(n)),
                                        self.rng.choice(list(State)), VSN)
                     for n in self.honest[:5])
        status = {f"fake-{i}": self._num(64) for i in range(min(fakes, 5000))}
        status.update({n: self._num(64) for n in self.honest[:5]})
        state = bytes([SerfMsg.PUSH_PULL]) + wire.packb({
            "LTime": self._num(64), "StatusLTimes": status,
            "LeftMembers": [self.rng.choice(self.honest), "ghost"],
            "EventLTime": self._num(64),
            "Events": [{"LTime": self._num(64), "Events": [{"Name": "evil", "Payload": b""}]}],
            "QueryLTime": self._num(64)})
        return wire.encode_push_pull(wire.PushPull(self.rng.random() < 0.5,
                                                   fake_members(fakes) + real, state))

    # --- sending ----------------------------------------------------------------------------

    def send_packet(self, dst: str, data: bytes, kind: str = "raw") -> None:
        self.sent[kind] = self.sent.get(kind, 0) + 1
        sim, addr = self.c.sim, self.c.addr[dst]
        sim._deliver(HOSTILE_ADDR, addr, data)

    def send_stream(self, dst: str, data: bytes) -> None:
        """One inbound TCP request, handled the way a shell does (DecodeError: dropped)."""
        self.sent["stream"] = self.sent.get("stream", 0) + 1
        sim, addr = self.c.sim, self.c.addr[dst]
        try:
            sim.nodes[addr].handle_stream(sim.now, HOSTILE_ADDR, wire.parse_stream(data))
        except DecodeError:
            sim.decode_errors += 1
        sim.poke(addr)

    def attack(self, duration: float, rate: float, every: Callable[[], None] | None = None,
               fakes: int = 2000) -> None:
        """Send ``rate`` random packets per simulated second to random honest nodes, plus a
        push-pull of ``fakes`` inventions to each of them once a second."""
        end = self.c.sim.now + duration
        step = 1.0 / rate
        n = 0
        while self.c.sim.now < end:
            kind, data = self._packet()
            self.send_packet(self.rng.choice(self.honest), data, kind)
            n += 1
            if n % int(rate) == 0:
                blob = self.push_pull(fakes)
                for dst in self.honest:
                    self.send_stream(dst, blob)
            if every is not None:
                every()
            self.c.run(step)
