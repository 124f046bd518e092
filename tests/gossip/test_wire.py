"""memberlist wire codec: exact bytes, round trips, framing (compound, CRC, compress), streams
(incremental parsing), addresses, and the golden captures from a real serf 0.9.4 agent."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip import wire
from gossip.crypto import Keyring, decode_key
from gossip.errors import DecodeError
from gossip.state import State
from gossip.wire import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPingReq,
    MsgType,
    Nack,
    PacketStats,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)

GOLDEN = Path(__file__).parents[1] / "golden"
VSN = bytes([1, 5, 2, 2, 5, 5])


def s(text: str) -> bytes:
    """msgpack fixstr of ``text`` (old spec: < 32 bytes)."""
    raw = text.encode()
    assert len(raw) < 32
    return bytes([0xA0 | len(raw)]) + raw


# --- exact bytes ------------------------------------------------------------------------------


def test_ping_bytes_match_go() -> None:
    """protocol.md §1.2: byte-identical to what Go's codec writes."""
    ping = Ping(1, "n2", bytes([127, 0, 0, 1]), 7946, "n1")
    want = (b"\x00\x85" + s("SeqNo") + b"\x01" + s("Node") + s("n2") + s("SourceAddr")
            + b"\xa4\x7f\x00\x00\x01" + s("SourcePort") + b"\xcd\x1f\x0a" + s("SourceNode")
            + s("n1"))
    assert wire.encode(ping) == want
    assert wire.decode_message(want) == ping


def test_ack_with_no_payload_is_nil_and_vsn_is_a_raw_string() -> None:
    assert wire.encode(Ack(7)) == b"\x02\x82" + s("SeqNo") + b"\x07" + s("Payload") + b"\xc0"
    alive = wire.encode(Alive(3, "a", b"\x0a\x00\x00\x01", 7946, b"", VSN))
    assert s("Meta") + b"\xc0" in alive  # nil slice, as Go writes an empty []byte
    assert s("Vsn") + b"\xa6\x01\x05\x02\x02\x05\x05" in alive  # []uint8 as a str, not array


def test_long_strings_use_str16_never_str8_or_bin() -> None:
    name = "x" * 40
    out = wire.encode(Alive(1, name, b"\x01\x02\x03\x04", 1, b"m" * 40, VSN))
    assert b"\xda\x00\x28" + name.encode() in out
    assert b"\xda\x00\x28" + b"m" * 40 in out
    assert b"\xd9" not in out and b"\xc4" not in out


def test_go_style_decoding_is_lenient() -> None:
    """Go peers may send byte fields as arrays of uint8, nil for empty, extra keys."""
    body = msgpack.packb({"Incarnation": 2, "Node": "b", "Addr": [10, 0, 0, 2], "Port": 1,
                          "Meta": None, "Vsn": [1, 5, 2, 2, 5, 5], "Extra": "ignored"},
                         use_bin_type=True)
    assert wire.decode_message(b"\x04" + body) == Alive(2, "b", b"\x0a\x00\x00\x02", 1, b"",
                                                         VSN)


# --- round trips ------------------------------------------------------------------------------

MESSAGES = [
    Ping(1, "n2", b"\x7f\x00\x00\x01", 7946, "n1"),
    Ping(0xFFFFFFFF, ""),
    IndirectPingReq(9, b"\x0a\x00\x00\x05", 7946, "t", True, b"\x0a\x00\x00\x01", 7946, "me"),
    IndirectPingReq(9, b"\x0a\x00\x00\x05", 7946, "t"),
    Ack(5), Ack(5, b"\x01coord"), Nack(77),
    Suspect(4, "x", "y"), Dead(4, "x", "x"), Dead(0, "x", "z"),
    Alive(1, "nø", b"\x00" * 16, 65535, b"\xff\x80", VSN),
    ErrResp("boom"), UserMsg(b"\x03payload"), UserMsg(b""),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_type_round_trips(msg: wire.Message) -> None:
    data = wire.encode(msg)
    assert data[0] == {Ping: 0, IndirectPingReq: 1, Ack: 2, Suspect: 3, Alive: 4, Dead: 5,
                       UserMsg: 8, Nack: 11, ErrResp: 13}[type(msg)]
    assert wire.decode_message(data) == msg
    assert wire.decode_packet(data) == [msg]


names = st.text(max_size=40)
u32 = st.integers(0, 2**32 - 1)


@given(u32, names, st.binary(max_size=16), st.integers(0, 65535), st.binary(max_size=600),
       st.binary(max_size=6))
def test_alive_round_trips(inc: int, node: str, addr: bytes, port: int, meta: bytes,
                           vsn: bytes) -> None:
    msg = Alive(inc, node, addr, port, meta, vsn)
    assert wire.decode_message(wire.encode(msg)) == msg
    assert wire.encode_alive(inc, node, addr, port, meta, vsn) == wire.encode(msg)


@given(u32, names, names)
def test_suspect_and_dead_round_trip(inc: int, node: str, sender: str) -> None:
    for msg in (Suspect(inc, node, sender), Dead(inc, node, sender)):
        assert wire.decode_message(wire.encode(msg)) == msg


def test_out_of_range_fields_are_decode_errors() -> None:
    for body in ({"SeqNo": -1}, {"SeqNo": 2**32}, {"SeqNo": "1"}, {"SeqNo": True},
                 {"SeqNo": 1, "Node": 5}, {"SeqNo": 1, "SourcePort": 70000}):
        with pytest.raises(DecodeError):
            wire.decode_message(b"\x00" + msgpack.packb(body))
    with pytest.raises(DecodeError):
        wire.decode_message(b"\x00" + msgpack.packb([1, 2]))  # not a map
    with pytest.raises(DecodeError):
        wire.decode_message(b"\x05\x81\xa4Node\xa2\xff\xfe")  # not UTF-8
    with pytest.raises(DecodeError):
        wire.decode_message(b"\x63\x80")  # unknown type
    with pytest.raises(DecodeError):
        wire.decode_message(b"")


# --- packets: compound, CRC, compress ---------------------------------------------------------


def test_compound_layout_and_round_trip() -> None:
    parts = [wire.encode(m) for m in MESSAGES[:6]]
    packet = wire.make_compound(parts)
    assert packet[:2] == bytes([MsgType.COMPOUND, 6])
    assert struct.unpack_from(">6H", packet, 2) == tuple(len(p) for p in parts)
    assert packet[14:] == b"".join(parts)
    assert wire.decode_packet(packet) == MESSAGES[:6]


def test_compound_limits() -> None:
    with pytest.raises(ValueError):
        wire.make_compound([])
    with pytest.raises(ValueError):
        wire.make_compound([b"\x02\x80"] * 256)
    with pytest.raises(ValueError):
        wire.make_compound([b"\x08" + b"x" * 70000])
    assert len(wire.decode_packet(wire.make_compound([wire.encode(Nack(1))] * 255))) == 255


def test_truncated_compound_keeps_the_whole_parts() -> None:
    parts = [wire.encode(Ack(1)), wire.encode(Ack(2)), wire.encode(Ack(3))]
    packet = wire.make_compound(parts)
    stats = PacketStats()
    assert wire.decode_packet(packet[:-3], stats) == [Ack(1), Ack(2)]
    assert stats.truncated_parts == 1
    with pytest.raises(DecodeError):
        wire.decode_packet(packet[:5])  # the length table itself is cut
    with pytest.raises(DecodeError):
        wire.decode_packet(b"\x07")


def test_compound_with_a_bad_or_empty_part_is_rejected() -> None:
    with pytest.raises(DecodeError):
        wire.decode_packet(wire.make_compound([wire.encode(Ack(1)), b"\x00\xc1"]))
    with pytest.raises(DecodeError):
        wire.decode_packet(b"\x07\x02\x00\x00\x00\x02\x02\x80")


def test_crc_good_and_bad() -> None:
    inner = wire.make_compound([wire.encode(Ack(1)), wire.encode(Suspect(1, "a", "b"))])
    packet = wire.add_crc(inner)
    assert packet[0] == MsgType.HAS_CRC and len(packet) == len(inner) + 5
    assert wire.decode_packet(packet) == [Ack(1), Suspect(1, "a", "b")]
    bad = bytearray(packet)
    bad[-1] ^= 1
    stats = PacketStats()
    with pytest.raises(DecodeError, match="CRC"):
        wire.decode_packet(bytes(bad), stats)
    assert stats.crc_mismatch == 1
    with pytest.raises(DecodeError):
        wire.decode_packet(packet[:4])


def test_compress_wrapper_and_nesting() -> None:
    inner = wire.make_compound([wire.encode(Alive(1, f"node{i}", b"\x0a\x00\x00\x01", 7946,
                                                  b"", VSN)) for i in range(10)])
    packet = wire.compress_message(inner)
    assert packet[0] == MsgType.COMPRESS and len(packet) < len(inner)
    body = msgpack.unpackb(packet[1:], raw=True)
    assert set(body) == {b"Algo", b"Buf"} and body[b"Algo"] == 0
    assert len(wire.decode_packet(packet)) == 10
    assert len(wire.decode_packet(wire.add_crc(packet))) == 10  # crc > compress > compound
    nested = wire.make_compound([wire.encode(Ack(9)), packet])  # compress inside compound
    assert len(wire.decode_packet(nested)) == 11
    with pytest.raises(DecodeError):
        wire.decode_packet(b"\x09" + msgpack.packb({"Algo": 1, "Buf": b"x"}))
    with pytest.raises(DecodeError):
        wire.decode_packet(b"\x09" + msgpack.packb({"Algo": 0, "Buf": b"\xff\xff\xff"}))


def test_nesting_is_bounded() -> None:
    packet = wire.encode(Ack(1))
    for _ in range(6):
        packet = wire.add_crc(packet)
    with pytest.raises(DecodeError, match="deeply"):
        wire.decode_packet(packet)


# --- addresses --------------------------------------------------------------------------------


def test_ipv4_mapped_and_plain_addresses() -> None:
    mapped = bytes(10) + b"\xff\xff" + bytes([192, 168, 1, 9])
    assert wire.ip_from_bytes(mapped) == "192.168.1.9"
    assert wire.ip_from_bytes(bytes([10, 0, 0, 1])) == "10.0.0.1"
    assert wire.ip_from_bytes(bytes(15) + b"\x01") == "::1"
    assert wire.ip_to_bytes("10.0.0.1") == bytes([10, 0, 0, 1])
    assert wire.ip_to_bytes("::1") == bytes(15) + b"\x01"
    for bad in (b"", b"\x01\x02\x03", bytes(5), bytes(17)):
        with pytest.raises(DecodeError):
            wire.ip_from_bytes(bad)


# --- streams ------------------------------------------------------------------------------------


def _push_pull(n: int, user: bytes = b"\x02user-state") -> PushPull:
    nodes = tuple(PushNodeState(f"node-{i}", bytes([10, 0, i // 250, i % 250 + 1]), 7946,
                                b"\xff\x80", i + 1, i % 4, VSN) for i in range(n))
    return PushPull(True, nodes, user)


def test_push_pull_round_trip_and_layout() -> None:
    pp = _push_pull(5)
    data = wire.encode_push_pull(pp)
    assert data[0] == MsgType.PUSH_PULL
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(data[1:])
    assert unpacker.unpack() == {b"Nodes": 5, b"UserStateLen": 11, b"Join": True}
    first = unpacker.unpack()
    assert list(first) == [b"Name", b"Addr", b"Port", b"Meta", b"Incarnation", b"State",
                           b"Vsn"]
    msg = wire.parse_stream(data)
    assert msg.kind == MsgType.PUSH_PULL and msg.push_pull == pp
    states = [wire.encode_node_state(n.name, n.addr, n.port, n.meta, n.incarnation, n.state,
                                     n.vsn) for n in pp.nodes]
    assert wire.encode_push_pull_parts(True, states, pp.user_state) == data
    empty = PushPull(False, (), b"")
    assert wire.parse_stream(wire.encode_push_pull(empty)).push_pull == empty


def test_stream_parser_fed_byte_by_byte() -> None:
    pp = _push_pull(3)
    for data, want in ((wire.encode_push_pull(pp), pp),
                       (wire.compress_message(wire.encode_push_pull(pp)), pp)):
        parser = wire.StreamParser()
        for i in range(len(data) - 1):
            assert parser.feed(data[i:i + 1]) is None, i
        msg = parser.feed(data[-1:])
        assert msg is not None and msg.push_pull == want
    ping = wire.encode(Ping(3, "me"))
    parser = wire.StreamParser()
    assert [parser.feed(bytes([b])) for b in ping][-1] == \
        wire.StreamMessage(MsgType.PING, message=Ping(3, "me"))


def test_stream_parser_big_push_pull_in_chunks() -> None:
    pp = _push_pull(300, user=bytes(range(256)) * 100)
    data = wire.encode_push_pull(pp)
    parser = wire.StreamParser()
    results = [parser.feed(data[i:i + 1000]) for i in range(0, len(data), 1000)]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] is not None and results[-1].push_pull == pp


def test_user_stream_ack_and_err() -> None:
    msg = wire.parse_stream(wire.encode_user_stream(b"\x03event"))
    assert msg == wire.StreamMessage(MsgType.USER, message=UserMsg(b"\x03event"))
    assert wire.parse_stream(wire.encode(Ack(4))).message == Ack(4)
    assert wire.parse_stream(wire.encode(ErrResp("no"))).message == ErrResp("no")
    with pytest.raises(DecodeError):
        wire.parse_stream(wire.encode_user_stream(b"abc")[:-1])  # incomplete
    with pytest.raises(DecodeError):
        wire.parse_stream(wire.encode(Suspect(1, "a", "b")))  # not a stream message


def test_encrypted_streams() -> None:
    kr = Keyring([b"k" * 32])
    data = kr.encrypt_stream(wire.encode_push_pull(_push_pull(4)))
    assert data[0] == MsgType.ENCRYPT
    with pytest.raises(DecodeError, match="not configured"):
        wire.parse_stream(data)
    assert wire.parse_stream(data, kr.decrypt_stream).push_pull == _push_pull(4)
    parser = wire.StreamParser(kr.decrypt_stream, require_encryption=True)
    assert [parser.feed(data[i:i + 7]) for i in range(0, len(data), 7)][-1] is not None
    with pytest.raises(DecodeError, match="not encrypted"):
        wire.parse_stream(wire.encode(Ack(1)), kr.decrypt_stream, require_encryption=True)


def test_stream_garbage() -> None:
    for bad in (b"\x06\xc1", b"\x06\x93\x01\x02\x03", b"\x06" + msgpack.packb(
            {"Nodes": 1, "UserStateLen": 0, "Join": False}) + b"\x01",
            b"\x06" + msgpack.packb({"Nodes": -1}), b"\x63", b"\x0a\x7f\xff\xff\xff"):
        with pytest.raises(DecodeError):
            wire.StreamParser(decrypt=lambda h, b: b).feed(bad)


# --- golden captures from serf 0.9.4 ------------------------------------------------------

_LAYER_NAMES = {"alive": Alive, "user": UserMsg, "ping": Ping, "pushPull": None}


def _golden() -> tuple[dict[str, dict[str, object]], Keyring]:
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    key = decode_key((GOLDEN / manifest["key_file"]).read_text().strip())
    return manifest, Keyring([key])


def test_golden_manifest_is_present() -> None:
    manifest, _ = _golden()
    assert len(manifest["files"]) >= 10  # type: ignore[arg-type]


def test_golden_udp_packets_decode_to_the_listed_messages() -> None:
    manifest, kr = _golden()
    seen = 0
    for name, info in manifest["files"].items():  # type: ignore[attr-defined]
        if info["transport"] != "udp":
            continue
        data = (GOLDEN / name).read_bytes()
        if info["case"] == "encrypted":
            with pytest.raises(DecodeError):
                wire.decode_packet(data)
            data = kr.decrypt_packet(data)
        stats = PacketStats()
        msgs = wire.decode_packet(data, stats)
        listed = info["layers"].rsplit("[", 1)[1].rstrip("]").split(",")
        assert [type(m) for m in msgs] == [_LAYER_NAMES[x] for x in listed], name
        assert ("crc>" in info["layers"]) == (data[0] == MsgType.HAS_CRC)
        assert stats == PacketStats()
        for m in msgs:
            if isinstance(m, Ping):
                assert m.node == "golden-py" and m.source_node == "serf1"
            if isinstance(m, UserMsg):
                assert m.payload[0] in (0, 1, 3)  # serf leave/join intents, user events
        seen += 1
    assert seen >= 6


def test_golden_tcp_streams_parse() -> None:
    manifest, kr = _golden()
    for name, info in manifest["files"].items():  # type: ignore[attr-defined]
        if info["transport"] != "tcp":
            continue
        data = (GOLDEN / name).read_bytes()
        dec = kr.decrypt_stream if info["case"] == "encrypted" else None
        msg = wire.parse_stream(data, dec)
        if "ping" in name:
            assert isinstance(msg.message, Ping) and msg.message.node == "golden-py"
            continue
        pp = msg.push_pull
        assert pp is not None
        assert pp.join == name.endswith("join.bin")
        serf1 = [n for n in pp.nodes if n.name == "serf1"]
        assert len(serf1) == 1 and serf1[0].addr == bytes([127, 0, 0, 2])
        assert serf1[0].state == State.ALIVE and serf1[0].vsn[:3] == bytes([1, 5, 2])
        assert serf1[0].meta[0] == 0xFF  # Serf tags
        assert pp.user_state[0] == 2  # Serf messagePushPull
        # incremental feeding finds the same end
        parser = wire.StreamParser(dec)
        step = max(1, len(data) // 50)
        got = [parser.feed(data[i:i + step]) for i in range(0, len(data), step)]
        assert got[-1] == msg and all(g is None for g in got[:-1])


def test_large_received_messages_are_not_memoised() -> None:
    """Decoding memoises repeated small messages; large unique ones from a hostile peer must
    not fill the memos (each would keep up to 64 KiB alive)."""
    from gossip.wire import messages, packet

    small = wire.encode(UserMsg(b"\x03small"))
    before = len(packet._PARTS), messages._decode_body_memo.cache_info().currsize
    for i in range(50):
        big = wire.encode(UserMsg(b"\x03" + i.to_bytes(4, "big") * 2000))  # 8 KB, unique
        assert wire.decode_packet(wire.make_compound([big, small]))[0] == UserMsg(big[1:])
        assert wire.decode_packet(big) == [UserMsg(big[1:])]
    assert len(packet._PARTS) <= before[0] + 1  # only the small part was added
    assert messages._decode_body_memo.cache_info().currsize <= before[1] + 1
    assert small in packet._PARTS


def test_large_received_node_states_are_not_memoised() -> None:
    """Push-pull node states are memoised like the messages above, and likewise only small
    ones: a hostile peer's large unique states (a big Meta) must not stay alive in the memo."""
    from gossip.wire import stream

    def state(name: str, meta: bytes) -> PushNodeState:
        return PushNodeState(name, bytes([10, 0, 0, 1]), 7946, meta, 1, State.ALIVE, VSN)

    small = state("small", b"")
    before = stream._node_state_memo.cache_info()
    for i in range(50):
        big = state(f"big-{i}", i.to_bytes(4, "big") * 2000)  # 8 KB, unique
        pp = PushPull(False, (big, small), b"")
        assert wire.parse_stream(wire.encode_push_pull(pp)).push_pull == pp
    after = stream._node_state_memo.cache_info()
    assert after.currsize <= before.currsize + 1  # only the small state was added
    assert after.hits >= before.hits + 49  # and it is served from the memo
