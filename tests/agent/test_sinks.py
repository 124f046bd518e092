"""Webhook sinks of an in-process agent, delivering to a real HTTP receiver on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from agent import sinks as sinks_mod
from agent.http.routing import Router
from agent.http.server import serve_http
from agent.http.types import Request, Response
from tests.agent.helpers import InProc, eventually, free_host, in_process_agent


@dataclass
class Receiver:
    """A webhook: answers 500 to the first ``fail`` POSTs (or while ``down``), else 200."""

    fail: int = 0
    down: bool = False
    attempts: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, req: Request) -> Response:
        self.attempts += 1
        if self.attempts <= self.fail or self.down:
            return Response.text("not now", 500)
        body = json.loads(req.body)
        assert req.header("content-type") == "application/json"
        self.accepted.append(body)
        return Response()

    def names(self) -> list[str]:
        return [b["Events"][0]["Key"] for b in self.accepted]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    router = Router()
    router.add("POST", "/hook", rec.handle)
    host = free_host(ports=())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_http, router, host, 0))
        rec.url = f"http://{host}:{port}/hook"
        yield rec
        nursery.cancel_scope.cancel()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks_mod, "BACKOFF_FIRST", 0.05)


def sink_body(url: str, topics: Any = None) -> bytes:
    return json.dumps({"Type": "webhook", "Topics": topics or {"Event": ["*"]},
                       "Address": url}).encode()


async def fire(a: InProc, name: str) -> str:
    r = await a.client.put(f"/v1/event/fire/{name}")
    assert r.status_code == 200
    return str(r.json()["ID"])


async def test_failing_receiver_gets_every_event_once_in_order(receiver: Receiver) -> None:
    receiver.fail = 3
    async with in_process_agent(free_host(ports=()), "s1") as a:
        r = await a.client.put("/v1/event/sink/hook1", content=sink_body(
            receiver.url, {"Event": ["deploy-*"]}))
        assert r.status_code == 200 and r.json()["ID"] == "hook1"
        ids = [await fire(a, f"deploy-{i}") for i in range(5)]
        await fire(a, "ignored")
        await eventually(lambda: len(receiver.accepted) >= 5, "5 deliveries", timeout=20)
        await trio.sleep(0.3)  # nothing more arrives
        assert [b["Events"][0]["Payload"]["ID"] for b in receiver.accepted] == ids
        indexes = [b["Index"] for b in receiver.accepted]
        assert indexes == sorted(set(indexes))
        assert receiver.attempts == 5 + 3
        got = (await a.client.get("/v1/event/sink/hook1")).json()
        assert got["LatestIndex"] >= indexes[-1] and "500" in got["LastError"]
        listed = (await a.client.get("/v1/event/sinks")).json()
        assert [s["ID"] for s in listed] == ["hook1"] and listed[0]["LatestIndex"] >= indexes[-1]
        assert (await a.client.delete("/v1/event/sink/hook1")).status_code == 200
        assert (await a.client.get("/v1/event/sink/hook1")).status_code == 404
        assert (await a.client.get("/v1/event/sinks")).json() == []


async def test_dead_webhook_delays_nobody(receiver: Receiver) -> None:
    async with in_process_agent(free_host(ports=()), "s1") as a:
        dead = sink_body("http://127.0.0.1:1/nobody-listens")
        assert (await a.client.put("/v1/event/sink/dead", content=dead)).status_code == 200
        ok = sink_body(receiver.url)
        assert (await a.client.put("/v1/event/sink/ok", content=ok)).status_code == 200
        with trio.fail_after(5):
            ids = [await fire(a, f"e{i}") for i in range(3)]
        await eventually(lambda: len(receiver.accepted) == 3, "the live sink's deliveries")
        assert [b["Events"][0]["Payload"]["ID"] for b in receiver.accepted] == ids
        dead_state = (await a.client.get("/v1/event/sink/dead")).json()
        assert "POST failed" in dead_state["LastError"]


async def test_position_survives_a_restart(receiver: Receiver, tmp_path: Path) -> None:
    host = free_host(ports=())
    async with in_process_agent(host, "s1", data_dir=str(tmp_path)) as a:
        r = await a.client.put("/v1/event/sink/h", content=sink_body(receiver.url))
        assert r.status_code == 200
        await fire(a, "one")
        await fire(a, "two")
        await eventually(lambda: len(receiver.accepted) == 2, "two deliveries")
        receiver.down = True
        await fire(a, "three")  # stored in the bus log, not delivered before the restart
        await eventually(lambda: receiver.attempts >= 3, "a failed attempt")
    saved = json.loads((tmp_path / "sinks.json").read_text())
    assert saved["Sinks"][0]["ID"] == "h"
    receiver.down = False
    async with in_process_agent(host, "s1", data_dir=str(tmp_path)) as a:
        await fire(a, "four")
        await eventually(lambda: len(receiver.accepted) == 4, "the rest", timeout=20)
        await trio.sleep(0.3)
    assert receiver.names() == ["one", "two", "three", "four"]


@pytest.mark.parametrize("path, body, text", [
    ("x", b"{not json", "Request decode failed"),
    ("x", b"[]", "JSON object"),
    ("x", b'{"Topics":{"Event":["*"]},"Address":"http://h/"}', "Type must be"),
    ("x", b'{"Type":"webhook","Topics":{},"Address":"http://h/"}', "Topics must be"),
    ("x", b'{"Type":"webhook","Topics":{"Event":"*"},"Address":"http://h/"}', "non-empty list"),
    ("x", b'{"Type":"webhook","Topics":{"Foo":["*"]},"Address":"http://h/"}',
     "unknown topic 'Foo'"),
    ("x", b'{"Type":"webhook","Topics":{"Event":[""]},"Address":"http://h/"}', "empty key"),
    ("x", b'{"Type":"webhook","Topics":{"Event":["*"]},"Address":"ftp://h/"}', "only http://"),
    ("x", b'{"Type":"webhook","Topics":{"Event":["*"]},"Address":"http:///p"}', "needs http"),
    ("x", b'{"Type":"webhook","Topics":{"Event":["*"]},"Address":"http://h:99999/"}',
     "Invalid Address"),
    ("x", b'{"Type":"webhook","Topics":{"Event":["*"]},"Address":7}', "Address must be"),
    ("x", b'{"Type":"webhook","Topics":{"Event":["*"]},"Address":"http://h/","LatestIndex":-1}',
     "LatestIndex"),
    ("x", b'{"Type":"webhook","Topics":{"Event":["*"]},"Address":"http://h/","Extra":1}',
     "Unknown field"),
    ("x", b'{"ID":"y","Type":"webhook","Topics":{"Event":["*"]},"Address":"http://h/"}',
     "does not match"),
    ("bad%20id", b'{"Type":"webhook","Topics":{"Event":["*"]},"Address":"http://h/"}',
     "Invalid sink ID"),
])
async def test_bad_sink_bodies_are_400_and_store_nothing(tmp_path: Path, path: str, body: bytes,
                                                         text: str) -> None:
    async with in_process_agent(free_host(ports=()), "s1", data_dir=str(tmp_path)) as a:
        r = await a.client.put(f"/v1/event/sink/{path}", content=body)
        assert r.status_code == 400 and text in r.text, r.text
        assert (await a.client.get("/v1/event/sinks")).json() == []
        assert a.agent.sinks.sinks == {}
    assert not (tmp_path / "sinks.json").exists()
