"""User events between rumor agents and real serf agents, in both directions."""

from __future__ import annotations

import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
import trio

from agent.agent import Agent
from agent.config import AgentConfig
from tests.interop.serfagent import SerfAgent
from tests.interop.test_serf_membership import eventually, is_


@pytest.fixture
async def rumor(net: str, tmp_path: Path) -> AsyncIterator[Agent]:
    cfg = AgentConfig(node_name="rumor1", bind_addr=f"{net}.10", serf_lan_port=7946,
                      data_dir=str(tmp_path / "data"))
    agent = Agent(cfg)
    async with trio.open_nursery() as nursery:
        await agent.start(nursery)
        try:
            yield agent
        finally:
            agent.close()  # as run_agent does: the event and bus logs are ours to close
            nursery.cancel_scope.cancel()


def handler_script(tmp: Path) -> Path:
    """An event handler recording SERF_USER_EVENT, SERF_USER_LTIME and the raw stdin."""
    out = tmp / "events"
    out.mkdir()
    script = tmp / "handler.sh"
    script.write_text("#!/bin/sh\n"
                      f'f="{out}/$$"\n'
                      'cat > "$f.payload"\n'
                      'printf "%s\\n%s\\n" "$SERF_USER_EVENT" "$SERF_USER_LTIME" > "$f.meta"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def received(tmp: Path) -> list[tuple[str, bytes]]:
    out = []
    for meta in sorted((tmp / "events").glob("*.meta")):
        lines = meta.read_text().splitlines()
        if len(lines) >= 1:
            payload = meta.with_suffix(".payload")
            out.append((lines[0], payload.read_bytes() if payload.exists() else b""))
    return out


async def test_event_fired_at_rumor_reaches_serf_handler(net: str, agents: list[SerfAgent],
                                                         rumor: Agent, tmp_path: Path) -> None:
    script = handler_script(tmp_path)
    agents.append(await SerfAgent.start("serf1", f"{net}.1", handler=f"user={script}"))
    assert await rumor.join([f"{net}.1:7946"]) == 1
    ev = rumor.fire("deploy", b"v42", node="serf.*")
    # the firing agent itself does not match the node filter, so it does not store it
    await eventually(lambda: len(received(tmp_path)) == 1, 10, "serf handler ran")
    name, raw = received(tmp_path)[0]
    assert name == "consul:event:deploy"
    assert raw.endswith(b"\n")  # serf's invoke adds a newline when the payload lacks one
    body = msgpack.unpackb(raw[:-1], raw=False)
    assert body["ID"] == ev.id and body["n"] == "deploy" and body["p"] == b"v42"
    assert body["nf"] == "serf.*" and body["v"] == 1
    assert rumor.store.list(None)[1] == []


async def test_serf_event_reaches_rumor_list(net: str, agents: list[SerfAgent],
                                             rumor: Agent) -> None:
    agents.append(await SerfAgent.start("serf1", f"{net}.1", join=None))
    assert await rumor.join([f"{net}.1:7946"]) == 1
    await eventually(lambda: is_(agents[0].status_of("rumor1"), "alive"), 10, "serf sees rumor")
    await agents[0].event("foo", "bar")
    await eventually(lambda: len(rumor.store) == 1, 10, "rumor stored the serf event")
    _, events = rumor.store.list("foo")
    doc = events[0].to_json()
    # Consul's event shape, in Consul's key order; a plain serf event has no filters and
    # gets a name-based (version 5) UUID, the same on every agent
    assert list(doc) == ["ID", "Name", "Payload", "NodeFilter", "ServiceFilter", "TagFilter",
                         "Version", "LTime"]
    assert uuid.UUID(doc["ID"]).version == 5
    assert {k: v for k, v in doc.items() if k not in ("ID", "LTime")} == {
        "Name": "foo", "Payload": "YmFy", "NodeFilter": "", "ServiceFilter": "",
        "TagFilter": "", "Version": 1}
    assert isinstance(doc["LTime"], int) and doc["LTime"] >= 1
