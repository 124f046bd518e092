"""UDP framing: compound packets, the CRC header, LZW compression, and the send budget.

When sending, a packet's messages are joined into a compound, compressed, given a CRC header
(peers speaking protocol 5) and encrypted by the caller's keyring, in that order; receiving
undoes them recursively.  :func:`packet_budget` and :func:`gossiped_user_msg_limit` are the
one place that turns ``GossipConfig.udp_buffer_size`` into byte budgets.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass

from gossip import lzw
from gossip.errors import DecodeError
from gossip.wire.fields import f_bytes, f_int, packb, unpack_map
from gossip.wire.messages import MEMO_MAX_BYTES, Message, MsgType, _decode_body, decode_body

MAX_COMPOUND_PARTS = 255
COMPOUND_HEADER_OVERHEAD = 2  # [7][part count]
COMPOUND_OVERHEAD = 2  # per part: its uint16 length
USER_MSG_OVERHEAD = 1  # the [8] type byte of a delegate message
CRC_OVERHEAD = 5  # [12][crc32]: added for peers speaking protocol 5
ENCRYPTION_OVERHEAD = 29  # keyring: [version byte][12-byte nonce] ... [16-byte GCM tag]


def packet_budget(udp_buffer_size: int, encrypted: bool) -> int:
    """Bytes of compound parts (with their length fields) one datagram may carry."""
    b = udp_buffer_size - COMPOUND_HEADER_OVERHEAD
    return b - ENCRYPTION_OVERHEAD if encrypted else b


def gossiped_user_msg_limit(udp_buffer_size: int, encrypted: bool) -> int:
    """The largest delegate message (a Serf message without its [8]) that still fits one
    datagram as a compound part, CRC header included; a bigger one must go over TCP."""
    return packet_budget(udp_buffer_size, encrypted) - COMPOUND_OVERHEAD - USER_MSG_OVERHEAD \
        - CRC_OVERHEAD


_FRAMING = (MsgType.COMPOUND, MsgType.COMPRESS, MsgType.HAS_CRC)


class _Nested(Exception):
    """Raised by :func:`_decode_part` for a part that is itself framed (never memoised)."""


_PARTS: dict[bytes, Message] = {}  # memo of _decode_part (parts up to MEMO_MAX_BYTES), emptied
# when it reaches _PARTS_MAX: at most 8 MiB of keys
_PARTS_MAX = 16384


def _decode_part(part: bytes) -> Message:
    """One compound part ``[type][body]``, memoised on the whole part (one slice less per
    message than :func:`decode_body`: at 1,000 nodes a packet carries ~15 old alives).  A
    plain dict, looked up by the caller first: cheaper per hit than ``functools.lru_cache``,
    and a decoded message is immutable, so which entries survive does not matter."""
    msg = _PARTS.get(part)
    if msg is not None:
        return msg
    if not part:
        raise DecodeError("empty packet")
    if part[0] in _FRAMING:
        raise _Nested
    msg = _decode_body(part[0], part[1:])
    if len(part) <= MEMO_MAX_BYTES:  # a large part is decoded every time (memory bound)
        if len(_PARTS) >= _PARTS_MAX:
            _PARTS.clear()
        _PARTS[part] = msg
    return msg


_COMPOUND_HEADS = [struct.Struct(f">BB{n}H") for n in range(MAX_COMPOUND_PARTS + 1)]
_CRC_HEAD = struct.Struct(">BI")


def make_compound(parts: list[bytes]) -> bytes:
    """``[7][n][len uint16 BE]*n[part]*n``; at most 255 parts (older peers can't read more)."""
    n = len(parts)
    if not 0 < n <= MAX_COMPOUND_PARTS:
        raise ValueError(f"compound needs 1..{MAX_COMPOUND_PARTS} parts, got {n}")
    try:
        head = _COMPOUND_HEADS[n].pack(MsgType.COMPOUND, n, *map(len, parts))
    except struct.error:
        raise ValueError("compound part longer than 65535 bytes") from None
    return b"".join((head, *parts))


def add_crc(packet: bytes) -> bytes:
    return _CRC_HEAD.pack(MsgType.HAS_CRC, zlib.crc32(packet)) + packet


def compress_message(msg: bytes) -> bytes:
    """Wrap ``msg`` as ``[9][msgpack compress{Algo: 0, Buf: lzw(msg)}]``."""
    return bytes([MsgType.COMPRESS]) + packb({"Algo": 0, "Buf": lzw.compress(msg)})


def decode_compressed(body: bytes, max_output: int) -> bytes:
    m = unpack_map(body, "compress")
    algo = f_int(m, b"Algo", "compress", bits=8)
    if algo != 0:
        raise DecodeError(f"unknown compression algorithm {algo}")
    out = lzw.decompress(f_bytes(m, b"Buf", "compress"), max_output=max_output)
    if not out:
        raise DecodeError("empty compressed message")
    return out


@dataclass
class PacketStats:
    """What :func:`decode_packet` noticed that was not fatal (counted by the caller)."""

    truncated_parts: int = 0
    crc_mismatch: int = 0


def decode_packet(data: bytes, stats: PacketStats | None = None, depth: int = 0) -> list[Message]:
    """All messages in one (already decrypted) datagram, unwrapping CRC/compress/compound."""
    if not data:
        raise DecodeError("empty packet")
    if depth > 4:
        raise DecodeError("packet nested too deeply")
    t = data[0]
    if t == MsgType.HAS_CRC:
        if len(data) < 5:
            raise DecodeError("truncated CRC header")
        (want,) = struct.unpack_from(">I", data, 1)
        if zlib.crc32(data[5:]) != want:
            if stats is not None:
                stats.crc_mismatch += 1
            raise DecodeError("CRC mismatch")
        return decode_packet(data[5:], stats, depth + 1)
    if t == MsgType.COMPRESS:
        return decode_packet(decode_compressed(data[1:], 65536 * 4), stats, depth + 1)
    if t == MsgType.COMPOUND:
        if len(data) < 2:
            raise DecodeError("truncated compound header")
        n = data[1]
        off = 2 + 2 * n
        if len(data) < off:
            raise DecodeError("truncated compound length table")
        lengths = struct.unpack_from(f">{n}H", data, 2)
        if off + sum(lengths) <= len(data):  # fast path: whole, and (usually) no nesting
            ends = list(itertools.accumulate(lengths, initial=off))
            parts = [data[a:b] for a, b in itertools.pairwise(ends)]
            msgs = list(map(_PARTS.get, parts))
            if all(msgs):  # all seen before (most gossip is old news); a message is truthy
                return msgs  # type: ignore[return-value]
            try:
                return list(map(_decode_part, parts))
            except _Nested:
                pass
        out: list[Message] = []
        for ln in lengths:
            if off + ln > len(data):
                if stats is not None:
                    stats.truncated_parts += 1
                break
            part = data[off:off + ln]
            off += ln
            if part and part[0] not in _FRAMING:  # plain or user message: no recursion
                out.append(_decode_part(part))
            else:
                out.extend(decode_packet(part, stats, depth + 1))
        return out
    return [decode_body(t, data[1:])]


def decode_message(data: bytes) -> Message:
    """Exactly one plain message (no framing)."""
    if not data:
        raise DecodeError("empty message")
    return decode_body(data[0], data[1:])
