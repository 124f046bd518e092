"""memberlist messages: the type byte, one frozen dataclass per message, and their codec.

One message = ``[type byte][msgpack body]``; bodies are msgpack maps keyed by Go field names in
declaration order (see :mod:`gossip.wire.fields` for the msgpack dialect).  Decoders are
memoised (gossip delivers the same bytes many times; messages are immutable) and raise
:class:`gossip.errors.DecodeError` and nothing else on bad input.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from gossip.errors import DecodeError
from gossip.wire.fields import f_bool, f_bytes, f_int, f_str, nil_if_empty, packb, unpack_map


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
        return MsgType.ACK, {"SeqNo": msg.seq_no, "Payload": nil_if_empty(msg.payload)}
    if isinstance(msg, Nack):
        return MsgType.NACK, {"SeqNo": msg.seq_no}
    if isinstance(msg, Suspect):
        return MsgType.SUSPECT, {"Incarnation": msg.incarnation, "Node": msg.node,
                                 "From": msg.sender}
    if isinstance(msg, Alive):
        return MsgType.ALIVE, {"Incarnation": msg.incarnation, "Node": msg.node,
                               "Addr": msg.addr, "Port": msg.port,
                               "Meta": nil_if_empty(msg.meta), "Vsn": nil_if_empty(msg.vsn)}
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


# Received bytes are memoised only up to this size: gossip repeats small messages (alives,
# suspects, deads: ~100 bytes) many times, while a hostile peer could fill a memo with large
# unique ones (a 64 KiB body per entry); larger ones are decoded every time.
MEMO_MAX_BYTES = 512


def decode_body(t: int, body: bytes) -> Message:
    """Decode one message body.  Memoised up to :data:`MEMO_MAX_BYTES`: gossip delivers the
    same bytes many times, and messages are immutable (a DecodeError is not cached and is
    raised again)."""
    if len(body) <= MEMO_MAX_BYTES:
        return _decode_body_memo(t, body)
    return _decode_body(t, body)


@functools.lru_cache(maxsize=8192)
def _decode_body_memo(t: int, body: bytes) -> Message:
    return _decode_body(t, body)


def _decode_body(t: int, body: bytes) -> Message:
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
