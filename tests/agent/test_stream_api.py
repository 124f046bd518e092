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

import h11
import pytest
import trio
import trio_websocket as tw
from httpx_sse import aconnect_sse

from agent.bus import Bus, Subscription
from tests.agent.helpers import (
    InProc,
    eventually,
    finished,
    free_host,
    in_process_agent,
    prometheus,
    raw_http,
)


@pytest.fixture
async def node() -> AsyncIterator[InProc]:
    async with in_process_agent(free_host(ports=()), "s1") as a:
        await eventually(lambda: len(a.agent.bus) >= 1, "our own NodeJoin")
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
            async with finished(resp, resp.aiter_lines()) as lines:
                async for line in lines:
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


async def test_heartbeat_and_gap(node: InProc) -> None:
    node.agent.bus.heartbeat_interval = 0.2
    assert await read_lines(node, 1, {"topic": "Event:nothing-matches"}) == [{}]
    bus: Bus = node.agent.bus
    small = Bus(capacity=2, start=1)
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
            async with finished(es.response, es.aiter_sse()) as events:
                async for sse in events:
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
            async with finished(es.response, es.aiter_sse()) as events:
                async for sse in events:
                    rest.append(sse.json()["Payload"]["ID"])
                    if len(rest) == 2:
                        break
    assert rest == [fired[2]["ID"], later["ID"]]


async def test_sse_comment_heartbeat(node: InProc) -> None:
    node.agent.bus.heartbeat_interval = 0.2
    with trio.fail_after(10):
        async with node.client.stream("GET", "/v1/event/stream?topic=Event:none",
                                      headers={"Accept": "text/event-stream"}) as resp:
            lines = []
            async with finished(resp, resp.aiter_lines()) as stream:
                async for line in stream:
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
    # the upgrade request a WebSocket client sends, over a raw socket: trio-websocket 0.12.2
    # raises ConnectionRejected from its reader task without ever closing its TCP stream
    rejected = await raw_http(node.host, node.http_port,
                              b"GET /v1/sys/events/subscribe/deploy HTTP/1.1\r\nHost: x\r\n"
                              b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert rejected.status == 400 and b"json=true" in rejected.body
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
                    async with finished(resp, resp.aiter_lines()) as lines:
                        async for line in lines:
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
        # now read what the stuck client was sent: intact chunked framing (records were
        # written straight to its socket, some only in part), ending with the Closed record
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        body = bytearray()
        with trio.fail_after(30):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stuck.recv(65536))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
        stuck.close()
        lines = [json.loads(x) for x in bytes(body).splitlines()]
        last = lines[-1]["Events"][0]
        assert (last["Topic"], last["Type"]) == ("Stream", "Closed")
        got = [x["Index"] for x in lines[:-1]]
        assert got == list(range(got[0], got[0] + len(got)))
        assert last["Payload"]["LastIndex"] == got[-1] == last["Index"]
        assert bus.direct_writes > 600  # the fan-out wrote straight to the sockets
        assert bus.direct_partial >= 1  # and finished a frame the socket took only in part
        metrics = prometheus((await a.client.get("/v1/agent/metrics?format=prometheus")).text)
        assert metrics["rumor_stream_slow_closed_total"] == 1
        assert metrics["rumor_stream_direct_writes_total"] == bus.direct_writes
    assert fired["Name"] == "meanwhile"
    assert received == sorted(set(received)) and len(received) >= 601  # nothing lost or twice
    closed = [s for s in subs if s.done and bus.slow_closed]
    assert bus.slow_closed == 1 and closed
    assert max(s.high_water for s in subs) <= 16
    assert peak < 12_000_000, peak  # the ring (50 x 33 KB) plus renders, not 600 records


async def test_a_stuck_websocket_reader_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.http import websocket

    monkeypatch.setattr(websocket, "SEND_TIMEOUT", 0.5)
    async with in_process_agent(free_host(ports=()), "s1", stream_buffer=50) as a:
        bus = a.agent.bus
        stuck = trio.socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await stuck.connect((a.host, a.http_port))
        await stuck.send(b"GET /v1/sys/events/subscribe/*?json=true HTTP/1.1\r\nHost: x\r\n"
                         b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
        await eventually(lambda: bus.subscribers == 1, "the WebSocket to subscribe")
        big = {"ID": "x", "Name": "big", "Blob": "x" * 32768}
        with trio.fail_after(30):
            while bus.subscribers:  # it never reads: the agent gives up on it
                bus.publish("Event", "UserEvent", "big", big)
                await trio.sleep(0.01)
        assert bus.slow_closed == 0  # dropped by the write timeout, not by its queue
        data = b""
        with trio.fail_after(10):
            while True:
                try:
                    chunk = await stuck.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
        stuck.close()
    assert data.startswith(b"HTTP/1.1 101") and b"Stream/Closed" not in data


async def test_http10_stream_is_not_chunked_and_never_written_directly(node: InProc) -> None:
    sock = trio.socket.socket()
    await sock.connect((node.host, node.http_port))
    await sock.send(b"GET /v1/event/stream?topic=Event HTTP/1.0\r\n\r\n")
    await eventually(lambda: node.agent.bus.subscribers == 1, "the subscriber to go live")
    before = node.agent.bus.direct_writes
    ev = await fire(node, "old-client")
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
            data += await sock.recv(65536)
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    line = json.loads(body)  # exactly one NDJSON line, no chunk framing
    assert line["Events"][0]["Payload"]["ID"] == ev["ID"]
    assert node.agent.bus.direct_writes == before


async def test_the_acl_hook_sees_the_token_and_filters_records(node: InProc) -> None:
    tokens: list[str | None] = []

    def access(token: str | None) -> Any:
        tokens.append(token)
        return lambda r: r.topic != "Event" or r.key != "secret" or token == "root"
    node.agent.bus.access = access
    await fire(node, "secret")
    last = await fire(node, "public")
    await wait_events(node, 2)
    got = await read_lines(node, 1, {"topic": "Event", "token": "anon"})
    assert got[0]["Events"][0]["Key"] == "public"
    got = await read_lines(node, 2, {"topic": "Event", "token": "root"})
    assert [g["Events"][0]["Key"] for g in got] == ["secret", "public"]
    with trio.fail_after(10):
        async with aconnect_sse(node.client, "GET", "/v1/event/stream?topic=Event",
                                headers={"Authorization": "Bearer b1"}) as es:
            async with finished(es.response, es.aiter_sse()) as events:
                async for sse in events:
                    assert sse.json()["Payload"]["ID"] == last["ID"]
                    break
    base = f"ws://{node.host}:{node.http_port}/v1/sys/events/subscribe"
    with trio.fail_after(10):
        async with tw.open_websocket_url(f"{base}/*?json=true&index=0",
                                         extra_headers=[("X-Consul-Token", "h")]) as ws:
            types = [json.loads(await ws.get_message())["type"] for _ in range(2)]
    assert types == ["Node/NodeJoin", "public"]  # "secret" (between them) withheld
    assert tokens == ["anon", "root", "b1", "h"]
