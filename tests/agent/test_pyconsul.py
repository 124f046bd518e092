"""The real Consul client (py-consul) works against a rumor agent unchanged."""

from __future__ import annotations

import threading
from pathlib import Path

import consul

from tests.agent.helpers import AgentProcess, free_host, stop_all, wait_for


def test_py_consul_fires_lists_and_blocks(tmp_path: Path) -> None:
    host = free_host()
    agent = AgentProcess("pc1", host, tmp_path / "pc1").start().wait_ready()
    try:
        c = consul.Consul(host=host, port=8500)
        fired = c.event.fire("deploy", body=b"v42", node="pc.*")
        assert fired["Name"] == "deploy" and fired["LTime"] == 0
        index, events = c.event.list(name="deploy")
        assert [e["ID"] for e in events] == [fired["ID"]]
        assert events[0]["Payload"] == b"v42"  # py-consul base64-decodes it
        assert c.event.list(name="othername")[1] == []

        result: list[tuple[str, list[dict[str, object]]]] = []
        t = threading.Thread(target=lambda: result.append(
            c.event.list(name="deploy", index=index, wait="30s")), daemon=True)
        assert agent.metrics()["rumor_blocking_queries_parked"] == 0
        t.start()
        # the agent itself reports the query parked (and it stays parked: nothing new yet)
        wait_for(lambda: agent.metrics()["rumor_blocking_queries_parked"] == 1, 10,
                 "py-consul's blocking query to park")
        assert not result, "the blocking query returned before any new event"
        second = c.event.fire("deploy", body=b"v43")
        t.join(10)
        assert result, "the blocking query was not woken by the new event"
        assert agent.metrics()["rumor_blocking_queries_parked"] == 0
        new_index, events = result[0]
        assert new_index != index and events[-1]["ID"] == second["ID"]
    finally:
        stop_all([agent])
