"""Serf query messages on the wire (serf 0.9.4 ``serf/messages.go``), sans-IO.

* a query is ``[4] + msgpack messageQuery{LTime, ID, Addr, Port, SourceNode, Filters, Flags,
  RelayFactor, Timeout (ns), Name, Payload}``; an answer or ack is ``[5] + msgpack
  messageQueryResponse{LTime, ID, From, Flags, Payload}`` (flag 1 = ack; query flag 2 = do not
  rebroadcast);
* filters are ``[0] + msgpack [names]`` or ``[1] + msgpack {Tag, Expr}``;
* key queries carry ``[7] + {Key}`` and are answered ``[8] + {Result, Message, Keys,
  PrimaryKey}``; ``_serf_conflict`` is answered ``[6] + Member`` (nil if unknown);
* a relayed answer is ``[9] + msgpack relayHeader{DestAddr: UDPAddr{IP, Port, Zone},
  DestName} + the answer``;
* a struct is a map whose keys are the Go field names **sorted by name** (what serf 0.9.4's
  codec writes: checked against live bytes in tests/interop/test_serf_queries.py, and the
  same order shows in tests/golden); nil slices are msgpack nil.

Decoders raise :class:`~gossip.errors.DecodeError` and nothing else, range-checking every
number (uint8/16/32/64 and int64 fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gossip import wire
from gossip.errors import DecodeError

QUERY, QUERY_RESPONSE, CONFLICT_RESPONSE, KEY_REQUEST, KEY_RESPONSE, RELAY = 4, 5, 6, 7, 8, 9
FLAG_ACK, FLAG_NO_BROADCAST = 1, 2
FILTER_NODE, FILTER_TAG = 0, 1
MAX_FILTERS = 64
MAX_LIST_KEYS = 4096

_INT64 = 1 << 63


def _struct(fields: dict[str, Any]) -> dict[str, Any]:
    """A Go struct as its codec writes it: fields sorted by name."""
    return dict(sorted(fields.items()))


def _pack_struct(fields: dict[str, Any]) -> bytes:
    return wire.packb(_struct(fields))



@dataclass(frozen=True)
class Query:
    ltime: int
    id: int
    addr: bytes
    port: int
    source_node: str
    filters: tuple[bytes, ...] = ()
    flags: int = 0
    relay_factor: int = 0
    timeout_ns: int = 0
    name: str = ""
    payload: bytes = b""


@dataclass(frozen=True)
class QueryResponse:
    ltime: int
    id: int
    source: str  # the From field
    flags: int = 0
    payload: bytes | None = None


def encode_query(q: Query) -> bytes:
    return bytes([QUERY]) + _pack_struct({
        "LTime": q.ltime, "ID": q.id, "Addr": q.addr, "Port": q.port,
        "SourceNode": q.source_node, "Filters": list(q.filters) or None, "Flags": q.flags,
        "RelayFactor": q.relay_factor, "Timeout": q.timeout_ns, "Name": q.name,
        "Payload": q.payload})


def _f_int64(m: dict[bytes, Any], key: bytes, what: str) -> int:
    v = m.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not -_INT64 <= v < _INT64:
        raise DecodeError(f"{what}: field {key.decode()} is not an int64")
    return v


def decode_query(body: bytes) -> Query:
    """The msgpack body after the type byte; DecodeError on anything malformed."""
    w = "query"
    m = wire.unpack_map(body, w)
    raw_filters = m.get(b"Filters") or []
    if not isinstance(raw_filters, list) or len(raw_filters) > MAX_FILTERS:
        raise DecodeError(f"{w}: Filters is not a list of at most {MAX_FILTERS} entries")
    filters = tuple(wire.f_bytes({b"f": f}, b"f", w) for f in raw_filters)
    return Query(wire.f_int(m, b"LTime", w), wire.f_int(m, b"ID", w, bits=32),
                 wire.f_bytes(m, b"Addr", w), wire.f_int(m, b"Port", w, bits=16),
                 wire.f_str(m, b"SourceNode", w), filters, wire.f_int(m, b"Flags", w, bits=32),
                 wire.f_int(m, b"RelayFactor", w, bits=8), _f_int64(m, b"Timeout", w),
                 wire.f_str(m, b"Name", w), wire.f_bytes(m, b"Payload", w))


def encode_query_response(r: QueryResponse) -> bytes:
    return bytes([QUERY_RESPONSE]) + _pack_struct({
        "LTime": r.ltime, "ID": r.id, "From": r.source, "Flags": r.flags, "Payload": r.payload})


def decode_query_response(body: bytes) -> QueryResponse:
    w = "query response"
    m = wire.unpack_map(body, w)
    payload = None if m.get(b"Payload") is None else wire.f_bytes(m, b"Payload", w)
    return QueryResponse(wire.f_int(m, b"LTime", w), wire.f_int(m, b"ID", w, bits=32),
                         wire.f_str(m, b"From", w), wire.f_int(m, b"Flags", w, bits=32), payload)


def encode_relay(dest: tuple[str, int], dest_name: str, inner: bytes) -> bytes:
    """``[9] + msgpack relayHeader{DestAddr: UDPAddr{IP, Port, Zone}, DestName} + inner``."""
    return bytes([RELAY]) + _pack_struct({
        "DestAddr": _struct({"IP": wire.ip_to_bytes(dest[0]), "Port": dest[1], "Zone": ""}),
        "DestName": dest_name}) + inner


def decode_relay(msg: bytes) -> tuple[tuple[str, int], bytes]:
    """(destination, inner message) of a relay message; DecodeError if malformed."""
    import msgpack

    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(msg))
    unpacker.feed(msg[1:])
    try:
        header = unpacker.unpack()
    except Exception as exc:
        raise DecodeError(f"relay: bad header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get(b"DestAddr"), dict):
        raise DecodeError("relay: bad header")
    dest = header[b"DestAddr"]
    ip = wire.ip_from_bytes(wire.f_bytes(dest, b"IP", "relay"))
    port = wire.f_int(dest, b"Port", "relay", bits=16)
    inner = msg[1 + unpacker.tell():]
    if not port or not inner:
        raise DecodeError("relay: no destination port or no message")
    return (ip, port), inner


def encode_key_request(key: bytes) -> bytes:
    return bytes([KEY_REQUEST]) + wire.packb({"Key": key})


def decode_key_request(payload: bytes) -> bytes:
    if not payload:
        raise DecodeError("key request: empty payload")
    return wire.f_bytes(wire.unpack_map(payload[1:], "key request"), b"Key", "key request")


@dataclass(frozen=True)
class NodeKeyResponse:
    """serf ``nodeKeyResponse``: one node's answer to a key query."""

    result: bool = False
    message: str = ""
    keys: tuple[str, ...] | None = None
    primary_key: str = ""


def encode_key_response(r: NodeKeyResponse) -> bytes:
    return bytes([KEY_RESPONSE]) + _pack_struct({
        "Result": r.result, "Message": r.message,
        "Keys": None if r.keys is None else list(r.keys), "PrimaryKey": r.primary_key})


def decode_key_response(payload: bytes) -> NodeKeyResponse:
    w = "key response"
    if not payload or payload[0] != KEY_RESPONSE:
        raise DecodeError(f"{w}: wrong message type")
    m = wire.unpack_map(payload[1:], w)
    raw = m.get(b"Keys")
    if raw is not None and (not isinstance(raw, list) or len(raw) > MAX_LIST_KEYS):
        raise DecodeError(f"{w}: Keys is not a list")
    keys = None if raw is None else tuple(wire.f_str({b"k": k}, b"k", w) for k in raw)
    return NodeKeyResponse(wire.f_bool(m, b"Result", w), wire.f_str(m, b"Message", w), keys,
                           wire.f_str(m, b"PrimaryKey", w))


@dataclass(frozen=True)
class ConflictMember:
    """serf ``Member`` as carried in a ``_serf_conflict`` answer."""

    name: str
    addr: str
    port: int
    tags: Mapping[str, str] = field(default_factory=dict)
    status: int = 1
    vsn: bytes = b""


def encode_conflict_response(m: ConflictMember | None) -> bytes:
    if m is None:
        return bytes([CONFLICT_RESPONSE]) + wire.packb(None)
    vsn = list(m.vsn[:6]) + [0] * (6 - len(m.vsn[:6]))
    return bytes([CONFLICT_RESPONSE]) + _pack_struct({
        "Name": m.name, "Addr": wire.ip_to_bytes(m.addr), "Port": m.port, "Tags": dict(m.tags),
        "Status": m.status, "ProtocolMin": vsn[0], "ProtocolMax": vsn[1], "ProtocolCur": vsn[2],
        "DelegateMin": vsn[3], "DelegateMax": vsn[4], "DelegateCur": vsn[5]})


def decode_conflict_response(payload: bytes) -> ConflictMember | None:
    w = "conflict response"
    if not payload or payload[0] != CONFLICT_RESPONSE:
        raise DecodeError(f"{w}: wrong message type")
    if payload[1:] == b"\xc0":
        return None
    m = wire.unpack_map(payload[1:], w)
    return ConflictMember(wire.f_str(m, b"Name", w),
                          wire.ip_from_bytes(wire.f_bytes(m, b"Addr", w)),
                          wire.f_int(m, b"Port", w, bits=16), {},
                          wire.f_int(m, b"Status", w, bits=32))


def encode_node_filter(names: Sequence[str]) -> bytes:
    return bytes([FILTER_NODE]) + wire.packb(list(names))


def encode_tag_filter(tag: str, expr: str) -> bytes:
    return bytes([FILTER_TAG]) + _pack_struct({"Tag": tag, "Expr": expr})


def unpack_any(body: bytes, what: str) -> object:
    """One msgpack object (raw=True); DecodeError if it is not exactly that."""
    try:
        return msgpack.unpackb(body, raw=True, strict_map_key=False)
    except Exception as exc:
        raise DecodeError(f"{what}: bad msgpack: {exc}") from None
