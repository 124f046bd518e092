"""Topic names and Nomad-style ``?topic=Topic:Key`` filters over bus records.

Owns which topics exist (what rumor publishes, and Nomad's other names, accepted so Nomad
clients and documented curl lines work), the ``topic`` parameter syntax and its errors
(``TopicError``), and ``TopicFilter``: ``*`` topic or key, keys that may be fnmatch globs,
matched against a record's Key and FilterKeys.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.bus import Record

TOPICS = ("Event", "Node")  # what rumor publishes
# Nomad's other topics: accepted in filters (so Nomad clients and its documented curl lines
# work unchanged), never published by rumor
NOMAD_TOPICS = ("Job", "Eval", "Alloc", "Deployment", "NodeDrain", "NodePool", "Service")
STREAM_TOPIC = "Stream"  # records about a subscription itself (Gap, Closed)
MAX_TOPICS = 32
MAX_KEY = 256


class TopicError(ValueError):
    """A ``topic`` parameter that does not parse; the message says which and why."""


class TopicFilter:
    """Nomad's ``?topic=Topic:Key`` set: ``*`` topic or key, keys may be fnmatch globs.

    A key matches a record's Key or any of its FilterKeys.  ``Stream`` records (Gap,
    Closed) always pass: they are about the subscription itself.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._any: set[str] = set()
        self._exact: dict[str, set[str]] = {}
        self._globs: dict[str, re.Pattern[str]] = {}
        globs: dict[str, list[str]] = {}
        for topic, key in pairs:
            if key == "*":
                self._any.add(topic)
            elif any(c in key for c in "*?["):
                globs.setdefault(topic, []).append(fnmatch.translate(key))
            else:
                self._exact.setdefault(topic, set()).add(key)
        for topic, parts in globs.items():
            self._globs[topic] = re.compile("|".join(f"(?:{p})" for p in parts))

    def __call__(self, r: Record) -> bool:
        if r.topic == STREAM_TOPIC:
            return True
        return self._match(r.topic, r) or self._match("*", r)

    def _match(self, topic: str, r: Record) -> bool:
        if topic in self._any:
            return True
        keys = (r.key, *(r.filter_keys or ()))
        exact = self._exact.get(topic)
        if exact is not None and any(k in exact for k in keys):
            return True
        glob = self._globs.get(topic)
        return glob is not None and any(glob.match(k) for k in keys)


def parse_topics(values: list[str]) -> TopicFilter:
    """Parse repeated ``topic`` parameters (none: everything); TopicError on bad syntax."""
    if not values:
        return TopicFilter([("*", "*")])
    if len(values) > MAX_TOPICS:
        raise TopicError(f"at most {MAX_TOPICS} topic parameters, got {len(values)}")
    pairs = []
    for raw in values:
        topic, sep, key = raw.partition(":")
        if not sep:
            key = "*"
        if not topic:
            raise TopicError(f"topic {raw!r}: empty topic name (use Topic or Topic:Key)")
        if topic != "*" and topic not in TOPICS and topic not in NOMAD_TOPICS:
            raise TopicError(f"unknown topic {topic!r}; rumor publishes {', '.join(TOPICS)} "
                             f"(and accepts * and Nomad's {', '.join(NOMAD_TOPICS)})")
        if not key:
            raise TopicError(f"topic {raw!r}: empty key after ':' (use {topic}:* for all)")
        if len(key) > MAX_KEY or any(ord(c) < 32 for c in key):
            raise TopicError(f"topic {raw[:40]!r}: key must be at most {MAX_KEY} printable "
                             "characters")
        pairs.append((topic, key))
    return TopicFilter(pairs)
