"""gossip.crypto: memberlist AES-GCM framing, keyring rules, and real serf ciphertext."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.crypto import (
    MAX_STREAM_BLOB,
    Keyring,
    decode_key,
    encrypted_length,
    keygen,
    validate_key,
)
from gossip.errors import DecodeError
from gossip.lzw import decompress

GOLDEN = Path(__file__).parents[1] / "golden"
K16, K24, K32 = bytes(range(16)), bytes(range(100, 124)), bytes(range(200, 232))


def counter_nonces() -> Callable[[int], bytes]:
    state = {"n": 0}

    def source(size: int) -> bytes:
        state["n"] += 1
        return state["n"].to_bytes(size, "big")

    return source


# --- framing ---------------------------------------------------------------------------


def test_known_answer_gcm_layout() -> None:
    # NIST GCM test case 2 (AES-128, zero key, zero IV, one zero block):
    # ciphertext 0388dace60b6a392f328c2b971b2fe78, tag ab6e47d42cec13bdf53a67b21257bddf.
    ring = Keyring([bytes(16)], nonce_source=lambda n: bytes(n))
    blob = ring.encrypt_packet(bytes(16))
    assert blob == (
        b"\x01" + bytes(12)
        + bytes.fromhex("0388dace60b6a392f328c2b971b2fe78")
        + bytes.fromhex("ab6e47d42cec13bdf53a67b21257bddf")
    )
    assert ring.decrypt_packet(blob) == bytes(16)


@pytest.mark.parametrize("key", [K16, K24, K32])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1400])
def test_packet_round_trip_all_key_sizes(key: bytes, size: int) -> None:
    ring = Keyring([key])
    plain = bytes(i % 251 for i in range(size))
    blob = ring.encrypt_packet(plain)
    assert blob[0] == 1 and len(blob) == size + 29 == encrypted_length(1, size)
    assert ring.decrypt_packet(blob) == plain


def test_nonces_come_from_the_source_and_differ_by_default() -> None:
    ring = Keyring([K16], nonce_source=counter_nonces())
    a, b = ring.encrypt_packet(b"x"), ring.encrypt_packet(b"x")
    assert a[1:13] == (1).to_bytes(12, "big") and b[1:13] == (2).to_bytes(12, "big")
    real = Keyring([K16])
    assert real.encrypt_packet(b"x")[1:13] != real.encrypt_packet(b"x")[1:13]
    with pytest.raises(ValueError, match="nonce_source"):
        Keyring([K16], nonce_source=lambda n: b"short").encrypt_packet(b"x")


def test_stream_layout_and_round_trip() -> None:
    ring = Keyring([K32], nonce_source=counter_nonces())
    plain = b"\x06" + b"state" * 100
    stream = ring.encrypt_stream(plain)
    header, blob = stream[:5], stream[5:]
    assert header[0] == 10
    assert struct.unpack(">I", header[1:])[0] == len(blob) == len(plain) + 29
    assert Keyring.stream_blob_length(header) == len(blob)
    assert ring.decrypt_stream(header, blob) == plain
    # The 5-byte header is the associated data: the same blob does not open without it.
    with pytest.raises(DecodeError):
        ring.decrypt_packet(blob)
    # ...and a packet blob does not open as a stream.
    pkt = ring.encrypt_packet(plain)
    with pytest.raises(DecodeError):
        ring.decrypt_stream(b"\x0a" + struct.pack(">I", len(pkt)), pkt)


def test_stream_header_errors() -> None:
    ring = Keyring([K16])
    stream = ring.encrypt_stream(b"hello")
    header, blob = stream[:5], stream[5:]
    with pytest.raises(DecodeError, match="5 bytes starting with 10"):
        ring.decrypt_stream(b"\x09" + header[1:], blob)
    with pytest.raises(DecodeError, match="5 bytes starting with 10"):
        ring.decrypt_stream(header[:4], blob)
    with pytest.raises(DecodeError, match="header says"):
        ring.decrypt_stream(header, blob[:-1])
    with pytest.raises(DecodeError, match="larger than limit"):
        Keyring.stream_blob_length(b"\x0a" + struct.pack(">I", MAX_STREAM_BLOB + 1))


def test_wrong_key_and_secondary_keys() -> None:
    sender = Keyring([K16])
    blob = sender.encrypt_packet(b"payload")
    with pytest.raises(DecodeError, match="no installed key"):
        Keyring([K32]).decrypt_packet(blob)
    receiver = Keyring([K32, K24, K16])  # the sender's key is the third one tried
    assert receiver.decrypt_packet(blob) == b"payload"
    stream = sender.encrypt_stream(b"payload")
    assert receiver.decrypt_stream(stream[:5], stream[5:]) == b"payload"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64), st.data())
def test_any_tampering_is_rejected(plain: bytes, data: st.DataObject) -> None:
    ring = Keyring([K24])
    blob = bytearray(ring.encrypt_packet(plain))
    i = data.draw(st.integers(1, len(blob) - 1))  # byte 0 is the version, tested below
    blob[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(DecodeError):
        ring.decrypt_packet(bytes(blob))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_raises_only_decode_error(blob: bytes) -> None:
    ring = Keyring([K16])
    with pytest.raises(DecodeError):
        ring.decrypt_packet(blob)
    with pytest.raises(DecodeError):
        ring.decrypt_stream(b"\x0a" + struct.pack(">I", len(blob)), blob)


def test_short_empty_and_unknown_version() -> None:
    ring = Keyring([K16])
    with pytest.raises(DecodeError, match="empty"):
        ring.decrypt_packet(b"")
    with pytest.raises(DecodeError, match="too small"):
        ring.decrypt_packet(b"\x01" + bytes(27))  # one short of 1 + 12 + 16
    with pytest.raises(DecodeError, match="too small"):
        ring.decrypt_packet(b"\x00" + bytes(43))  # v0: 1 + 12 + one padded block + 16
    good = ring.encrypt_packet(b"abc")
    with pytest.raises(DecodeError, match="unsupported encryption version 2"):
        ring.decrypt_packet(b"\x02" + good[1:])
    with pytest.raises(ValueError, match="unsupported"):
        ring.encrypt_packet(b"abc", version=2)


# --- version 0 (PKCS7) ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 31, 100])
def test_version0_padding_round_trip(size: int) -> None:
    ring = Keyring([K16], nonce_source=counter_nonces())
    plain = bytes(range(size))
    blob = ring.encrypt_packet(plain, version=0)
    assert blob[0] == 0
    pad = 16 - size % 16
    assert len(blob) == 1 + 12 + size + pad + 16 == encrypted_length(0, size)
    # What is sealed is the plaintext plus `pad` bytes of value `pad` (1..16).
    inner = AESGCM(K16).decrypt(blob[1:13], blob[13:], None)
    assert inner == plain + bytes([pad]) * pad
    assert ring.decrypt_packet(blob) == plain
    stream = ring.encrypt_stream(plain, version=0)
    assert ring.decrypt_stream(stream[:5], stream[5:]) == plain


@pytest.mark.parametrize("sealed", [
    b"x" * 15 + b"\x00",  # pad byte 0
    b"abcd" * 4 + b"\x11" * 17,  # pad byte 17 > block size
    b"x" * 14 + b"\x02\x03",  # pad bytes differ
    b"x" * 30 + b"\x01\x02",
    b"",  # shorter than one padded block: rejected by the length check
])
def test_version0_bad_padding_is_rejected(sealed: bytes) -> None:
    nonce = bytes(12)
    blob = b"\x00" + nonce + AESGCM(K16).encrypt(nonce, sealed, None)
    ring = Keyring([K16])
    if len(blob) < encrypted_length(0, 0):
        with pytest.raises(DecodeError, match="too small"):
            ring.decrypt_packet(blob)
    else:
        with pytest.raises(DecodeError, match="padding"):
            ring.decrypt_packet(blob)


# --- keys and rotation ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"", bytes(8), bytes(15), bytes(17), bytes(31), bytes(33)])
def test_bad_key_sizes(bad: bytes) -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        validate_key(bad)
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        Keyring([bad])
    ring = Keyring([K16])
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        ring.install(bad)
    assert ring.keys == (K16,)


def test_key_must_be_bytes_and_ring_nonempty() -> None:
    with pytest.raises(ValueError, match="must be bytes"):
        validate_key("0123456789abcdef")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one key"):
        Keyring([])


def test_rotation_rules() -> None:
    ring = Keyring([K16, K24])
    assert ring.keys == (K16, K24) and ring.primary == K16
    ring.install(K32)
    ring.install(K24)  # already there: no-op
    assert ring.keys == (K16, K24, K32)
    old_blob = ring.encrypt_packet(b"old")
    ring.use(K32)
    assert ring.keys == (K32, K16, K24)
    new_blob = ring.encrypt_packet(b"new")
    assert Keyring([K32]).decrypt_packet(new_blob) == b"new"  # sent with the new primary
    assert ring.decrypt_packet(old_blob) == b"old"  # old key still accepted
    with pytest.raises(ValueError, match="primary"):
        ring.remove(K32)
    ring.remove(K16)
    ring.remove(K16)  # absent: no-op
    assert ring.keys == (K32, K24)
    with pytest.raises(DecodeError):
        ring.decrypt_packet(old_blob)
    with pytest.raises(ValueError, match="not in the keyring"):
        ring.use(K16)
    assert ring.keys == (K32, K24)


def test_keygen_and_decode_key() -> None:
    key = keygen()
    raw = decode_key(key)
    assert len(raw) == 32 and base64.b64encode(raw).decode() == key
    assert keygen() != key
    assert decode_key(base64.b64encode(K16).decode() + "\n") == K16
    with pytest.raises(ValueError, match="not valid base64"):
        decode_key("not base64!!")
    with pytest.raises(ValueError, match="16, 24 or 32 bytes.*after base64"):
        decode_key(base64.b64encode(bytes(20)).decode())


# --- real serf ciphertext ---------------------------------------------------------------


def _golden_ring() -> Keyring:
    return Keyring([decode_key((GOLDEN / "serf_encrypt.key").read_text())])


def test_golden_encrypted_pushpull_join() -> None:
    raw = (GOLDEN / "serf_tcp_encrypted_pushpull_join.bin").read_bytes()
    ring = _golden_ring()
    header = raw[:5]
    assert Keyring.stream_blob_length(header) == len(raw) - 5
    plain = ring.decrypt_stream(header, raw[5:])
    assert plain[0] == 9  # compress
    obj = msgpack.unpackb(plain[1:], raw=True)
    inner = decompress(obj[b"Buf"])
    assert inner[0] == 6  # pushPull
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(inner[1:])
    header_obj = unpacker.unpack()
    assert header_obj[b"Join"] is True and header_obj[b"Nodes"] == 1
    node = unpacker.unpack()
    assert node[b"Name"] == b"serf1" and node[b"Vsn"] == bytes([1, 5, 2, 2, 5, 5])
    # Not decryptable with another key, nor without the header as AAD.
    with pytest.raises(DecodeError):
        Keyring([K32]).decrypt_stream(header, raw[5:])
    with pytest.raises(DecodeError):
        ring.decrypt_packet(raw[5:])


def test_golden_encrypted_udp_packets() -> None:
    ring = _golden_ring()
    files = json.loads((GOLDEN / "manifest.json").read_text())["files"]
    first_byte = {"crc": 12, "compress": 9}
    checked = 0
    for name, info in files.items():
        if info["case"] != "encrypted" or info["transport"] != "udp":
            continue
        raw = (GOLDEN / name).read_bytes()
        assert raw[0] == 1  # serf speaks memberlist protocol 2 => encryption version 1
        plain = ring.decrypt_packet(raw)
        assert len(plain) == len(raw) - 29
        layers = info["layers"].split(">")
        expected = first_byte.get(layers[1].split("(")[0])
        if expected is None:  # a bare message: compound(7) or ping(0)
            expected = 7 if layers[1].startswith("compound") else 0
        assert plain[0] == expected, name
        checked += 1
    assert checked >= 2
