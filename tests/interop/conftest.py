"""Fixtures shared by the interop tests: a loopback subnet, serf agents, a nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.interop.serfagent import SerfAgent, loopback_subnet


@pytest.fixture
def net() -> str:
    return loopback_subnet()


@pytest.fixture
async def agents() -> AsyncIterator[list[SerfAgent]]:
    """Serf agents a test starts; all are stopped (and their temp dirs removed) afterwards."""
    started: list[SerfAgent] = []
    yield started
    for a in started:
        await a.stop()


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()
