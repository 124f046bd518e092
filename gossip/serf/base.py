"""The state every layer of the Serf core reads and writes, and its constructor.

:class:`SerfState` holds the member table (with its change counters), the three
Lamport clocks, the outgoing broadcast queues, the event dedup buffer, the reconnector and
the deliveries the shell drains.  The layers (:mod:`.intents`, :mod:`.events`,
:mod:`.pushpull`) build on it; :class:`gossip.serf.Serf` combines them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gossip.broadcast import BroadcastQueue
from gossip.config import USER_EVENT_SIZE_HARD_LIMIT, Addr, GossipConfig
from gossip.lamport import LamportClock
from gossip.membership import Delegate, Memberlist
from gossip.serf.codec import SerfMsg
from gossip.serf.dedup import EventDedup
from gossip.serf.model import Delivery, SerfConfig, SerfError, SerfMember, SerfMetrics
from gossip.serf.reconnect import Reconnector

if TYPE_CHECKING:
    from gossip.queries import Queries


class SerfState(Delegate):
    ml: Memberlist  # set by Serf.__init__, which owns these two
    queries: Queries

    def __init__(self, name: str, *, rng: random.Random, now: float,
                 tags: Mapping[str, str] | None = None,
                 gossip: GossipConfig | None = None, config: SerfConfig | None = None) -> None:
        self.name = name
        self.cfg = config or SerfConfig()
        if not 0 < self.cfg.event_size_limit <= USER_EVENT_SIZE_HARD_LIMIT:
            raise SerfError(f"event_size_limit must be 1..{USER_EVENT_SIZE_HARD_LIMIT}")
        self.rng = rng
        self.tags: dict[str, str] = dict(tags or {})
        self.clock = LamportClock(1)
        self.event_clock = LamportClock(1)
        self.query_clock = LamportClock(1)
        self.event_min_time = 0
        self.query_min_time = 0  # queries older than a restored snapshot are not replayed
        self._conflicts_logged: set[tuple[str, Addr]] = set()
        self.intents = BroadcastQueue((gossip or GossipConfig()).retransmit_mult)
        self.event_queue = BroadcastQueue((gossip or GossipConfig()).retransmit_mult)
        self.query_queue = BroadcastQueue((gossip or GossipConfig()).retransmit_mult)
        self.metrics = SerfMetrics()
        self.members: dict[str, SerfMember] = {}
        self.recent_intents: dict[str, tuple[SerfMsg, int, float]] = {}
        self.dedup = EventDedup(self.cfg.event_dedup_window)
        self._queries: dict[int, set[int]] = {}
        self._out: list[Delivery] = []
        self._ignore_old = False
        self.left = False
        self.gcfg = gossip or GossipConfig()
        self._next_reap = now + self.cfg.reap_interval
        self._reap_after = (-1, 0.0)  # (_gen, earliest expiry) of the last reap scan
        self.reconnector = Reconnector(self.gcfg, now, rng, self._push_pull_with)
        self._next_queue_check = now + 30.0
        self._burst_start, self._burst_new = -math.inf, 0  # burst detection for _spread
        # change counters: every change to the member table (statuses, status LTimes) bumps
        # _gen, one to the event buffer _events_gen; each cached derivative is rebuilt only
        # for its own.  The reconnector is told of each status change itself (changed/erased)
        self._gen = 0
        self._events_gen = 0
        self._state_parts: tuple[int, bytes, bytes] = (-1, b"", b"")  # StatusLTimes, LeftMembers
        self._state_events: tuple[int, bytes] = (-1, b"")  # Events

    def _push_pull_with(self, now: float, addr: Addr) -> None:
        self.ml.start_push_pull(now, addr, join=False)

    def _plausible(self, clock: LamportClock, ltime: int) -> bool:
        """A received time is at most ``max_ltime_jump`` ahead of ``clock``; else counted."""
        if clock.plausible(ltime, self.cfg.max_ltime_jump):
            return True
        self.metrics.ltime_jumps_dropped += 1
        return False
