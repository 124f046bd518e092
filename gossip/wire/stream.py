"""TCP streams: push-pull state exchange, fallback ping, reliable user messages.

A stream has no length prefix, so :class:`StreamParser` reads one incrementally and tells when
a buffer holds a complete request (the peer never half-closes).  Decoders raise
:class:`gossip.errors.DecodeError` and nothing else on bad input.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gossip.errors import DecodeError
from gossip.state import State
from gossip.wire.fields import f_bool, f_bytes, f_int, f_str, nil_if_empty, packb, unpack_map
from gossip.wire.messages import (
    MEMO_MAX_BYTES,
    Message,
    MsgType,
    PushNodeState,
    PushPull,
    UserMsg,
    decode_body,
)
from gossip.wire.packet import decode_compressed

MAX_STREAM_BYTES = 20 * 1024 * 1024  # memberlist maxPushStateBytes


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
    return packb({"Name": name, "Addr": addr, "Port": port, "Meta": nil_if_empty(meta),
                  "Incarnation": incarnation, "State": int(state), "Vsn": nil_if_empty(vsn)})


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
            # one node state per pass; the loop is _next(skip=True) inlined (a 1,000-member
            # push-pull has 1,000 of them)
            nodes, count, skip, node_state = self.nodes, self.count, self.unpacker.skip, _node_state
            while len(nodes) < count:
                at = self.at
                if at < 0:
                    at = self.at = 1 + tell()
                try:
                    skip()
                except msgpack.OutOfData:
                    return None
                except Exception as exc:
                    raise DecodeError(f"push node state: bad msgpack: {exc}") from None
                nodes.append(node_state(bytes(data[at:1 + tell()])))
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
        return StreamMessage(t, message=decode_body(t, bytes(data[1:1 + tell()])))


def _parse_plain(buf: bytes) -> StreamMessage | None:
    """Parse an unencrypted, uncompressed stream body; None if ``buf`` is not complete yet."""
    return _Plain().feed(buf)


def _node_state(raw: bytes) -> PushNodeState:
    """One msgpack ``pushNodeState``, memoised on its bytes up to :data:`MEMO_MAX_BYTES`
    (peers repeat unchanged states; larger ones, e.g. with a big Meta, are decoded every time
    so a hostile peer cannot keep them alive in the memo)."""
    if len(raw) <= MEMO_MAX_BYTES:
        return _node_state_memo(raw)
    return _decode_node_state(raw)


@functools.lru_cache(maxsize=65536)
def _node_state_memo(raw: bytes) -> PushNodeState:
    return _decode_node_state(raw)


def _decode_node_state(raw: bytes) -> PushNodeState:
    w = "push node state"
    m = unpack_map(raw, w)
    if f_int(m, b"State", w, bits=8) > State.LEFT:
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
        return _complete(decode_compressed(bytes(self.data[1:end]), MAX_STREAM_BYTES))


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
        plain = decode_compressed(plain[1:], MAX_STREAM_BYTES)
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
