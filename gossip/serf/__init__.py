"""Serf layer on top of the SWIM core, sans-IO: member status, intents, tags, user events.

Wire-compatible with Serf 0.9.4 (``serf/messages.go``): Serf messages travel as memberlist
user messages ``[8][serf type][msgpack]``; the push-pull user state is
``[2][msgpack messagePushPull]``; tags live in node meta as ``0xFF + msgpack(map)``.

Semantics follow Serf (Lamport clocks for member status, events and queries; an event dedup
buffer keyed by LTime; join/leave intents; failed/left member lists with reap and
reconnect), with rumor's improvements, each documented where it is made:

* fresh events are forwarded at once (``Memberlist.gossip_soon``), not on the next tick;
* events too big for one datagram go to ``gossip_nodes`` peers over TCP at once (Serf leaves
  them to the 30 s push-pull);
* the dedup window (``SerfConfig.event_dedup_window``) is larger than Serf's 512 so bursts
  are not dropped as "too old";
* failed members are re-contacted every ``reconnect_interval`` (Serf: 30 s, throttled), and
  soon after they failed; a member alive again after failing gets a push-pull at once.

Serf's "can coalesce" flag is carried and delivered (``UserEvent.coalesce``) but events are
not coalesced here: nothing in rumor configured coalescing, so the coalescer was removed.

Modules: :mod:`.codec` (message and tag bytes) and :mod:`.model` (config, members,
deliveries) are plain; the core is :class:`Serf` over one shared state (:mod:`.base`), in
layers: :mod:`.intents` (member status), :mod:`.events` (user events, with the
:class:`~gossip.serf.dedup.EventDedup` buffer), :mod:`.pushpull` (Serf's push-pull state),
:mod:`.core` (the surface, delegate dispatch, queries glue); :mod:`.reconnect` is a separate
collaborator with its own state.
"""

from gossip.serf.codec import (
    TAG_MAGIC,
    SerfMsg,
    decode_tags,
    encode_tags,
)
from gossip.serf.core import Serf
from gossip.serf.events import BURST_EVENTS, BURST_REPAIR_DELAY
from gossip.serf.model import (
    ClockExhausted,
    Delivery,
    MemberEvent,
    MemberStatus,
    NameConflict,
    SerfConfig,
    SerfError,
    SerfMember,
    SerfMetrics,
    UserEvent,
)

__all__ = ["BURST_EVENTS", "BURST_REPAIR_DELAY", "TAG_MAGIC",
           "ClockExhausted", "Delivery", "MemberEvent", "MemberStatus", "NameConflict", "Serf",
           "SerfConfig", "SerfError", "SerfMember", "SerfMetrics", "SerfMsg", "UserEvent",
           "decode_tags", "encode_tags"]
