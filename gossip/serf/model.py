"""What the Serf layer is configured with and hands up: config, members, deliveries, errors,
counters.  Plain data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class MemberStatus(IntEnum):
    """Serf member status; same numbers Consul's /v1/agent/members reports."""

    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4


class SerfError(ValueError):
    """A request the Serf layer refuses (e.g. an event over the size limit)."""


class ClockExhausted(SerfError):
    """The event clock has reached 2**64-1: no new event can be given a time."""


@dataclass(frozen=True)
class SerfConfig:
    event_size_limit: int = 512
    event_dedup_window: int = 4096  # LTimes of events deduped (Serf EventBuffer: 512)
    push_pull_events: int = 512  # newest LTime slots carried in push-pull (Serf: whole ring)
    query_buffer: int = 512
    reap_interval: float = 15.0
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    recent_intent_timeout: float = 300.0
    broadcast_timeout: float = 5.0
    max_queue_depth: int = 4096
    protocol: int = 5
    # rumor: how far ahead of our clock a received Lamport time may be.  A legitimate jump
    # means that many events (intents, queries) happened that we never saw; 2**20 is 256
    # times our dedup window and far beyond any partition's backlog, while exhausting a
    # 64-bit clock would take 2**44 forged messages.  Further: dropped (ltime_jumps_dropped);
    # push-pull clocks advance by at most this much (the reply to our own join is exempt).
    max_ltime_jump: int = 1 << 20
    # rumor: names a push-pull's Serf state may add to recent intents (unknown members)
    max_new_intents: int = 64


@dataclass
class SerfMember:
    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: MemberStatus
    status_ltime: int = 0
    leave_time: float = 0.0
    vsn: bytes = b""


@dataclass(frozen=True)
class UserEvent:
    """A user event delivered to the layer above (once per LTime/name/payload)."""

    ltime: int
    name: str
    payload: bytes
    coalesce: bool = False


@dataclass(frozen=True)
class MemberEvent:
    kind: str  # "join", "leave", "failed", "update", "reap"
    member: SerfMember


@dataclass(frozen=True)
class NameConflict:
    """Another node claims our name and the cluster sided with it: Serf shuts down."""

    matching: int
    responses: int


Delivery = UserEvent | MemberEvent | NameConflict


@dataclass
class SerfMetrics:
    events_received: int = 0
    events_deduped: int = 0
    events_too_old: int = 0
    events_fired: int = 0
    events_reliable_sent: int = 0
    intents_received: int = 0
    queries_received: int = 0
    queue_pruned: int = 0
    decode_errors: int = 0
    ltime_jumps_dropped: int = 0  # received Lamport times too far ahead of ours
    intents_capped: int = 0  # unknown names in one push-pull beyond max_new_intents


def snapshot(m: SerfMember) -> SerfMember:
    """A copy handed up with a member event (the table keeps changing)."""
    return SerfMember(m.name, m.addr, m.port, dict(m.tags), m.status, m.status_ltime,
                      m.leave_time, m.vsn)
