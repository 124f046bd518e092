"""memberlist wire format (v0.2.2, as spoken by Serf 0.9.4): messages, packets, streams.

Owns the byte layout of everything a gossip node sends or receives:

* one message = ``[type byte][msgpack body]``; bodies are msgpack maps keyed by Go field names
  in declaration order, written in the *old* msgpack spec (strings and byte slices both in the
  raw/str family, never bin, never str8) because Go's zero-value ``MsgpackHandle`` reads and
  writes that;
* UDP framing: compound messages, the CRC header and LZW compression (applied in that order
  when sending, undone recursively when receiving); encryption is done by the caller's keyring;
* TCP streams: push-pull state exchange, fallback ping, reliable user messages; a stream has
  no length prefix, so :func:`parse_stream` tells whether a buffer holds a complete request.

Every decoder raises :class:`gossip.errors.DecodeError` and nothing else on bad input.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from gossip import lzw
from gossip.errors import DecodeError

MAX_COMPOUND_PARTS = 255
UDP_BUFFER_SIZE = 1400  # memberlist UDPBufferSize: the send budget for one datagram
COMPOUND_HEADER_OVERHEAD = 2
COMPOUND_OVERHEAD = 2  # per part: its uint16 length
USER_MSG_OVERHEAD = 1  # the [8] type byte of a delegate message
MAX_STREAM_BYTES = 20 * 1024 * 1024  # memberlist maxPushStateBytes


class MsgType(IntEnum):
    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13


class NodeState(IntEnum):
    """memberlist NodeStateType, as carried in push-pull node states."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


# --- addresses -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def ip_to_bytes(ip: str) -> bytes:
    """Dotted/colon IP text to the 4- or 16-byte form memberlist carries in ``[]byte`` fields."""
    return ipaddress.ip_address(ip).packed


@functools.lru_cache(maxsize=4096)
def ip_from_bytes(raw: bytes) -> str:
    """4- or 16-byte IP (IPv4-mapped IPv6 is unwrapped) to text; DecodeError otherwise."""
    if len(raw) == 4:
        return socket.inet_ntoa(raw)
    if len(raw) == 16:
        addr = ipaddress.IPv6Address(raw)
        mapped = addr.ipv4_mapped
        return str(mapped) if mapped is not None else str(addr)
    raise DecodeError(f"bad IP address length {len(raw)}")


# --- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    seq_no: int
    node: str
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class IndirectPingReq:
    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    seq_no: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Nack:
    seq_no: int


@dataclass(frozen=True, slots=True)
class Suspect:
    incarnation: int
    node: str
    sender: str  # Go field "From"


@dataclass(frozen=True, slots=True)
class Alive:
    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes
    vsn: bytes  # [pmin, pmax, pcur, dmin, dmax, dcur]


@dataclass(frozen=True, slots=True)
class Dead:
    incarnation: int
    node: str
    sender: str  # Go field "From"; == node means a graceful leave


@dataclass(frozen=True, slots=True)
class ErrResp:
    error: str


@dataclass(frozen=True, slots=True)
class UserMsg:
    """A delegate (Serf) message: the raw bytes after the [8] type byte."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PushNodeState:
    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: int
    vsn: bytes


@dataclass(frozen=True, slots=True)
class PushPull:
    join: bool
    nodes: tuple[PushNodeState, ...]
    user_state: bytes = b""


Message = Ping | IndirectPingReq | Ack | Nack | Suspect | Alive | Dead | ErrResp | UserMsg


# --- msgpack helpers ---------------------------------------------------------------------------

_packer_opts: dict[str, Any] = {"use_bin_type": False, "autoreset": True}
_packer = msgpack.Packer(**_packer_opts)


def packb(obj: Any) -> bytes:
    """Pack in the old msgpack spec (str family for text and bytes), as Go's codec expects."""
    out: bytes = _packer.pack(obj)
    return out


def unpack_map(body: bytes, what: str) -> dict[bytes, Any]:
    """Unpack one msgpack map (raw=True) that must span ``body`` exactly."""
    try:
        obj = msgpack.unpackb(body, raw=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types: normalise to ours
        raise DecodeError(f"{what}: bad msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{what}: expected a map")
    return obj


def f_int(m: dict[bytes, Any], key: bytes, what: str, default: int = 0, bits: int = 64) -> int:
    v = m.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= (1 << bits):
        raise DecodeError(f"{what}: field {key.decode()} is not a uint{bits}")
    return v


def f_str(m: dict[bytes, Any], key: bytes, what: str) -> str:
    v = m.get(key, b"")
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if not isinstance(v, bytes):
        raise DecodeError(f"{what}: field {key.decode()} is not a string")
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what}: field {key.decode()} is not UTF-8") from None


def f_bytes(m: dict[bytes, Any], key: bytes, what: str) -> bytes:
    v = m.get(key, b"")
    if v is None:
        return b""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, list) and all(isinstance(x, int) and 0 <= x < 256 for x in v):
        return bytes(v)  # Go also accepts an array of uint8
    raise DecodeError(f"{what}: field {key.decode()} is not bytes")


def f_bool(m: dict[bytes, Any], key: bytes, what: str) -> bool:
    v = m.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise DecodeError(f"{what}: field {key.decode()} is not a bool")
    return v


def _nil_if_empty(b: bytes) -> bytes | None:
    return b if b else None


# --- encoding ------------------------------------------------------------------------------------


def _with_source(d: dict[str, Any], msg: Ping | IndirectPingReq) -> dict[str, Any]:
    """Add the ``omitempty`` reply-to fields that ping and indirect ping share."""
    if msg.source_addr:
        d["SourceAddr"] = msg.source_addr
    if msg.source_port:
        d["SourcePort"] = msg.source_port
    if msg.source_node:
        d["SourceNode"] = msg.source_node
    return d


def _body(msg: Message) -> tuple[MsgType, dict[str, Any]]:
    if isinstance(msg, Ping):
        return MsgType.PING, _with_source({"SeqNo": msg.seq_no, "Node": msg.node}, msg)
    if isinstance(msg, IndirectPingReq):
        return MsgType.INDIRECT_PING, _with_source(
            {"SeqNo": msg.seq_no, "Target": msg.target, "Port": msg.port, "Node": msg.node,
             "Nack": msg.nack}, msg)
    if isinstance(msg, Ack):
        return MsgType.ACK, {"SeqNo": msg.seq_no, "Payload": _nil_if_empty(msg.payload)}
    if isinstance(msg, Nack):
        return MsgType.NACK, {"SeqNo": msg.seq_no}
    if isinstance(msg, Suspect):
        return MsgType.SUSPECT, {"Incarnation": msg.incarnation, "Node": msg.node,
                                 "From": msg.sender}
    if isinstance(msg, Alive):
        return MsgType.ALIVE, {"Incarnation": msg.incarnation, "Node": msg.node,
                               "Addr": msg.addr, "Port": msg.port,
                               "Meta": _nil_if_empty(msg.meta), "Vsn": _nil_if_empty(msg.vsn)}
    if isinstance(msg, Dead):
        return MsgType.DEAD, {"Incarnation": msg.incarnation, "Node": msg.node,
                              "From": msg.sender}
    if isinstance(msg, ErrResp):
        return MsgType.ERR, {"Error": msg.error}
    raise TypeError(f"not an encodable message: {msg!r}")


def encode(msg: Message) -> bytes:
    """One message as ``[type][msgpack body]`` (a user message as ``[8][raw]``)."""
    if isinstance(msg, UserMsg):
        return bytes([MsgType.USER]) + msg.payload
    t, d = _body(msg)
    return bytes([t]) + packb(d)


@functools.lru_cache(maxsize=65536)
def encode_alive(incarnation: int, node: str, addr: bytes, port: int, meta: bytes,
                 vsn: bytes) -> bytes:
    """``encode(Alive(...))``, memoised: every member re-broadcasts every alive it learns."""
    return encode(Alive(incarnation, node, addr, port, meta, vsn))


@functools.lru_cache(maxsize=8192)
def _decode_body(t: int, body: bytes) -> Message:
    """Decode one message body.  Memoised: gossip delivers the same bytes many times, and
    messages are immutable (a DecodeError is not cached and is raised again)."""
    if t == MsgType.USER:
        return UserMsg(body)
    name = MsgType(t).name.lower() if t in MsgType._value2member_map_ else str(t)
    if t == MsgType.PING:
        m = unpack_map(body, name)
        return Ping(f_int(m, b"SeqNo", name, bits=32), f_str(m, b"Node", name),
                    f_bytes(m, b"SourceAddr", name), f_int(m, b"SourcePort", name, bits=16),
                    f_str(m, b"SourceNode", name))
    if t == MsgType.INDIRECT_PING:
        m = unpack_map(body, name)
        return IndirectPingReq(f_int(m, b"SeqNo", name, bits=32), f_bytes(m, b"Target", name),
                               f_int(m, b"Port", name, bits=16), f_str(m, b"Node", name),
                               f_bool(m, b"Nack", name), f_bytes(m, b"SourceAddr", name),
                               f_int(m, b"SourcePort", name, bits=16),
                               f_str(m, b"SourceNode", name))
    if t == MsgType.ACK:
        m = unpack_map(body, name)
        return Ack(f_int(m, b"SeqNo", name, bits=32), f_bytes(m, b"Payload", name))
    if t == MsgType.NACK:
        m = unpack_map(body, name)
        return Nack(f_int(m, b"SeqNo", name, bits=32))
    if t == MsgType.SUSPECT:
        m = unpack_map(body, name)
        return Suspect(f_int(m, b"Incarnation", name, bits=32), f_str(m, b"Node", name),
                       f_str(m, b"From", name))
    if t == MsgType.ALIVE:
        m = unpack_map(body, name)
        return Alive(f_int(m, b"Incarnation", name, bits=32), f_str(m, b"Node", name),
                     f_bytes(m, b"Addr", name), f_int(m, b"Port", name, bits=16),
                     f_bytes(m, b"Meta", name), f_bytes(m, b"Vsn", name))
    if t == MsgType.DEAD:
        m = unpack_map(body, name)
        return Dead(f_int(m, b"Incarnation", name, bits=32), f_str(m, b"Node", name),
                    f_str(m, b"From", name))
    if t == MsgType.ERR:
        m = unpack_map(body, name)
        return ErrResp(f_str(m, b"Error", name))
    raise DecodeError(f"unknown or unexpected message type {t}")


_FRAMING = (MsgType.COMPOUND, MsgType.COMPRESS, MsgType.HAS_CRC)


class _Nested(Exception):
    """Raised by :func:`_decode_part` for a part that is itself framed (never memoised)."""


@functools.lru_cache(maxsize=65536)
def _decode_part(part: bytes) -> Message:
    """One compound part ``[type][body]``, memoised on the whole part (one slice less per
    message than :func:`_decode_body`: at 1,000 nodes a packet carries ~15 old alives)."""
    if not part:
        raise DecodeError("empty packet")
    if part[0] in _FRAMING:
        raise _Nested
    return _decode_body.__wrapped__(part[0], part[1:])


# --- UDP packets -----------------------------------------------------------------------------


def make_compound(parts: list[bytes]) -> bytes:
    """``[7][n][len uint16 BE]*n[part]*n``; at most 255 parts (older peers can't read more)."""
    n = len(parts)
    if not 0 < n <= MAX_COMPOUND_PARTS:
        raise ValueError(f"compound needs 1..{MAX_COMPOUND_PARTS} parts, got {n}")
    lengths = [len(p) for p in parts]
    if max(lengths) > 0xFFFF:
        raise ValueError("compound part longer than 65535 bytes")
    return b"".join((bytes((MsgType.COMPOUND, n)), struct.pack(f">{n}H", *lengths), *parts))


def add_crc(packet: bytes) -> bytes:
    return bytes([MsgType.HAS_CRC]) + struct.pack(">I", zlib.crc32(packet)) + packet


def compress_message(msg: bytes) -> bytes:
    """Wrap ``msg`` as ``[9][msgpack compress{Algo: 0, Buf: lzw(msg)}]``."""
    return bytes([MsgType.COMPRESS]) + packb({"Algo": 0, "Buf": lzw.compress(msg)})


def _decompress(body: bytes, max_output: int) -> bytes:
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
        return decode_packet(_decompress(data[1:], 65536 * 4), stats, depth + 1)
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
            try:
                return list(map(_decode_part, [data[a:b] for a, b in itertools.pairwise(ends)]))
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
    return [_decode_body(t, data[1:])]


def decode_message(data: bytes) -> Message:
    """Exactly one plain message (no framing)."""
    if not data:
        raise DecodeError("empty message")
    return _decode_body(data[0], data[1:])


# --- TCP streams -------------------------------------------------------------------------------


def encode_push_pull(pp: PushPull) -> bytes:
    return encode_push_pull_parts(
        pp.join, [encode_node_state(n.name, n.addr, n.port, n.meta, n.incarnation, n.state,
                                    n.vsn) for n in pp.nodes], pp.user_state)


def encode_push_pull_parts(join: bool, node_states: list[bytes], user_state: bytes) -> bytes:
    """A push-pull from already encoded node states (see :func:`encode_node_state`)."""
    head = packb({"Nodes": len(node_states), "UserStateLen": len(user_state), "Join": join})
    return b"".join((bytes([MsgType.PUSH_PULL]), head, *node_states, user_state))


@functools.lru_cache(maxsize=65536)
def encode_node_state(name: str, addr: bytes, port: int, meta: bytes, incarnation: int,
                      state: int, vsn: bytes) -> bytes:
    """One msgpack ``pushNodeState``.  Memoised: a push-pull repeats mostly unchanged states."""
    return packb({"Name": name, "Addr": addr, "Port": port, "Meta": _nil_if_empty(meta),
                  "Incarnation": incarnation, "State": int(state), "Vsn": _nil_if_empty(vsn)})


def encode_user_stream(payload: bytes) -> bytes:
    """A reliable (TCP) user message: ``[8][msgpack userMsgHeader][payload]``."""
    return bytes([MsgType.USER]) + packb({"UserMsgLen": len(payload)}) + payload


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One complete stream request or reply, after decryption and decompression."""

    kind: MsgType  # PUSH_PULL, PING, ACK, USER or ERR
    push_pull: PushPull | None = None
    message: Message | None = None


_STREAM_KINDS = (MsgType.PUSH_PULL, MsgType.USER, MsgType.PING, MsgType.ACK, MsgType.ERR)


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=MAX_STREAM_BYTES)


def _feed(unpacker: msgpack.Unpacker, data: bytes) -> None:
    try:
        unpacker.feed(data)
    except msgpack.BufferFull:
        raise DecodeError("stream too large") from None


class _Plain:
    """Incremental parser of one unencrypted, uncompressed stream body.

    Every byte is parsed once: msgpack's Unpacker resumes an object cut by a chunk boundary
    where it stopped, so a stream costs time linear in its size however it is chunked."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.unpacker = _unpacker()
        self.head: dict[bytes, Any] | None = None
        self.count = self.ulen = 0
        self.nodes: list[PushNodeState] = []
        self.at = -1  # offset of the node state being read (after the type byte)

    def feed(self, chunk: bytes) -> StreamMessage | None:
        if not self.data:
            if not chunk:
                return None
            if chunk[0] not in _STREAM_KINDS:
                raise DecodeError(f"unexpected stream message type {chunk[0]}")
        _feed(self.unpacker, chunk[1:] if not self.data else chunk)
        self.data += chunk
        return self._step(MsgType(self.data[0]))

    def _next(self, what: str, skip: bool = False) -> Any:
        try:
            if skip:
                self.unpacker.skip()
                return None
            return self.unpacker.unpack()
        except msgpack.OutOfData:
            raise
        except Exception as exc:
            raise DecodeError(f"{what}: bad msgpack: {exc}") from None

    def _header(self, what: str) -> dict[bytes, Any] | None:
        if self.head is None:
            try:
                head = self._next(what)
            except msgpack.OutOfData:
                return None
            if not isinstance(head, dict):
                raise DecodeError(f"{what}: expected a map")
            self.head = head
        return self.head

    def _step(self, t: MsgType) -> StreamMessage | None:
        data, tell = self.data, self.unpacker.tell
        if t == MsgType.PUSH_PULL:
            w = "push-pull header"
            if self.head is None:
                head = self._header(w)
                if head is None:
                    return None
                self.count = f_int(head, b"Nodes", w, bits=31)
                self.ulen = f_int(head, b"UserStateLen", w, bits=31)
                if self.count > 1_000_000 or self.ulen > MAX_STREAM_BYTES:
                    raise DecodeError("push-pull too large")
            while len(self.nodes) < self.count:
                if self.at < 0:
                    self.at = 1 + tell()
                try:
                    self._next("push node state", skip=True)
                except msgpack.OutOfData:
                    return None
                self.nodes.append(_node_state(bytes(data[self.at:1 + tell()])))
                self.at = -1
            start = 1 + tell()
            if len(data) - start < self.ulen:
                return None
            assert self.head is not None
            return StreamMessage(MsgType.PUSH_PULL, push_pull=PushPull(
                f_bool(self.head, b"Join", w), tuple(self.nodes),
                bytes(data[start:start + self.ulen])))
        if t == MsgType.USER:
            w = "user message header"
            if self.head is None:
                head = self._header(w)
                if head is None:
                    return None
                self.ulen = f_int(head, b"UserMsgLen", w, bits=31)
            start = 1 + tell()
            if len(data) - start < self.ulen:
                return None
            return StreamMessage(MsgType.USER,
                                 message=UserMsg(bytes(data[start:start + self.ulen])))
        if self._header(t.name.lower()) is None:  # PING, ACK or ERR: one map
            return None
        return StreamMessage(t, message=_decode_body(t, bytes(data[1:1 + tell()])))


def _parse_plain(buf: bytes) -> StreamMessage | None:
    """Parse an unencrypted, uncompressed stream body; None if ``buf`` is not complete yet."""
    return _Plain().feed(buf)


@functools.lru_cache(maxsize=65536)
def _node_state(raw: bytes) -> PushNodeState:
    """One msgpack ``pushNodeState``, memoised on its bytes (peers repeat unchanged states)."""
    w = "push node state"
    m = unpack_map(raw, w)
    if f_int(m, b"State", w, bits=8) > NodeState.LEFT:
        raise DecodeError(f"{w}: unknown state")
    return PushNodeState(
        f_str(m, b"Name", w), f_bytes(m, b"Addr", w), f_int(m, b"Port", w, bits=16),
        f_bytes(m, b"Meta", w), f_int(m, b"Incarnation", w, bits=32),
        f_int(m, b"State", w, bits=8), f_bytes(m, b"Vsn", w))


Decryptor = Callable[[bytes, bytes], bytes]  # (5-byte header, blob) -> plaintext


class _Compressed:
    """Incremental reader of ``[9][msgpack compress{Algo, Buf}]``, linear like :class:`_Plain`."""

    def __init__(self) -> None:
        self.unpacker = _unpacker()
        self.data = bytearray()

    def feed(self, chunk: bytes) -> StreamMessage | None:
        _feed(self.unpacker, chunk[1:] if not self.data else chunk)
        self.data += chunk
        try:
            self.unpacker.skip()
        except msgpack.OutOfData:
            return None
        except Exception as exc:
            raise DecodeError(f"compress: bad msgpack: {exc}") from None
        end = 1 + self.unpacker.tell()
        return _complete(_decompress(bytes(self.data[1:end]), MAX_STREAM_BYTES))


@dataclass
class StreamParser:
    """Incremental parser for one TCP exchange (the peer never half-closes: parse to the end).

    ``decrypt`` is the keyring's stream decryptor; ``require_encryption`` rejects plaintext
    streams (memberlist's GossipVerifyIncoming).  Feeding costs time linear in the bytes fed.
    """

    decrypt: Decryptor | None = None
    require_encryption: bool = False
    buf: bytearray = field(default_factory=bytearray)
    size: int = 0
    inner: _Plain | _Compressed | None = None

    def feed(self, data: bytes) -> StreamMessage | None:
        self.size += len(data)
        if self.size > MAX_STREAM_BYTES + 64:
            raise DecodeError("stream too large")
        if self.inner is not None:
            return self.inner.feed(data)
        self.buf += data
        buf = self.buf
        if not buf:
            return None
        if buf[0] == MsgType.ENCRYPT:
            if self.decrypt is None:
                raise DecodeError("remote state is encrypted and encryption is not configured")
            if len(buf) < 5:
                return None
            (ln,) = struct.unpack_from(">I", buf, 1)
            if ln > MAX_STREAM_BYTES:
                raise DecodeError("encrypted stream too large")
            if len(buf) < 5 + ln:
                return None
            return _complete(self.decrypt(bytes(buf[:5]), bytes(buf[5:5 + ln])))
        if self.require_encryption:
            raise DecodeError("encryption is configured but remote state is not encrypted")
        self.inner = _Compressed() if buf[0] == MsgType.COMPRESS else _Plain()
        first, self.buf = bytes(buf), bytearray()
        return self.inner.feed(first)


def _complete(plain: bytes) -> StreamMessage:
    """A decrypted or decompressed body must hold one whole message."""
    if plain and plain[0] == MsgType.COMPRESS:
        plain = _decompress(plain[1:], MAX_STREAM_BYTES)
    msg = _parse_plain(plain)
    if msg is None:
        raise DecodeError("truncated stream message")
    return msg


def parse_stream(data: bytes, decrypt: Decryptor | None = None,
                 require_encryption: bool = False) -> StreamMessage:
    """Parse a complete stream message in one go (tests, simulator)."""
    msg = StreamParser(decrypt, require_encryption).feed(data)
    if msg is None:
        raise DecodeError("truncated stream message")
    return msg
