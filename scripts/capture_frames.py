"""memberlist framing as scripts/capture_serf.py meets it: reading one stream message off a
socket, peeling serf's layers off what it sent (encryption, CRC, compression, compound) to
name each capture's shape, and the frames we build ourselves (msgpack bodies, an ack).
Written against the raw format rather than gossip.wire, whose decoder the captures test;
gossip's crypto and LZW are used only to look inside.
"""

from __future__ import annotations

import socket
import struct
import zlib
from typing import Any

import msgpack

from gossip.crypto import Keyring
from gossip.lzw import decompress


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=False)  # type: ignore[no-any-return]


def recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"stream closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_stream(conn: socket.socket) -> bytes:
    """Read one memberlist stream message (encrypted or compressed) and return its raw bytes."""
    first = recv_exact(conn, 1)
    if first[0] == 10:
        header = first + recv_exact(conn, 4)
        (length,) = struct.unpack(">I", header[1:])
        return header + recv_exact(conn, length)
    if first[0] != 9:
        raise ValueError(f"expected a compressed or encrypted stream, got type {first[0]}")
    unpacker = msgpack.Unpacker(raw=True)
    raw = bytearray(first)
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("stream closed inside the compress{} object")
        raw += chunk
        unpacker.feed(chunk)
        try:
            unpacker.unpack()
        except msgpack.OutOfData:
            continue
        return bytes(raw)


MSG_NAMES = {0: "ping", 1: "indirectPing", 2: "ackResp", 3: "suspect", 4: "alive", 5: "dead",
             6: "pushPull", 7: "compound", 8: "user", 9: "compress", 10: "encrypt",
             11: "nackResp", 12: "hasCrc", 13: "err"}


def _unwrap_message(msg: bytes, layers: list[str], out: list[bytes]) -> None:
    """Peel compress/compound layers off one message; collect the inner messages."""
    kind = msg[0]
    if kind == 9:
        obj = msgpack.unpackb(msg[1:], raw=True)
        layers.append("compress")
        _unwrap_message(decompress(obj[b"Buf"]), layers, out)
    elif kind == 7:
        count = msg[1]
        lengths = struct.unpack_from(f">{count}H", msg, 2)
        offset = 2 + 2 * count
        layers.append(f"compound({count})")
        for length in lengths:
            out.append(msg[offset : offset + length])
            offset += length
    else:
        out.append(msg)


def unwrap_packet(data: bytes, keyring: Keyring | None) -> tuple[list[str], list[bytes]]:
    """Layers (outermost first) and inner messages of a UDP datagram from serf."""
    layers: list[str] = []
    if keyring:
        data = keyring.decrypt_packet(data)
        layers.append("encrypted(v1)")
    if data[0] == 12:
        (crc,) = struct.unpack_from(">I", data, 1)
        if zlib.crc32(data[5:]) != crc:
            raise ValueError("bad CRC from serf?")
        layers.append("crc")
        data = data[5:]
    out: list[bytes] = []
    _unwrap_message(data, layers, out)
    return layers, out


def unwrap_stream(raw: bytes, keyring: Keyring | None) -> tuple[list[str], bytes]:
    """Layers and the inner plaintext message of a whole TCP stream from serf."""
    layers: list[str] = []
    if raw[0] == 10:
        if keyring is None:
            raise ValueError("encrypted stream but no key")
        raw = keyring.decrypt_stream(raw[:5], raw[5:])
        layers.append("encrypted(v1)")
    if raw[0] == 9:
        obj = msgpack.unpackb(raw[1:], raw=True)
        layers.append("compress")
        raw = decompress(obj[b"Buf"])
    return layers, raw


def describe(layers: list[str], messages: list[bytes]) -> str:
    names = ",".join(MSG_NAMES.get(m[0], str(m[0])) if m else "?" for m in messages)
    return ">".join([*layers, f"[{names}]"])


def ack(seq_no: int) -> bytes:
    return b"\x02" + pack({"SeqNo": seq_no, "Payload": None})
