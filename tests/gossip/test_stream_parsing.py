"""The stream parser reads a push-pull in time linear in its size (issue 13, item 3): each
node state is decoded once however the stream is chunked; bad or oversized input is a
DecodeError."""

from __future__ import annotations

import pytest

from gossip import wire
from gossip.crypto import Keyring
from gossip.errors import DecodeError
from gossip.state import State
from gossip.wire import stream as wire_stream

VSN = bytes([1, 5, 2, 2, 5, 5])


def flood(n: int) -> bytes:
    return wire.encode_push_pull(wire.PushPull(False, tuple(
        wire.PushNodeState(f"fake-{i}", bytes([10, 9, i // 256 % 256, i % 256]), 7946, b"",
                           1, State.ALIVE, VSN) for i in range(n)), b"user-state"))


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 1400, 65536])
def test_each_node_state_is_decoded_once_whatever_the_chunking(size: int) -> None:
    n = 20_000 if size >= 1400 else 300
    data = flood(n)
    wire_stream._node_state_memo.cache_clear()
    parser = wire.StreamParser()
    parts = chunked(data, size)
    for part in parts[:-1]:
        assert parser.feed(part) is None
    msg = parser.feed(parts[-1])
    assert msg is not None and msg.push_pull is not None
    assert len(msg.push_pull.nodes) == n and msg.push_pull.user_state == b"user-state"
    info = wire_stream._node_state_memo.cache_info()
    assert info.hits + info.misses == n  # re-parsing per chunk made this ~n * chunks / 2


def test_compressed_and_encrypted_streams_parse_in_chunks() -> None:
    kr = Keyring([bytes(range(16))])
    plain = flood(500)
    for data, parser in ((wire.compress_message(plain), wire.StreamParser()),
                         (kr.encrypt_stream(plain), wire.StreamParser(kr.decrypt_stream, True))):
        parts = chunked(data, 333)
        assert all(parser.feed(p) is None for p in parts[:-1])
        msg = parser.feed(parts[-1])
        assert msg is not None and msg.push_pull is not None
        assert len(msg.push_pull.nodes) == 500


@pytest.mark.parametrize("data", [
    bytes([wire.MsgType.PUSH_PULL]) + wire.packb({"Nodes": 1 << 31, "UserStateLen": 0}),
    bytes([wire.MsgType.PUSH_PULL]) + wire.packb({"Nodes": 2_000_000, "UserStateLen": 0}),
    bytes([wire.MsgType.PUSH_PULL]) + wire.packb({"Nodes": 1, "UserStateLen": -1}),
    bytes([wire.MsgType.PUSH_PULL]) + wire.packb({"Nodes": 1, "UserStateLen": 0}) + b"\x01",
    bytes([wire.MsgType.USER]) + wire.packb({"UserMsgLen": 1 << 40}),
    bytes([wire.MsgType.PING]) + wire.packb({"SeqNo": 1 << 32, "Node": "x"}),
    bytes([wire.MsgType.ALIVE]) + wire.packb({}),
    bytes([wire.MsgType.PUSH_PULL]) + wire.packb({"Nodes": 1, "UserStateLen": 0}) + wire.packb(
        {"Name": "x", "Addr": b"\x01\x02\x03\x04", "Port": 1, "Incarnation": 1, "State": 4}),
    bytes([wire.MsgType.PUSH_PULL]) + wire.packb({"Nodes": 1, "UserStateLen": 0}) + wire.packb(
        {"Name": "x", "Addr": b"\x01\x02\x03\x04", "Port": 65536, "Incarnation": 1}),
    bytes([wire.MsgType.PUSH_PULL]) + wire.packb({"Nodes": 1, "UserStateLen": 0}) + wire.packb(
        {"Name": "x", "Addr": b"\x01\x02\x03\x04", "Port": 1, "Incarnation": 1 << 32}),
])
def test_out_of_range_stream_headers_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        wire.StreamParser().feed(data)


def test_a_stream_past_the_size_limit_is_refused() -> None:
    parser = wire.StreamParser()
    head = bytes([wire.MsgType.USER]) + wire.packb({"UserMsgLen": wire.MAX_STREAM_BYTES})
    assert parser.feed(head) is None
    chunk = bytes(1 << 20)
    with pytest.raises(DecodeError):
        for _ in range(wire.MAX_STREAM_BYTES // len(chunk) + 2):
            parser.feed(chunk)
