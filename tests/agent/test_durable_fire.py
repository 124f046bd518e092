"""A fire answered 200 is durable, and a restarted agent offers what it holds (issue 13 #6).

* In process: the 200 is sent only after an fsync that covered the event's line; concurrent
  fires share fsyncs (group commit), and each of them is covered.
* Real processes: an event fired at an agent that could not gossip it (it was alone), then
  ``kill -9``, reaches the other agents once that agent restarts with its data dir; so does
  one whose node filter excludes the firing agent (kept in ``outbox.jsonl``, not listed).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from agent.events import EventStore
from tests.agent.helpers import AgentProcess, free_subnet, in_process_agent, stop_all, wait_for


async def test_fire_answers_after_an_fsync_that_covers_the_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_file = tmp_path / "d" / "events.jsonl"
    synced: list[bytes] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        if log_file.exists():
            synced.append(log_file.read_bytes())

    monkeypatch.setattr(os, "fsync", spy)
    host = f"127.{os.getpid() % 200 + 2}.77.1"
    with trio.fail_after(20):
        async with in_process_agent(host, "d1", data_dir=str(tmp_path / "d")) as a:
            r = await a.client.put("/v1/event/fire/one", content=b"x")
            assert r.status_code == 200
            assert any(r.json()["ID"].encode() in snap for snap in synced)

            ids: list[str] = []

            async def fire(i: int) -> None:
                resp = await a.client.put(f"/v1/event/fire/many{i}", content=b"x")
                assert resp.status_code == 200
                ids.append(resp.json()["ID"])
                # when the answer arrives, the event was in the file at some fsync
                assert any(resp.json()["ID"].encode() in snap for snap in synced)

            before = a.agent.store.fsyncs
            async with trio.open_nursery() as nursery:
                for i in range(30):
                    nursery.start_soon(fire, i)
            assert len(ids) == 30
            assert 1 <= a.agent.store.fsyncs - before <= 30


async def test_sync_without_a_data_dir_and_after_compaction(tmp_path: Path) -> None:
    from agent.events import make_event

    with trio.fail_after(10):
        mem = EventStore(4)
        mem.add(make_event("x"))
        await mem.sync()  # nothing to do
        store = EventStore(2, tmp_path / "e.jsonl")
        for i in range(12):  # crosses the compaction threshold (4 x capacity lines)
            store.add(make_event(f"e{i}"))
            await store.sync()
        assert store.fsyncs >= 1
        store.close()
        again = EventStore(2, tmp_path / "e.jsonl")
        assert [e.name for e in again] == ["e10", "e11"]
        again.close()


def test_acknowledged_fire_survives_kill_9_and_reaches_the_others(tmp_path: Path) -> None:
    net = free_subnet(3)
    a = AgentProcess("a", f"{net}.1", tmp_path / "a")
    b = AgentProcess("b", f"{net}.2", tmp_path / "b")
    c = AgentProcess("c", f"{net}.3", tmp_path / "c")
    try:
        a.start().wait_ready()  # alone: nobody can hear its gossip
        r = a.fire("acked", b"v1")
        assert r.status == 200, r
        event_id = r.json()["ID"]
        # one that a's own node filter keeps out of its list: durable (and offered) all the same
        r = a.fire("for-b", b"v2", "?node=^b$")
        assert r.status == 200, r
        for_b = r.json()["ID"]
        a.stop(signal.SIGKILL)  # at once after the 200
        b.start().wait_ready()
        c.start(f"-join={b.serf_addr}").wait_ready()
        wait_for(lambda: b.alive_members() == {"b", "c"}, 10, "b and c to meet")
        assert b.events() == [] and c.events() == []
        a.start(f"-join={b.serf_addr}", f"-join={c.serf_addr}").wait_ready()
        for other in (b, c):
            wait_for(lambda o=other: [e["ID"] for e in o.events("acked")] == [event_id], 15,
                     f"{other.name} to get the acknowledged event")
        wait_for(lambda: [e["ID"] for e in b.events("for-b")] == [for_b], 15,
                 "b to get the event meant for it")
        assert [e["ID"] for e in a.events()] == [event_id]  # not delivered twice on a
        assert c.events("for-b") == []  # filtered there, as before
        assert "offering 2 stored events" in a.log_path.read_text()
    finally:
        stop_all([a, b, c], signal.SIGKILL)
