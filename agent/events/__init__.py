"""Consul user events on the agent (protocol.md §4.1, §4.3-4.5), in four modules:

* ``record``: ``Event``, Consul's event record, with ``to_json`` in the exact ``/v1/event/*``
  shape; UUID-shaped IDs and ``id_to_index`` (Consul's ``uuidToUint64``, the
  ``X-Consul-Index`` of an event list).
* ``codec``: the Consul wire body (``encode_consul_event`` / ``decode_consul_event``, the
  payload of the Serf event ``"consul:event:" + name``), ``plain_serf_event`` for plain Serf
  events (a deterministic ID, so every agent assigns the same one) and ``decode_serf_event``,
  which routes any received Serf user event.
* ``store``: ``EventStore``, the newest ``capacity`` events with arrival ``seq`` and Consul's
  blocking list.
* ``logfile``: ``EventLog``, the JSON-lines file a store persists to.

Import from here; the modules are the layout, this is the interface.
"""

from agent.events.codec import (
    CONSUL_EVENT_PREFIX,
    decode_consul_event,
    decode_serf_event,
    encode_consul_event,
    gossip_form,
    make_event,
    plain_serf_event,
    serf_event_name,
)
from agent.events.record import (
    USER_EVENT_VERSION,
    Event,
    EventDecodeError,
    id_to_index,
    is_event_id,
    new_event_id,
)
from agent.events.store import MAX_QUERY_TIME, EventList, EventStore, SeqEvents, effective_wait

__all__ = [
    "CONSUL_EVENT_PREFIX",
    "MAX_QUERY_TIME",
    "USER_EVENT_VERSION",
    "Event",
    "EventDecodeError",
    "EventList",
    "EventStore",
    "SeqEvents",
    "decode_consul_event",
    "decode_serf_event",
    "effective_wait",
    "encode_consul_event",
    "gossip_form",
    "id_to_index",
    "is_event_id",
    "make_event",
    "new_event_id",
    "plain_serf_event",
    "serf_event_name",
]
