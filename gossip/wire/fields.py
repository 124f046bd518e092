"""Codec primitives shared by every message family: IP addresses as memberlist carries them,
and msgpack in the old spec that Go's zero-value ``MsgpackHandle`` reads and writes (strings
and byte slices both in the raw/str family, never bin, never str8).  Every reader raises
:class:`gossip.errors.DecodeError` and nothing else on bad input.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any

import msgpack

from gossip.errors import DecodeError

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


def nil_if_empty(b: bytes) -> bytes | None:
    return b if b else None
