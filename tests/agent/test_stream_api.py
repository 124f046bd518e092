"""/v1/event/stream (NDJSON and SSE) and the Vault-style WebSocket of an in-process agent.

Real loopback sockets, real client libraries (httpx, httpx-sse, trio-websocket); every wait
bounded with fail_after.  Slow consumers, bad input and the CloudEvents 1.0 attributes too.
"""

from __future__ import annotations

import json
import re
import socket
import tracemalloc
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import trio
import trio_websocket as tw
from httpx_sse import aconnect_sse

from agent.api import stream as stream_api
from agent.bus import Bus, Subscription
from tests.agent.helpers import InProc, eventually, free_host, in_process_agent


@pytest.fixture
async def node() -> AsyncIterator[InProc]:
    async with in_process_agent(free_host(ports=()), "s1") as a:
        await eventually(lambda: a.agent.bus.last_index >= 1, "our own NodeJoin")
        yield a


async def fire(a: InProc, name: str, body: bytes = b"") -> dict[str, Any]:
    r = await a.client.put(f"/v1/event/fire/{name}", content=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def read_lines(a: InProc, n: int, params: Any, timeout: float = 10) -> list[Any]:
    out = []
    with trio.fail_after(timeout):
        async with a.client.stream("GET", "/v1/event/stream", params=params) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "application/json"
            async for line in resp.aiter_lines():
                out.append(json.loads(line))
                if len(out) == n:
                    break
    return out


async def wait_events(a: InProc, n: int) -> None:
    await eventually(lambda: len(a.agent.store) >= n, f"{n} events stored")


async def test_ndjson_disconnect_and_resume_none_missed_none_twice(node: InProc) -> None:
    fired = [await fire(node, f"deploy-{i}", b"v%d" % i) for i in range(3)]
    await wait_events(node, 3)
    got = await read_lines(node, 3, {"topic": "Event"})
    assert [g["Events"][0]["Payload"]["ID"] for g in got] == [f["ID"] for f in fired]
    listed = (await node.client.get("/v1/event/list")).json()
    assert [g["Events"][0]["Payload"] for g in got] == listed  # exactly as the list has it
    assert all(g["Index"] == g["Events"][0]["Index"] for g in got)
    last = got[-1]["Index"]
    more = [await fire(node, f"deploy-{i}") for i in range(3, 5)]
    await wait_events(node, 5)
    resumed = await read_lines(node, 2, {"topic": "Event", "index": str(last)})
    assert [g["Events"][0]["Payload"]["ID"] for g in resumed] == [m["ID"] for m in more]
    # a glob key, and two topics at once
    got = await read_lines(node, 2, [("topic", "Event:deploy-[34]"), ("topic", "Node:s1")])
    assert [g["Events"][0]["Key"] for g in got] == ["s1", "deploy-3"]


async def test_heartbeat_and_gap(node: InProc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_api, "HEARTBEAT", 0.2)
    assert await read_lines(node, 1, {"topic": "Event:nothing-matches"}) == [{}]
    bus: Bus = node.agent.bus
    small = Bus(capacity=2)
    node.agent.bus = small
    for i in range(5):
        small.publish_event({"ID": f"00000000-0000-4000-8000-{i:012d}", "Name": "e"})
    try:
        got = await read_lines(node, 3, {"index": "1"})
    finally:
        node.agent.bus = bus
    gap = got[0]["Events"][0]
    assert (gap["Topic"], gap["Type"], gap["Payload"]) == \
        ("Stream", "Gap", {"Requested": 1, "FirstAvailable": 4})
    assert [g["Index"] for g in got[1:]] == [4, 5]


@pytest.mark.parametrize("query, text", [
    ("topic=Foo", "unknown topic 'Foo'"),
    ("topic=", "empty topic name"),
    ("topic=Event:", "empty key"),
    ("topic=:deploy", "empty topic name"),
    ("index=abc", "Unable to parse index"),
    ("index=-1", "Unable to parse index"),
    ("index=99999999999999999999", "Unable to parse index"),
    ("index=1.5", "Unable to parse index"),
])
async def test_bad_stream_input_is_400_and_subscribes_nothing(node: InProc, query: str,
                                                              text: str) -> None:
    before = (node.agent.bus.last_index, len(node.agent.bus))
    r = await node.client.get(f"/v1/event/stream?{query}")
    assert r.status_code == 400 and text in r.text, r.text
    assert node.agent.bus.subscribers == 0
    assert (node.agent.bus.last_index, len(node.agent.bus)) == before
    r = await node.client.get("/v1/event/stream", headers={"Accept": "text/event-stream",
                                                           "Last-Event-ID": "x1"})
    assert r.status_code == 400 and "Last-Event-ID" in r.text


async def test_sse_with_a_real_sse_client_and_last_event_id(node: InProc) -> None:
    fired = [await fire(node, f"web-{i}") for i in range(3)]
    await wait_events(node, 3)
    seen = []
    with trio.fail_after(10):
        async with aconnect_sse(node.client, "GET", "/v1/event/stream",
                                params={"topic": "Event", "token": "t"}) as es:
            assert es.response.headers["content-type"].startswith("text/event-stream")
            async for sse in es.aiter_sse():
                seen.append(sse)
                if len(seen) == 2:
                    break
    assert [s.event for s in seen] == ["Event", "Event"]
    assert [s.json()["Payload"]["ID"] for s in seen] == [f["ID"] for f in fired[:2]]
    assert [int(s.id) for s in seen] == [s.json()["Index"] for s in seen]
    assert seen[0].retry == 2000
    later = await fire(node, "web-3")
    rest = []
    with trio.fail_after(10):  # what a reconnecting EventSource sends
        async with aconnect_sse(node.client, "GET", "/v1/event/stream?topic=Event&index=0",
                                headers={"Last-Event-ID": seen[-1].id}) as es:
            async for sse in es.aiter_sse():
                rest.append(sse.json()["Payload"]["ID"])
                if len(rest) == 2:
                    break
    assert rest == [fired[2]["ID"], later["ID"]]


async def test_sse_comment_heartbeat(node: InProc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_api, "HEARTBEAT", 0.2)
    with trio.fail_after(10):
        async with node.client.stream("GET", "/v1/event/stream?topic=Event:none",
                                      headers={"Accept": "text/event-stream"}) as resp:
            lines = []
            async for line in resp.aiter_lines():
                lines.append(line)
                if line.startswith(":"):
                    break
    assert lines[-1] == ": heartbeat"


# --- WebSocket + CloudEvents ----------------------------------------------------------------

_ATTR = re.compile(r"^[a-z0-9]{1,20}$")


def assert_cloudevent(doc: dict[str, Any], node_name: str) -> None:
    """Every REQUIRED attribute of CloudEvents 1.0, and the OPTIONAL ones we set, checked."""
    for attr in ("id", "source", "specversion", "type"):
        assert isinstance(doc.get(attr), str) and doc[attr], attr  # non-empty strings
    assert doc["specversion"] == "1.0"
    assert doc["source"] == f"rumor://{node_name}"  # a URI-reference
    assert all(_ATTR.match(k) for k in doc), list(doc)  # attribute naming rule
    assert doc["datacontenttype"] == "application/json"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", doc["time"])  # RFC 3339
    datetime.fromisoformat(doc["time"].replace("Z", "+00:00"))
    data = doc["data"]
    assert set(data) == {"event", "event_type", "payload"}
    assert data["event"]["id"] == doc["id"] and isinstance(data["event"]["metadata"], dict)
    assert data["event_type"] == doc["type"]


async def test_websocket_cloudevents(node: InProc) -> None:
    base = f"ws://{node.host}:{node.http_port}/v1/sys/events/subscribe"
    with trio.fail_after(15):
        async with tw.open_websocket_url(f"{base}/deploy-*?json=true") as ws, \
                tw.open_websocket_url(f"{base}/Node/*?json=true&index=0") as nodes:
            ev = await fire(node, "deploy-web", b"v42")
            await fire(node, "other")
            ev2 = await fire(node, "deploy-db")
            docs = [json.loads(await ws.get_message()) for _ in range(2)]
            join = json.loads(await nodes.get_message())
    for doc in docs:
        assert_cloudevent(doc, "s1")
    assert [d["data"]["payload"]["ID"] for d in docs] == [ev["ID"], ev2["ID"]]
    listed = (await node.client.get("/v1/event/list?name=deploy-web")).json()
    assert docs[0]["data"]["payload"] == listed[0] and docs[0]["type"] == "deploy-web"
    assert int(docs[1]["id"]) > int(docs[0]["id"])
    assert_cloudevent(join, "s1")
    assert join["type"] == "Node/NodeJoin" and join["data"]["payload"]["Name"] == "s1"
    assert join["data"]["payload"] == (await node.client.get("/v1/agent/members")).json()[0]


async def test_websocket_without_json_true_is_400(node: InProc) -> None:
    base = f"ws://{node.host}:{node.http_port}/v1/sys/events/subscribe"
    with trio.fail_after(10):
        with pytest.raises(tw.ConnectionRejected) as rejected:
            async with tw.open_websocket_url(f"{base}/deploy"):
                pass
    assert rejected.value.status_code == 400 and b"json=true" in rejected.value.body
    r = await node.client.get("/v1/sys/events/subscribe/deploy?json=true")
    assert r.status_code == 400 and "WebSocket upgrade" in r.text
    assert node.agent.bus.subscribers == 0


# --- slow consumers -----------------------------------------------------------------------------


async def test_a_stuck_subscriber_is_closed_and_slows_nobody(
        monkeypatch: pytest.MonkeyPatch) -> None:
    subs: list[Subscription] = []
    real = Bus.subscribe

    def spy(self: Bus, *args: Any, **kwargs: Any) -> Subscription:
        sub = real(self, *args, **kwargs)
        subs.append(sub)
        return sub
    monkeypatch.setattr(Bus, "subscribe", spy)
    async with in_process_agent(free_host(ports=()), "s1", stream_buffer=50) as a:
        bus = a.agent.bus
        bus.queue_limit = 16
        # a client that asks for the stream and then never reads (tiny receive buffer)
        stuck = trio.socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await stuck.connect((a.host, a.http_port))
        await stuck.send(b"GET /v1/event/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventually(lambda: bus.subscribers == 1, "the stuck subscriber to go live")
        received: list[int] = []
        async with trio.open_nursery() as nursery:
            async def reader() -> None:
                async with a.client.stream("GET", "/v1/event/stream?index=0") as resp:
                    async for line in resp.aiter_lines():
                        obj = json.loads(line)
                        received.extend(e["Index"] for e in obj.get("Events", []))
            nursery.start_soon(reader)
            await eventually(lambda: bus.subscribers == 2, "the reader to go live")
            tracemalloc.start()
            try:
                big = {"ID": "x", "Name": "big", "Blob": "x" * 32768}
                for i in range(600):  # 19 MB if anybody queued it all
                    r = bus.publish("Event", "UserEvent", "big", big)
                    if i == 300:
                        with trio.fail_after(5):  # a fire is answered meanwhile
                            fired = await fire(a, "meanwhile")
                    await eventually(lambda r=r: bool(received) and received[-1] >= r.index,
                                     "the reader to keep up", timeout=10)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            nursery.cancel_scope.cancel()
        stuck.close()
    assert fired["Name"] == "meanwhile"
    assert received == sorted(set(received)) and len(received) >= 601  # nothing lost or twice
    closed = [s for s in subs if s.done and bus.slow_closed]
    assert bus.slow_closed == 1 and closed
    assert max(s.high_water for s in subs) <= 16
    assert peak < 12_000_000, peak  # the ring (50 x 33 KB) plus renders, not 600 records
