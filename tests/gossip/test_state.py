"""The member state transition table: every (state, kind) pair, incarnation rules included,
checked against memberlist's aliveNode / suspectNode / deadNode written out longhand."""

from __future__ import annotations

import itertools

import pytest

from gossip.state import IGNORED, TRANSITIONS, Action, Kind, Outcome, State, decide

KNOWN = 5


def expected(state: State, kind: Kind, inc: int, graceful: bool) -> Outcome:
    if kind is Kind.ALIVE:  # any state; only a strictly newer incarnation
        return Outcome(Action.MOVE, State.ALIVE) if inc > KNOWN else IGNORED
    if kind is Kind.SUSPECT:
        if state in (State.DEAD, State.LEFT) or inc < KNOWN:
            return IGNORED
        if state is State.SUSPECT:
            return Outcome(Action.CONFIRM)
        return Outcome(Action.MOVE, State.SUSPECT)
    if state in (State.DEAD, State.LEFT) or inc < KNOWN:
        return IGNORED
    return Outcome(Action.MOVE, State.LEFT if graceful else State.DEAD)


def test_table_covers_every_pair_exactly() -> None:
    assert set(TRANSITIONS) == set(itertools.product(State, Kind))


@pytest.mark.parametrize("state,kind", list(itertools.product(State, Kind)),
                         ids=lambda v: v.name)
def test_every_pair_and_incarnation(state: State, kind: Kind) -> None:
    for inc, graceful in itertools.product((0, KNOWN - 1, KNOWN, KNOWN + 1, 2**32 - 1),
                                           (False, True)):
        assert decide(state, KNOWN, kind, inc, graceful) == \
            expected(state, kind, inc, graceful), (inc, graceful)


def test_notable_rules() -> None:
    # the same incarnation is enough to suspect or kill, but never to revive
    assert decide(State.ALIVE, 3, Kind.SUSPECT, 3).to is State.SUSPECT
    assert decide(State.SUSPECT, 3, Kind.DEAD, 3).to is State.DEAD
    assert decide(State.DEAD, 3, Kind.ALIVE, 3) is IGNORED
    assert decide(State.DEAD, 3, Kind.ALIVE, 4).to is State.ALIVE
    # a node that left can come back with a newer incarnation
    assert decide(State.LEFT, 3, Kind.ALIVE, 4).to is State.ALIVE
    # graceful only changes where a dead message leads
    assert decide(State.ALIVE, 3, Kind.DEAD, 3, graceful=True).to is State.LEFT
    assert decide(State.ALIVE, 3, Kind.SUSPECT, 3, graceful=True).to is State.SUSPECT
    # state numbers are memberlist's (push-pull carries them)
    assert [int(s) for s in State] == [0, 1, 2, 3]
