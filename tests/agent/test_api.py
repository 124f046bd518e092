"""The Consul-compatible HTTP API of an in-process agent, over real loopback sockets.

Covers seed 002's curl lines verbatim (real curl, and the same bytes without curl), Consul's
response shapes, every kind of bad input (a clear 4xx, and nothing broadcast), and the
``/v1/agent/*`` endpoints: members, self, join, leave, force-leave, services, metrics, monitor.
No autojump_clock here: real sockets are involved, so waits are bounded with fail_after.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.config import ConfigError, load_config
from agent.events import id_to_index
from agent.http.types import StreamResponse, make_request
from agent.logs import MonitorHub
from tests.agent.helpers import (
    HTTP_PORT,
    InProc,
    eventually,
    free_host,
    in_process_agent,
    prometheus,
    random_subnet,
    raw_http,
)

KEYS = ["ID", "Name", "Payload", "NodeFilter", "ServiceFilter", "TagFilter", "Version", "LTime"]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LOREM = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit..."


def assert_event_shape(ev: Any) -> None:
    assert isinstance(ev, dict) and list(ev) == KEYS, ev
    assert UUID.match(ev["ID"]), ev
    assert isinstance(ev["Name"], str)
    assert ev["Payload"] is None or isinstance(ev["Payload"], str)
    for key in ("NodeFilter", "ServiceFilter", "TagFilter"):
        assert isinstance(ev[key], str)
    assert ev["Version"] == 1 and type(ev["LTime"]) is int


@pytest.fixture
async def pair() -> AsyncIterator[tuple[InProc, InProc]]:
    """Two in-process agents on one random /24, joined."""
    net = random_subnet()
    async with in_process_agent(f"{net}.1", "a1") as a, \
            in_process_agent(f"{net}.2", "a2") as b:
        with trio.fail_after(10):
            assert await b.agent.join([a.serf_addr]) == 1
        await eventually(lambda: len(a.agent.node.members()) == 2, "a1 to see a2")
        yield a, b


async def close_unread(chunks: AsyncIterator[bytes]) -> None:
    """What the HTTP shell does with a stream it stops reading: call its aclose()."""
    aclose = getattr(chunks, "aclose", None)
    assert aclose is not None
    await aclose()


async def metric(node: InProc, name: str) -> float:
    r = await node.client.get("/v1/agent/metrics", params={"format": "prometheus"})
    assert r.status_code == 200
    return prometheus(r.text)[name]


# ---- the seed's curl lines --------------------------------------------------------------------


async def test_gossip_port_zero_is_reported_as_the_bound_port() -> None:
    async with in_process_agent(free_host(ports=()), "zero") as a:
        port = a.agent.node.port
        assert port != 0
        members = (await a.client.get("/v1/agent/members")).json()
        assert [(m["Name"], m["Port"]) for m in members] == [("zero", port)]
        me = (await a.client.get("/v1/agent/self")).json()
        assert me["Member"]["Port"] == port and me["DebugConfig"]["SerfLANPort"] == port


async def test_seed_curl_lines_verbatim(tmp_path: Path) -> None:
    """`curl --request PUT --data @payload http://HOST:8500/v1/event/fire/my-event` and
    `curl http://HOST:8500/v1/event/list`, HOST a free loopback address with 8500 free."""
    host = free_host(ports=(HTTP_PORT,))
    (tmp_path / "payload").write_bytes(LOREM + b"\n")  # curl --data @file strips newlines
    async with in_process_agent(host, "seed", http_port=HTTP_PORT) as a:
        base = f"http://{host}:{HTTP_PORT}"
        fired: list[dict[str, Any]] = []
        curl = shutil.which("curl")
        if curl is not None:
            with trio.fail_after(10):
                out = await trio.run_process(
                    [curl, "--silent", "--show-error", "--include", "--request", "PUT",
                     "--data", "@payload", f"{base}/v1/event/fire/my-event"],
                    cwd=tmp_path, capture_stdout=True)
            head, _, body = out.stdout.decode().partition("\r\n\r\n")
            assert head.startswith("HTTP/1.1 200"), head
            assert "x-consul-index" not in head.lower()
            ev = json.loads(body)
            assert_event_shape(ev)
            assert ev["Name"] == "my-event" and ev["LTime"] == 0
            assert base64.b64decode(ev["Payload"]) == LOREM
            fired.append(ev)

        # the same request, byte for byte as curl 7/8 sends it
        request = (f"PUT /v1/event/fire/my-event HTTP/1.1\r\nHost: {host}:{HTTP_PORT}\r\n"
                   "User-Agent: curl/7.88.1\r\nAccept: */*\r\n"
                   f"Content-Length: {len(LOREM)}\r\n"
                   "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode() + LOREM
        r = await raw_http(host, HTTP_PORT, request)
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        assert "x-consul-index" not in r.headers
        ev = r.json()
        assert_event_shape(ev)
        assert ev["Name"] == "my-event" and ev["LTime"] == 0
        assert base64.b64decode(ev["Payload"]) == LOREM
        fired.append(ev)

        # no body at all -> Payload null (the seed's sample response)
        r = await raw_http(host, HTTP_PORT, (
            f"PUT /v1/event/fire/deploy HTTP/1.1\r\nHost: {host}:{HTTP_PORT}\r\n"
            "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n").encode())
        assert r.status == 200
        assert r.json()["Payload"] is None and r.json()["Name"] == "deploy"
        fired.append(r.json())

        list_request = (f"GET /v1/event/list HTTP/1.1\r\nHost: {host}:{HTTP_PORT}\r\n"
                        "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n").encode()
        if curl is not None:
            with trio.fail_after(10):
                out = await trio.run_process([curl, "--silent", "--show-error", "--include",
                                              f"{base}/v1/event/list"], capture_stdout=True)
            head, _, body = out.stdout.decode().partition("\r\n\r\n")
            assert head.startswith("HTTP/1.1 200"), head
        r = await raw_http(host, HTTP_PORT, list_request)
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        listed = r.json()
        assert [e["ID"] for e in listed] == [e["ID"] for e in fired]
        for got, sent in zip(listed, fired, strict=True):
            assert_event_shape(got)
            assert got["LTime"] > 0  # stamped on receipt
            assert {**got, "LTime": 0} == sent
        assert r.headers["x-consul-index"] == str(id_to_index(fired[-1]["ID"]))
        if curl is not None:
            assert body.encode() == r.body  # curl saw exactly what the raw client saw
        assert [e.id for e in a.agent.store] == [e["ID"] for e in fired]


# ---- bad input: one clear 4xx, nothing broadcast ---------------------------------------------

BAD_FIRES: list[tuple[str, bytes, int, str]] = [
    ("/v1/event/fire/", b"", 400, "Missing name"),
    ("/v1/event/fire/_internal", b"", 400, "reserved"),
    ("/v1/event/fire/_rexec", b"x", 400, "reserved"),
    ("/v1/event/fire/big", b"x" * 513, 413, "512"),
    ("/v1/event/fire/big", b"x" * 470, 413, "512"),  # fits, but not with name + envelope
    ("/v1/event/fire/x?node=[", b"", 400, "node"),
    ("/v1/event/fire/x?service=(", b"", 400, "service"),
    ("/v1/event/fire/x?service=web&tag=[", b"", 400, "tag"),
    ("/v1/event/fire/x?tag=v1", b"", 400, "Cannot provide tag filter without service filter"),
    ("/v1/event/fire/x?dc=elsewhere", b"", 400, "elsewhere"),
]
BAD_LISTS: list[tuple[str, str]] = [
    ("index=abc", "Invalid index"),
    ("index=-1", "Invalid index"),
    ("index=18446744073709551616", "Invalid index"),
    ("index=%D9%A3", "Invalid index"),  # an Arabic-Indic 3: str.isdigit() says yes, Go no
    ("index=%C2%B2", "Invalid index"),  # a superscript 2: isdigit() but int() raises
    ("index=%2B5", "Invalid index"),
    ("index=1&wait=5", "Invalid wait time"),
    ("index=1&wait=abc", "Invalid wait time"),
    ("wait=1x", "Invalid wait time"),
]


async def test_bad_input_is_refused_and_nothing_is_broadcast(
        pair: tuple[InProc, InProc]) -> None:
    a, b = pair
    for target, body, status, text in BAD_FIRES:
        r = await a.client.put(target, content=body)
        assert (r.status_code, text in r.text) == (status, True), (target, r.text)
        assert r.headers["content-type"].startswith("text/plain")
    for query, text in BAD_LISTS:
        r = await a.client.get(f"/v1/event/list?{query}")
        assert (r.status_code, r.text) == (400, text), query
    assert (await a.client.get("/v1/event/fire/x")).status_code == 405
    assert (await a.client.put("/v1/event/list")).status_code == 405
    assert await metric(a, "rumor_events_fired_total") == 0
    assert a.agent.node.stats().events_fired == 0
    assert len(a.agent.store) == 0

    # a good event afterwards is the only one the peer ever gets
    r = await a.client.put("/v1/event/fire/good?dc=dc1", content=b"ok")
    assert r.status_code == 200, r.text
    await eventually(lambda: len(b.agent.store) > 0, "a2 to receive the good event")
    assert [e["Name"] for e in (await b.client.get("/v1/event/list")).json()] == ["good"]
    assert await metric(a, "rumor_events_fired_total") == 1
    assert await metric(b, "rumor_events_received_total") == 1


async def test_payload_limit_is_configurable_up_to_9216() -> None:
    host = free_host(ports=())
    async with in_process_agent(host, "big", event_size_limit=9216) as a:
        r = await a.client.put("/v1/event/fire/big", content=b"y" * 3000)
        assert r.status_code == 200, r.text
        assert base64.b64decode(r.json()["Payload"]) == b"y" * 3000
        assert [e.name for e in a.agent.store] == ["big"]
        r = await a.client.put("/v1/event/fire/big", content=b"y" * 9217)
        assert r.status_code == 413 and "9216" in r.text
        assert len(a.agent.store) == 1
    assert load_config(["-event-size-limit=9216"], {}).event_size_limit == 9216
    with pytest.raises(ConfigError, match="9216"):
        load_config(["-event-size-limit=9217"], {})


async def test_list_name_filter_and_pretty(pair: tuple[InProc, InProc]) -> None:
    a, _ = pair
    ids = [(await a.client.put(f"/v1/event/fire/{n}", content=b"p")).json()["ID"]
           for n in ("deploy", "restart", "deploy")]
    r = await a.client.get("/v1/event/list", params={"name": "deploy"})
    assert [e["ID"] for e in r.json()] == [ids[0], ids[2]]
    assert r.headers["x-consul-index"] == str(id_to_index(ids[2]))
    r = await a.client.get("/v1/event/list", params={"name": "nothing"})
    assert r.json() == [] and r.headers["x-consul-index"] == "1"
    # node/service/tag are accepted and ignored by list, as in Consul
    r = await a.client.get("/v1/event/list", params={"node": "[", "name": "restart"})
    assert [e["ID"] for e in r.json()] == [ids[1]]
    r = await a.client.get("/v1/event/list?pretty")
    assert r.text.startswith("[\n    {\n") and json.loads(r.text) == (
        await a.client.get("/v1/event/list")).json()


async def test_list_keeps_the_newest_256_in_arrival_order() -> None:
    async with in_process_agent(free_host(ports=()), "cap") as a:
        ids = [(await a.client.put(f"/v1/event/fire/e{i}")).json()["ID"] for i in range(260)]
        r = await a.client.get("/v1/event/list")
        assert [e["ID"] for e in r.json()] == ids[4:]
        assert r.headers["x-consul-index"] == str(id_to_index(ids[-1]))
        r = await a.client.get("/v1/event/list", params={"name": "e2"})
        assert (r.json(), r.headers["x-consul-index"]) == ([], "1")


# ---- /v1/agent/* ----------------------------------------------------------------------------


async def test_members_self_and_join(pair: tuple[InProc, InProc]) -> None:
    a, b = pair
    members = (await a.client.get("/v1/agent/members")).json()
    assert [m["Name"] for m in members] == ["a1", "a2"]
    for m in members:
        assert list(m) == ["Name", "Addr", "Port", "Tags", "Status", "ProtocolMin",
                           "ProtocolMax", "ProtocolCur", "DelegateMin", "DelegateMax",
                           "DelegateCur"]
        assert m["Status"] == 1 and m["Tags"]["dc"] == "dc1" and m["Tags"]["role"] == "node"
    assert (members[1]["Addr"], members[1]["Port"]) == (b.host, b.agent.node.port)
    me = (await b.client.get("/v1/agent/self")).json()
    assert me["Config"]["NodeName"] == "a2" and me["Config"]["Datacenter"] == "dc1"
    assert me["Member"]["Name"] == "a2"

    net = a.host.rsplit(".", 1)[0]
    async with in_process_agent(f"{net}.3", "a3") as c:
        r = await c.client.put(f"/v1/agent/join/{a.serf_addr}")
        assert (r.status_code, r.text) == (200, "")  # Consul: empty body
        await eventually(lambda: len(b.agent.node.members()) == 3, "a2 to see a3")
        r = await c.client.put(f"/v1/agent/join/{a.host}:9")
        assert r.status_code == 500 and f"{a.host}:9" in r.text
        assert (await c.client.put("/v1/agent/join/")).status_code == 400


async def test_leave_and_force_leave(pair: tuple[InProc, InProc]) -> None:
    a, b = pair

    def status_on_a(name: str) -> int:
        return next(m.status for m in a.agent.node.members() if m.name == name)

    r = await a.client.put("/v1/agent/force-leave/nobody")
    assert r.status_code == 404 and "nobody" in r.text
    assert (await a.client.put("/v1/agent/force-leave/")).status_code == 400
    r = await b.client.put("/v1/agent/leave")
    assert (r.status_code, r.text) == (200, "")  # Consul: empty body
    assert b.agent.shutdown.is_set()
    await eventually(lambda: status_on_a("a2") == 3, "a1 to see a2 left")
    r = await a.client.put("/v1/agent/force-leave/a2?prune")
    assert r.status_code == 200
    await eventually(lambda: [m.name for m in a.agent.node.members()] == ["a1"], "a2 pruned")


async def test_services_register_and_deregister(pair: tuple[InProc, InProc]) -> None:
    a, _ = pair
    assert (await a.client.get("/v1/agent/services")).json() == {}
    r = await a.client.put("/v1/agent/service/register", json={
        "Name": "web", "ID": "web-1", "Tags": ["v1", "primary"], "Port": 8080,
        "Address": "10.0.0.1", "Meta": {"team": "a"}})
    assert (r.status_code, r.text) == (200, "")  # Consul: empty body
    r = await a.client.put("/v1/agent/service/register", json={"Name": "db"})
    assert r.status_code == 200
    services = (await a.client.get("/v1/agent/services")).json()
    assert list(services) == ["db", "web-1"]
    assert services["web-1"] == {"ID": "web-1", "Service": "web", "Tags": ["v1", "primary"],
                                 "Meta": {"team": "a"}, "Port": 8080, "Address": "10.0.0.1",
                                 "Weights": {"Passing": 1, "Warning": 1},
                                 "EnableTagOverride": False, "Datacenter": "dc1"}
    assert services["db"]["ID"] == "db" and services["db"]["Tags"] == []
    for bad in (b"{", b"[]", b'{"Name": ""}', b'{"Name": "x", "Port": "80"}'):
        r = await a.client.put("/v1/agent/service/register", content=bad)
        assert r.status_code == 400, bad
    assert list((await a.client.get("/v1/agent/services")).json()) == ["db", "web-1"]
    assert (await a.client.put("/v1/agent/service/deregister/web-1")).status_code == 200
    r = await a.client.put("/v1/agent/service/deregister/web-1")
    assert r.status_code == 404 and "web-1" in r.text
    assert list((await a.client.get("/v1/agent/services")).json()) == ["db"]


async def test_metrics_json_and_prometheus_move(pair: tuple[InProc, InProc]) -> None:
    a, b = pair
    doc = (await a.client.get("/v1/agent/metrics")).json()
    assert list(doc) == ["Timestamp", "Gauges", "Points", "Counters", "Samples"]
    gauges = {g["Name"]: g["Value"] for g in doc["Gauges"]}
    counters = {c["Name"]: c["Count"] for c in doc["Counters"]}
    assert gauges["rumor_members_alive"] == 2 and gauges["rumor_events_buffered"] == 0
    assert counters["rumor_events_fired_total"] == 0
    r = await a.client.get("/v1/agent/metrics", params={"format": "prometheus"})
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE rumor_events_fired_total counter" in r.text
    assert "# TYPE rumor_members_alive gauge" in r.text
    before = prometheus(r.text)
    assert set(before) == set(gauges) | set(counters)

    for _ in range(3):
        assert (await a.client.put("/v1/event/fire/m", content=b"1")).status_code == 200
    await eventually(lambda: len(b.agent.store) == 3, "a2 to receive 3 events")
    after = prometheus((await a.client.get("/v1/agent/metrics?format=prometheus")).text)
    assert after["rumor_events_fired_total"] == 3
    assert after["rumor_events_stored_total"] == 3 and after["rumor_events_buffered"] == 3
    assert after["rumor_event_clock"] > before["rumor_event_clock"]
    assert after["rumor_packets_out_total"] > before["rumor_packets_out_total"]
    assert after["rumor_bytes_out_total"] > before["rumor_bytes_out_total"]
    assert await metric(b, "rumor_events_received_total") == 3


async def test_monitor_streams_log_lines() -> None:
    hub = MonitorHub()
    logger = logging.getLogger("rumor")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(hub)
    try:
        net = random_subnet()
        async with in_process_agent(f"{net}.1", "m1", hub=hub) as a, \
                in_process_agent(f"{net}.2", "m2") as b:
            r = await a.client.get("/v1/agent/monitor?loglevel=nonsense")
            assert r.status_code == 400
            with trio.fail_after(10):
                # read the chunked stream off a raw socket: httpx's line iterator would leave
                # its nested async generators for the garbage collector once we stop reading
                async with await trio.open_tcp_stream(a.host, a.http_port) as conn:
                    await conn.send_all(b"GET /v1/agent/monitor?loglevel=info HTTP/1.1\r\n"
                                        b"Host: x\r\n\r\n")
                    got = b""
                    while b"\r\n\r\n" not in got:
                        got += await conn.receive_some()
                    assert got.startswith(b"HTTP/1.1 200 "), got
                    await eventually(lambda: len(hub._subs) == 1, "the monitor to subscribe")
                    assert (await a.client.put(f"/v1/agent/join/{b.serf_addr}")).status_code \
                        == 200
                    while not re.search(rb"joined[^\n]*\n", got):
                        got += await conn.receive_some()
            line = next(x for x in re.split(r"\r?\n", got.decode()) if "joined" in x)
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[INFO\] ", line), line
            assert b.serf_addr in line
            await eventually(lambda: not hub._subs, "the monitor to unsubscribe on hang-up")
            # a stream that is never read (HEAD, or a client gone before the first line)
            # must not leave a subscriber behind
            r = await a.client.head("/v1/agent/monitor")
            assert r.status_code == 200 and r.content == b""
            stream = await a.router(make_request("GET", "/v1/agent/monitor"))
            assert isinstance(stream, StreamResponse)
            await close_unread(stream.chunks)
            await eventually(lambda: not hub._subs, "unread monitor streams to unsubscribe")
    finally:
        logger.removeHandler(hub)
        logger.setLevel(old_level)
