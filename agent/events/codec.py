"""The Consul wire body of an event and the Serf events that carry it (protocol.md §4.3).

``encode_consul_event`` / ``decode_consul_event``: the msgpack blob a Consul agent fires as the
payload of the Serf event ``"consul:event:" + name``.  ``plain_serf_event``: a plain Serf event
(``serf event foo bar``) carries no ID, so rumor derives one deterministically and every agent
assigns the same ID (dedup works cluster-wide).  ``decode_serf_event`` routes any received
Serf user event to one of those (or to None for Consul-internal ones).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from typing import Any

import msgpack

from agent.events.record import Event, EventDecodeError, is_event_id, new_event_id

CONSUL_EVENT_PREFIX = "consul:event:"
CONSUL_INTERNAL_PREFIX = "consul:"
_U64 = 1 << 64
_I64 = 1 << 63


def make_event(
    name: str,
    payload: bytes | None = None,
    *,
    node_filter: str = "",
    service_filter: str = "",
    tag_filter: str = "",
    rng: random.Random | bytes | None = None,
) -> Event:
    """A new event as ``PUT /v1/event/fire`` builds it (fresh ID, Version 1, LTime 0).

    Validates the filters (``agent.filters.FilterError``); the name rules belong to the caller.
    """
    from agent.filters import validate_filters

    validate_filters(node_filter, service_filter, tag_filter)
    return Event(
        id=new_event_id(rng),
        name=name,
        payload=payload,
        node_filter=node_filter,
        service_filter=service_filter,
        tag_filter=tag_filter,
    )


def serf_event_name(ev: Event) -> str:
    """The Serf event name a Consul agent fires ``ev`` under."""
    return CONSUL_EVENT_PREFIX + ev.name


def encode_consul_event(ev: Event) -> bytes:
    """The msgpack body exactly as Consul encodes its ``UserEvent`` struct.

    Consul's struct tags (agent/user_event.go) give keys in declaration order: ``ID``, ``n``,
    ``p``/``nf``/``sf``/``tf`` (``omitempty``), ``v``; ``LTime`` is ``codec:"-"``. Its handle sets
    ``WriteExt: true`` (the new msgpack spec), so strings of 32-255 bytes use str8 and the payload
    is bin, which is what ``msgpack.packb(use_bin_type=True)`` writes.
    """
    body: dict[str, Any] = {"ID": ev.id, "n": ev.name}
    if ev.payload:
        body["p"] = ev.payload
    if ev.node_filter:
        body["nf"] = ev.node_filter
    if ev.service_filter:
        body["sf"] = ev.service_filter
    if ev.tag_filter:
        body["tf"] = ev.tag_filter
    body["v"] = ev.version
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def _text(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, bytes):
        raise EventDecodeError(f"field {key!r} is not a string")
    # Go strings may hold any bytes; Go's JSON encoder shows invalid UTF-8 as U+FFFD, so do we.
    return value.decode("utf-8", "replace")


def _check_ltime(ltime: int) -> None:
    if type(ltime) is not int or not 0 <= ltime < _U64:
        raise EventDecodeError(f"LTime {ltime!r} is not an unsigned 64-bit integer")


def decode_consul_event(blob: bytes | bytearray | memoryview, ltime: int) -> Event:
    """Decode a Consul event body (str or bin accepted for every field), stamping ``ltime``.

    Raises ``EventDecodeError`` (and nothing else) on malformed input, trailing bytes, or an ID
    that is not UUID-shaped (Consul would panic computing the index of such an event).
    Unknown keys are ignored, as Go's decoder does.
    """
    _check_ltime(ltime)
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise EventDecodeError("event body is not bytes")
    try:
        obj = msgpack.unpackb(bytes(blob), raw=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types; the contract is one
        raise EventDecodeError(f"invalid msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise EventDecodeError("event body is not a msgpack map")
    fields = {k.decode("utf-8", "replace"): v for k, v in obj.items() if isinstance(k, bytes)}
    event_id = _text(fields, "ID")
    if not is_event_id(event_id):
        raise EventDecodeError(f"event ID {event_id!r} is not UUID-shaped")
    payload = fields.get("p")
    if payload is not None and not isinstance(payload, bytes):
        raise EventDecodeError("field 'p' is not bytes")
    version = fields.get("v")
    if version is None:
        version = 0
    if type(version) is not int or not -_I64 <= version < _I64:
        raise EventDecodeError("field 'v' is not a 64-bit integer")
    return Event(
        id=event_id,
        name=_text(fields, "n"),
        payload=payload,
        node_filter=_text(fields, "nf"),
        service_filter=_text(fields, "sf"),
        tag_filter=_text(fields, "tf"),
        version=version,
        ltime=ltime,
    )


def plain_serf_event(name: str, payload: bytes, ltime: int) -> Event:
    """A plain Serf user event as an ``Event`` with a deterministic, name-based UUID.

    The ID is the first 16 bytes of SHA-256 over (ltime, name, payload), with the version nibble
    set to 5 and the RFC 4122 variant, so every agent derives the same ID for the same Serf event
    (Serf itself treats equal LTime + name + payload as one event).
    """
    _check_ltime(ltime)
    name_bytes = name.encode("utf-8", "surrogateescape")
    digest = hashlib.sha256()
    digest.update(b"rumor serf event v1\x00")
    digest.update(ltime.to_bytes(8, "big"))
    digest.update(len(name_bytes).to_bytes(4, "big"))
    digest.update(name_bytes)
    digest.update(bytes(payload))
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    return Event(id=str(uuid.UUID(bytes=bytes(raw))), name=name, payload=payload, ltime=ltime)


def decode_serf_event(serf_name: str, payload: bytes, ltime: int) -> Event | None:
    """Route a received Serf user event: Consul event, Consul-internal (``None``), or plain Serf.

    Raises ``EventDecodeError`` when a ``consul:event:`` body is malformed.
    """
    if serf_name.startswith(CONSUL_EVENT_PREFIX):
        return decode_consul_event(payload, ltime)
    if serf_name.startswith(CONSUL_INTERNAL_PREFIX):
        return None
    return plain_serf_event(serf_name, payload, ltime)


def gossip_form(ev: Event) -> tuple[int, str, bytes]:
    """``(ltime, serf name, serf payload)`` of a stored event, as it travels in gossip: a plain
    Serf event (its ID is derived from those) or a Consul event (``consul:event:`` + body)."""
    payload = ev.payload or b""
    if plain_serf_event(ev.name, payload, ev.ltime).id == ev.id:
        return ev.ltime, ev.name, payload
    return ev.ltime, serf_event_name(ev), encode_consul_event(ev)
