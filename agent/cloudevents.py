"""Bus records as CloudEvents 1.0 JSON documents, the way Vault's event notifications look.

Owns the mapping (one record -> one structured-mode CloudEvent):

* ``id``: the record's Index (unique per source: an agent never reuses an Index);
* ``source``: ``rumor://<node name>``; ``specversion``: ``1.0``;
* ``type``: the Vault-style event type: the event name for Topic ``Event`` (``deploy``),
  ``Node/<Type>`` for member changes (``Node/NodeJoin``), ``Stream/<Type>`` for Gap/Closed;
* ``datacontenttype``: ``application/json``; ``time``: RFC 3339 UTC with microseconds;
* ``data``: ``{"event": {"id", "metadata"}, "event_type", "payload"}`` as Vault nests it, with
  ``metadata`` holding the record's Index, Topic, Type and Key (strings, as Vault's are) and
  ``payload`` the record's Payload (the event as ``/v1/event/list`` renders it, or the member
  as ``/v1/agent/members`` does).

And the Vault subscription pattern (``/v1/sys/events/subscribe/{type}``): ``*`` wildcards
matched against that event type.
"""

from __future__ import annotations

import re
import time

from agent.bus import Record
from agent.http.types import go_json
from agent.topics import STREAM_TOPIC


def event_type(r: Record) -> str:
    return r.key if r.topic == "Event" else f"{r.topic}/{r.type}"


def rfc3339(t: float) -> str:
    micros = int(round(t * 1_000_000))
    secs, frac = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def cloudevent(r: Record, source: str) -> bytes:
    """The CloudEvents JSON of ``r`` (rendered once per record and source while it is new)."""
    return r.cached("ce:" + source, lambda rec: _render(rec, source))


def _render(r: Record, source: str) -> bytes:
    rid = str(r.index)
    etype = event_type(r)
    head = go_json({
        "id": rid, "source": source, "specversion": "1.0", "type": etype,
        "datacontenttype": "application/json", "time": rfc3339(r.time),
        "data": {"event": {"id": rid, "metadata": {"index": rid, "topic": r.topic,
                                                   "type": r.type, "key": r.key}},
                 "event_type": etype}})
    # splice the payload (already JSON) into data without decoding it again
    return head[:-2] + b',"payload":' + r.payload + b"}}"


class TypePattern:
    """Vault's ``{eventType}`` with ``*`` wildcards (``*`` matches any run, ``/`` included)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._re = re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.S)

    def __call__(self, r: Record) -> bool:
        return r.topic == STREAM_TOPIC or self._re.fullmatch(event_type(r)) is not None
