"""The state every part of the membership core reads and writes, and its constructor.

:class:`MemberlistState` holds the member table and everything derived from it (probe order,
gossip candidates, the encoded push-pull table: each reset to ``None`` by any change to the
table), the pending probe and relays, the suspicion timers and the effect list the shell
drains.  The parts (:mod:`.output`, :mod:`.changes`, :mod:`.probing`, :mod:`.pushpull`) are
layers over this state; :class:`gossip.membership.Memberlist` combines them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from gossip.admission import Admission
from gossip.awareness import Awareness
from gossip.broadcast import BroadcastQueue
from gossip.config import DEFAULT_VSN, Addr, Effect, GossipConfig
from gossip.membership.member import META_MAX_SIZE, Delegate, Member, Metrics, WireCipher
from gossip.state import State
from gossip.suspicion import Suspicion
from gossip.wire import StreamMessage


@dataclass(slots=True)
class Probe:
    target: str
    seq: int
    start: float
    indirect_at: float
    end_at: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class Relay:
    requester: Addr
    orig_seq: int
    want_nack: bool
    deadline: float


class MemberlistState:
    def __init__(self, config: GossipConfig, name: str, addr: Addr, *, rng: random.Random,
                 now: float, delegate: Delegate | None = None, keyring: WireCipher | None = None,
                 vsn: bytes = DEFAULT_VSN) -> None:
        self.cfg = config
        self.name = name
        self.rng = rng
        self.delegate = delegate or Delegate()
        self.keyring = keyring
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.queue = BroadcastQueue(config.retransmit_mult)
        self.metrics = Metrics()
        self.members: dict[str, Member] = {}
        self.leaving = False
        self._effects: list[Effect] = []
        self._order: list[str] = []
        self._probe_idx = 0
        self._seq = 0
        self._probe: Probe | None = None
        self._relays: dict[int, Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._sus_heap: list[tuple[float, int, str, Suspicion]] = []
        self._sus_seq = 0
        self._streams: dict[int, Callable[[float, StreamMessage | None], None]] = {}
        self._token = 0
        self._next_probe = now + config.probe_interval * rng.random()
        self._next_gossip = now + config.gossip_interval * rng.random()
        self._gossip_now = False
        self._last_extra = -math.inf  # when the last extra (fresh-broadcast) round went out
        # the gap after it: doubled while fresh broadcasts keep arriving within it (a burst,
        # whose messages then share packets), halved once one arrives after it
        self._extra_gap = config.gossip_on_new_gap
        self._soon_at = math.inf  # when the pending extra round was asked for
        self._next_push_pull = now + config.push_pull_interval * rng.random()
        # rumor: after a join, push-pull again after 1, 2, 4... s (until the normal interval)
        # so that members announced while we were joining are never left to gossip luck
        self._pp_ramp = math.inf
        self._candidates: list[Member] | None = None  # gossip targets, rebuilt on change
        self._pp_states: list[bytes] | None = None  # encoded member table, rebuilt on change
        # each member's encoded push-pull state, in member-table order, and the members whose
        # entry is stale (an ordered set: new members are appended in the order they came)
        self._pp_enc: dict[str, bytes] = {}
        self._pp_dirty: dict[str, None] = {name: None}
        self._candidates_until = math.inf
        self.merging_join_reply = False  # True while merging the reply to our own join
        self.admission = Admission(config, now)  # second-hand names waiting for an ack
        self._vouched = False  # True while handling a packet or stream from a member
        self._first_hand: str | None = None  # IP of an inbound stream's sender, until used
        meta = self.delegate.node_meta(META_MAX_SIZE)
        self.local = Member(name, addr[0], addr[1], meta, 1, State.ALIVE, now, vsn)
        self.members[name] = self.local
        self.admission.member_at(addr)
        self._order.append(name)

    def take_effects(self) -> list[Effect]:
        out, self._effects = self._effects, []
        return out

    def num_members(self) -> int:
        return len(self.members)

    def alive_members(self) -> list[Member]:
        return [m for m in self.members.values() if m.state in (State.ALIVE, State.SUSPECT)]

    def has_live_peers(self) -> bool:
        return any(m.state is State.ALIVE and m is not self.local
                   for m in self.members.values())

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq
