"""Serf's message codec: the message types, tags in node meta, intents and user events.

Serf messages travel as memberlist user messages ``[8][serf type][msgpack]``; tags live in
node meta as ``0xFF + msgpack(map)``.  Parsers are memoised (gossip repeats the same bytes)
and raise :class:`gossip.errors.DecodeError` and nothing else on bad input.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

import msgpack

from gossip import wire

TAG_MAGIC = 0xFF


class SerfMsg(IntEnum):
    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5


def encode_tags(tags: Mapping[str, str]) -> bytes:
    return bytes([TAG_MAGIC]) + wire.packb(dict(tags))


def decode_tags(meta: bytes) -> dict[str, str]:
    """Serf protocol >= 3 tags; any other meta is the legacy role string."""
    return dict(_decode_tags(meta))


@functools.lru_cache(maxsize=4096)
def _decode_tags(meta: bytes) -> tuple[tuple[str, str], ...]:
    return tuple(_decode_tags_dict(meta).items())


def _decode_tags_dict(meta: bytes) -> dict[str, str]:
    if not meta:
        return {}
    if meta[0] != TAG_MAGIC:
        return {"role": meta.decode("utf-8", "replace")}
    try:
        obj = msgpack.unpackb(meta[1:], raw=True, strict_map_key=False)
    except Exception:
        return {}
    if not isinstance(obj, dict):
        return {}
    out: dict[str, str] = {}
    for k, v in obj.items():
        if isinstance(k, bytes) and isinstance(v, bytes):
            out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return out


def encode_msg(t: SerfMsg, body: dict[str, Any]) -> bytes:
    return bytes([t]) + wire.packb(body)


def decode_msg(buf: bytes, what: str) -> dict[bytes, Any]:
    return wire.unpack_map(buf, what)


@functools.lru_cache(maxsize=16384)
def parse_intent(msg: bytes) -> tuple[int, str, bool]:
    """(LTime, Node, Prune) of a join or leave intent; memoised, as gossip repeats them."""
    if msg[0] == SerfMsg.LEAVE:
        m = decode_msg(msg[1:], "leave")
        return (wire.f_int(m, b"LTime", "leave"), wire.f_str(m, b"Node", "leave"),
                wire.f_bool(m, b"Prune", "leave"))
    m = decode_msg(msg[1:], "join")
    return wire.f_int(m, b"LTime", "join"), wire.f_str(m, b"Node", "join"), False


@functools.lru_cache(maxsize=16384)
def parse_user_event(msg: bytes) -> tuple[int, str, bytes, bool]:
    """(LTime, Name, Payload, CC) of a user event message; memoised like intents."""
    w = "user event"
    m = decode_msg(msg[1:], w)
    return (wire.f_int(m, b"LTime", w), wire.f_str(m, b"Name", w), wire.f_bytes(m, b"Payload", w),
            wire.f_bool(m, b"CC", w))
