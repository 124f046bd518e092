"""Fuzzing the decoders: random bytes and mutated valid packets/streams never raise anything
but ``DecodeError`` from the codec, the stream parser, or the Memberlist and Serf cores."""

from __future__ import annotations

import os
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip import wire
from gossip.crypto import Keyring
from gossip.errors import DecodeError
from gossip.membership import Memberlist
from gossip.serf import Serf, SerfMsg
from gossip.state import State
from gossip.wire import (
    Ack,
    Alive,
    Dead,
    IndirectPingReq,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
)

GOLDEN = Path(__file__).parents[1] / "golden"
VSN = bytes([1, 5, 2, 2, 5, 5])
IP = bytes([10, 0, 0, 2])
FUZZ = settings(max_examples=int(os.environ.get("RUMOR_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _serf_msgs() -> list[bytes]:
    p = wire.packb
    return [
        bytes([SerfMsg.JOIN]) + p({"LTime": 3, "Node": "b"}),
        bytes([SerfMsg.LEAVE]) + p({"LTime": 4, "Node": "b", "Prune": True}),
        bytes([SerfMsg.USER_EVENT]) + p({"LTime": 5, "Name": "ev", "Payload": b"xyz",
                                         "CC": False}),
        bytes([SerfMsg.QUERY]) + p({"LTime": 2, "ID": 9, "Addr": IP, "Port": 7946,
                                    "SourceNode": "b", "Filters": [], "Flags": 1,
                                    "RelayFactor": 0, "Timeout": 10**9, "Name": "q",
                                    "Payload": b""}),
        bytes([SerfMsg.QUERY_RESPONSE]) + p({"LTime": 2, "ID": 9, "From": "b", "Flags": 1,
                                             "Payload": None}),
    ]


def _serf_state() -> bytes:
    return bytes([SerfMsg.PUSH_PULL]) + wire.packb({
        "LTime": 7, "StatusLTimes": {"a": 1, "b": 3}, "LeftMembers": ["c"], "EventLTime": 9,
        "Events": [{"LTime": 4, "Events": [{"Name": "e", "Payload": b"p"}]}, None],
        "QueryLTime": 2})


def _messages() -> list[bytes]:
    msgs = [wire.encode(m) for m in (
        Ping(1, "a", IP, 7946, "b"), Ping(2, ""), Ack(1), Ack(3, b"\x01x"), Nack(4),
        IndirectPingReq(5, IP, 7946, "a", True, IP, 7946, "b"),
        Suspect(1, "a", "b"), Suspect(2, "b", "c"), Alive(1, "b", IP, 7946, b"\xff\x80", VSN),
        Alive(2, "a", IP, 7946, b"", VSN), Dead(1, "b", "b"), Dead(1, "c", "b"))]
    return msgs + [b"\x08" + m for m in _serf_msgs()]


def _packets() -> list[bytes]:
    msgs = _messages()
    compound = wire.make_compound(msgs)
    out = msgs + [compound, wire.add_crc(compound), wire.compress_message(compound),
                  wire.add_crc(wire.compress_message(compound)),
                  wire.make_compound([msgs[0], wire.compress_message(msgs[6])])]
    for path in sorted(GOLDEN.glob("serf_udp_plain_*.bin")):
        out.append(path.read_bytes())
    return out


def _streams() -> list[bytes]:
    pp = PushPull(True, (PushNodeState("b", IP, 7946, b"\xff\x80", 2, State.ALIVE, VSN),
                         PushNodeState("c", IP, 7000, b"", 1, State.DEAD, VSN)),
                  _serf_state())
    raw = wire.encode_push_pull(pp)
    out = [raw, wire.compress_message(raw), wire.encode(Ping(3, "a")), wire.encode(Ack(3)),
           wire.encode_user_stream(b"\x03" + _serf_msgs()[2][1:])]
    for name in ("serf_tcp_plain_ping.bin", "serf_tcp_plain_pushpull_reply.bin"):
        out.append((GOLDEN / name).read_bytes())
    return out


KEYRING = Keyring([b"k" * 32])
PACKETS = _packets()
PACKETS += [KEYRING.encrypt_packet(p) for p in PACKETS[-4:]]
STREAMS = _streams()


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:
            data[i] = draw(st.integers(0, 255))
        elif op == 2:
            del data[i:i + draw(st.integers(1, 8))]
        elif op == 3:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == 4:
            data = data[:i]
        else:
            data[i:i + 1] = bytes([draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCC,
                                                          0xCD, 0xCE, 0xCF, 0xD9, 0xDA, 0xDB,
                                                          0xDC, 0xDD, 0xDE, 0xDF, 0xFF]))])
    return bytes(data)


any_packet = st.one_of(st.binary(max_size=300), mutated(PACKETS))
any_stream = st.one_of(st.binary(max_size=300), mutated(STREAMS))


def _core() -> Serf:
    s = Serf("a", ("10.0.0.1", 7946), rng=random.Random(1), now=0.0)
    s.ml.merge_remote_state(0.0, PushPull(False, (
        PushNodeState("b", IP, 7946, b"\xff\x80", 1, State.ALIVE, VSN),
        PushNodeState("c", bytes([10, 0, 0, 3]), 7946, b"\xff\x80", 1, State.ALIVE, VSN)),
        b""))
    s.take_effects()
    return s


@FUZZ
@given(any_packet)
def test_decode_packet(data: bytes) -> None:
    try:
        wire.decode_packet(data)
    except DecodeError:
        pass


@FUZZ
@given(any_stream, st.integers(1, 64))
def test_stream_parser(data: bytes, chunk: int) -> None:
    parser = wire.StreamParser()
    try:
        for i in range(0, len(data), chunk):
            if parser.feed(data[i:i + chunk]) is not None:
                break
        wire.parse_stream(data)
    except DecodeError:
        pass


@FUZZ
@given(st.lists(any_packet, min_size=1, max_size=4))
def test_serf_and_memberlist_receive_packet(packets: list[bytes]) -> None:
    s = _core()
    ml = Memberlist(s.gcfg, "z", ("10.0.0.9", 7946), rng=random.Random(2), now=0.0)
    lax = Memberlist(s.gcfg.with_(verify_incoming=False), "y", ("10.0.0.8", 7946),
                     rng=random.Random(3), now=0.0, keyring=KEYRING)
    for t, data in enumerate(packets):
        for core in (s, ml, lax):
            try:
                core.receive_packet(float(t), ("10.0.0.2", 7946), data)
            except DecodeError:
                pass
            core.tick(float(t) + 0.5)
            core.take_effects()


@FUZZ
@given(any_stream)
def test_serf_handle_stream(data: bytes) -> None:
    s = _core()
    try:
        msg = wire.parse_stream(data)
    except DecodeError:
        return
    try:
        s.handle_stream(0.0, ("10.0.0.2", 7946), msg)
    except DecodeError:
        pass
    try:
        s.stream_reply(0.0, 1, msg)
    except DecodeError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(_serf_msgs() + [_serf_state()])))
def test_serf_messages_and_state(data: bytes) -> None:
    s = _core()
    for call in (lambda: s.notify_msg(0.0, data),
                 lambda: s.merge_remote_state(0.0, data, True),
                 lambda: s.merge_remote_state(0.0, data, False)):
        try:
            call()
        except DecodeError:
            pass
    s.local_state(False)  # whatever got in can still be sent out
