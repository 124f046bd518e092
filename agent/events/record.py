"""The Consul user-event record (``Event``) and its IDs: the JSON shape of ``/v1/event/*``,
UUID-shaped IDs, and Consul's ``uuidToUint64`` index (protocol.md §4.1, §4.4)."""

from __future__ import annotations

import base64
import binascii
import random
import re
import uuid
from dataclasses import dataclass
from typing import Any

USER_EVENT_VERSION = 1
_U64 = 1 << 64
_I64 = 1 << 63
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class EventDecodeError(ValueError):
    """A user-event body (msgpack from the wire, or a persisted JSON record) is malformed."""


@dataclass(frozen=True)
class Event:
    """A Consul user event (Go: ``structs.UserEvent``). An empty payload is normalised to
    ``None`` (Consul's ``null``)."""

    id: str
    name: str
    payload: bytes | None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = USER_EVENT_VERSION
    ltime: int = 0

    def __post_init__(self) -> None:
        if not self.payload:
            object.__setattr__(self, "payload", None)
        elif not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))

    def to_json(self) -> dict[str, Any]:
        """Consul's JSON shape and key order; Payload is standard base64 or ``None``."""
        return {
            "ID": self.id,
            "Name": self.name,
            "Payload": base64.b64encode(self.payload).decode("ascii") if self.payload else None,
            "NodeFilter": self.node_filter,
            "ServiceFilter": self.service_filter,
            "TagFilter": self.tag_filter,
            "Version": self.version,
            "LTime": self.ltime,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Event:
        """Inverse of ``to_json``; raises ``EventDecodeError`` on anything malformed."""
        if not isinstance(obj, dict):
            raise EventDecodeError("event record is not an object")
        strs: dict[str, str] = {}
        for key in ("ID", "Name", "NodeFilter", "ServiceFilter", "TagFilter"):
            value = obj.get(key, "")
            if not isinstance(value, str):
                raise EventDecodeError(f"event field {key} is not a string")
            strs[key] = value
        if not is_event_id(strs["ID"]):
            raise EventDecodeError(f"event ID {strs['ID']!r} is not UUID-shaped")
        raw_payload = obj.get("Payload")
        payload: bytes | None = None
        if raw_payload is not None:
            if not isinstance(raw_payload, str):
                raise EventDecodeError("event Payload is not base64 text")
            try:
                payload = base64.b64decode(raw_payload, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise EventDecodeError(f"event Payload is not base64: {exc}") from None
        version = obj.get("Version", USER_EVENT_VERSION)
        ltime = obj.get("LTime", 0)
        if type(version) is not int or not -_I64 <= version < _I64:
            raise EventDecodeError("event Version is not a 64-bit integer")
        if type(ltime) is not int or not 0 <= ltime < _U64:
            raise EventDecodeError("event LTime is not an unsigned 64-bit integer")
        return cls(
            id=strs["ID"],
            name=strs["Name"],
            payload=payload,
            node_filter=strs["NodeFilter"],
            service_filter=strs["ServiceFilter"],
            tag_filter=strs["TagFilter"],
            version=version,
            ltime=ltime,
        )


# -- IDs and the index -------------------------------------------------------------------------


def is_event_id(value: str) -> bool:
    """True for a UUID-shaped string (8-4-4-4-12 hex digits, either case)."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def new_event_id(rng: random.Random | bytes | None = None) -> str:
    """A fresh UUID v4 string; ``rng`` (a ``random.Random`` or 16 raw bytes) makes it reproducible.

    (Consul uses go-uuid, 128 random bits without version bits; any UUID-shaped ID interoperates.)
    """
    if rng is None:
        return str(uuid.uuid4())
    raw = bytes(rng) if isinstance(rng, (bytes, bytearray)) else rng.randbytes(16)
    if len(raw) != 16:
        raise ValueError("an event ID needs exactly 16 random bytes")
    return str(uuid.UUID(bytes=raw, version=4))


def id_to_index(event_id: str) -> int:
    """Consul's ``uuidToUint64``: XOR of the first and last 16 hex digits of the UUID."""
    if not is_event_id(event_id):
        raise ValueError(f"event ID {event_id!r} is not UUID-shaped")
    low = int(event_id[0:8] + event_id[9:13] + event_id[14:18], 16)
    high = int(event_id[19:23] + event_id[24:36], 16)
    return low ^ high
