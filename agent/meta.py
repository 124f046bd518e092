"""Metadata rules, written once: Consul's key/value limits for node and service meta, and the
tags this agent gossips (its own ``role``/``dc``/``build`` plus ``node_meta``) with their size
budget in memberlist's node Meta.

``meta_problem`` says what is wrong with a map (or None); the callers phrase it for their
readers (``agent.config`` names the field, ``agent.catalog`` answers in Consul's words).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.version import VERSION

MAX_PAIRS, KEY_MAX, VALUE_MAX = 64, 128, 512
RESERVED_PREFIX = "consul-"
NODE_META_WIRE_MAX = 512  # memberlist MetaMaxSize: 0xFF + msgpack(tags) must fit
_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class MetaProblem:
    """What is wrong: ``kind`` is one of too_many, empty_key, key_chars, key_long,
    reserved_key, value_long; ``key``/``value`` is the pair at fault (empty for too_many)."""

    kind: str
    key: str = ""
    value: str = ""


def meta_problem(meta: Mapping[str, str], *, allow_reserved: bool) -> MetaProblem | None:
    """The first rule ``meta`` breaks (Consul's order), or None."""
    if len(meta) > MAX_PAIRS:
        return MetaProblem("too_many")
    for key, value in meta.items():
        if key == "":
            kind = "empty_key"
        elif not _KEY_RE.fullmatch(key):
            kind = "key_chars"
        elif len(key) > KEY_MAX:
            kind = "key_long"
        elif not allow_reserved and key.startswith(RESERVED_PREFIX):
            kind = "reserved_key"
        elif len(value) > VALUE_MAX:
            kind = "value_long"
        else:
            continue
        return MetaProblem(kind, key, value)
    return None


def node_tags(datacenter: str, node_meta: Mapping[str, str]) -> dict[str, str]:
    """The tags an agent gossips: its own, then ``node_meta`` (which may override them)."""
    return {"role": "node", "dc": datacenter, "build": VERSION, **node_meta}


def tags_wire_size(tags: Mapping[str, str]) -> int:
    """Bytes of ``0xFF + msgpack(tags)`` (the old msgpack spec, as Go's codec writes it), as
    Serf puts them in memberlist's node Meta.  Counted, not packed: client commands read the
    configuration and must not load msgpack."""
    def str_size(s: str) -> int:
        n = len(s.encode("utf-8"))
        return n + (1 if n <= 31 else 3)  # fixraw, or raw16 (the old spec has no str8)

    head = 1 if len(tags) <= 15 else 3  # fixmap, or map16
    return 1 + head + sum(str_size(k) + str_size(v) for k, v in tags.items())
