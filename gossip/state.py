"""Member states and every transition between them, as data.

Rule 1 (after h11's ``_state.py``): everything that decides whether a gossip message about
*another* node changes what we believe about it lives in :data:`TRANSITIONS`.  Messages about
ourselves never go through this table: they are refuted by the membership core.

A rule says which incarnation numbers a message needs to be accepted (``GREATER`` than the
one we hold, or ``AT_LEAST`` equal) and the state it moves the member to.  ``CONFIRM`` means
"a running suspicion timer may count this accuser", ``IGNORE`` means the message changes
nothing (it is stale, or the node is already dead/left).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum


class State(IntEnum):
    """Same numbers as memberlist's NodeStateType (and push-pull's ``State`` field)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class Kind(Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"  # a graceful leave is a dead message whose sender is the node itself

    # members are singletons compared by identity, so the identity hash is the right one;
    # Enum's own hashes the name in Python, which shows in profiles (every gossiped message
    # looks up TRANSITIONS)
    __hash__ = object.__hash__


class Need(Enum):
    GREATER = "incarnation > known"
    AT_LEAST = "incarnation >= known"


class Action(Enum):
    MOVE = "move"
    CONFIRM = "confirm"
    IGNORE = "ignore"


@dataclass(frozen=True)
class Rule:
    action: Action
    need: Need = Need.GREATER
    to: State | None = None  # for MOVE; DEAD becomes LEFT for a graceful leave


_MOVE_ALIVE = Rule(Action.MOVE, Need.GREATER, State.ALIVE)
_IGNORE = Rule(Action.IGNORE)

TRANSITIONS: dict[tuple[State, Kind], Rule] = {
    # alive: only a newer incarnation revives or updates a node
    (State.ALIVE, Kind.ALIVE): _MOVE_ALIVE,
    (State.SUSPECT, Kind.ALIVE): _MOVE_ALIVE,
    (State.DEAD, Kind.ALIVE): _MOVE_ALIVE,
    (State.LEFT, Kind.ALIVE): _MOVE_ALIVE,
    # suspect: only alive nodes become suspect; a running timer may gain a confirmation
    (State.ALIVE, Kind.SUSPECT): Rule(Action.MOVE, Need.AT_LEAST, State.SUSPECT),
    (State.SUSPECT, Kind.SUSPECT): Rule(Action.CONFIRM, Need.AT_LEAST),
    (State.DEAD, Kind.SUSPECT): _IGNORE,
    (State.LEFT, Kind.SUSPECT): _IGNORE,
    # dead: the same incarnation suffices; dead and left are final until a newer alive
    (State.ALIVE, Kind.DEAD): Rule(Action.MOVE, Need.AT_LEAST, State.DEAD),
    (State.SUSPECT, Kind.DEAD): Rule(Action.MOVE, Need.AT_LEAST, State.DEAD),
    (State.DEAD, Kind.DEAD): _IGNORE,
    (State.LEFT, Kind.DEAD): _IGNORE,
}


@dataclass(frozen=True)
class Outcome:
    action: Action
    to: State | None = None


IGNORED = Outcome(Action.IGNORE)


def decide(state: State, known_inc: int, kind: Kind, inc: int, graceful: bool = False) -> Outcome:
    """What a message of ``kind`` carrying ``inc`` does to a member in ``state``."""
    rule = TRANSITIONS[(state, kind)]
    if rule.action is Action.IGNORE:
        return IGNORED
    ok = inc > known_inc if rule.need is Need.GREATER else inc >= known_inc
    if not ok:
        return IGNORED
    if rule.action is Action.CONFIRM:
        return Outcome(Action.CONFIRM)
    to = rule.to
    if to is State.DEAD and graceful:
        to = State.LEFT
    return Outcome(Action.MOVE, to)
