"""Consul's blocking ``GET /v1/event/list?index=`` on a running agent (protocol.md §4.5).

Timing tests run on trio's autojump_clock and call the agent's router directly (a real agent
with its gossip node, fired through ``PUT /v1/event/fire``; only the TCP hop is skipped, since
virtual time and kernel sockets do not mix). The many-waiters and hang-up tests use real
sockets with wall-time bounds instead.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from agent.events import id_to_index
from agent.http.routing import Router
from agent.http.types import LongPoll, Response, make_request
from tests.agent.helpers import InProc, eventually, free_host, in_process_agent

Listed = tuple[int, list[dict[str, Any]], float]  # (index, events, virtual seconds taken)


async def call(router: Router, method: str, target: str, body: bytes = b"") -> Response:
    resp = await router(make_request(method, target, body=body))
    if isinstance(resp, LongPoll):  # what the HTTP shell does with a parked query
        resp = (await resp.polls.wait(resp.key, resp.timeout)).response
    assert isinstance(resp, Response)
    return resp


async def fire(a: InProc, name: str, payload: bytes = b"p") -> str:
    resp = await call(a.router, "PUT", f"/v1/event/fire/{name}", payload)
    assert resp.status == 200, resp.body
    event_id: str = json.loads(resp.body)["ID"]
    return event_id


async def listing(a: InProc, query: str = "") -> Listed:
    t0 = trio.current_time()
    resp = await call(a.router, "GET", "/v1/event/list" + (f"?{query}" if query else ""))
    assert resp.status == 200, resp.body
    index = dict(resp.headers)["X-Consul-Index"]
    return int(index), json.loads(resp.body), trio.current_time() - t0


class Pending:
    """A list request running in the background; ``result`` is set when it returns."""

    def __init__(self) -> None:
        self.result: Listed | None = None
        self.done_at = 0.0

    async def run(self, a: InProc, query: str) -> None:
        self.result = await listing(a, query)
        self.done_at = trio.current_time()


async def test_parks_until_a_matching_event(autojump_clock: Any) -> None:
    async with in_process_agent(free_host(ports=()), "b1") as a:
        first = await fire(a, "deploy")
        index, events, _ = await listing(a, "name=deploy")
        assert index == id_to_index(first) and [e["ID"] for e in events] == [first]
        async with trio.open_nursery() as nursery:
            waiter = Pending()
            nursery.start_soon(waiter.run, a, f"name=deploy&index={index}")
            await eventually(lambda: a.agent.store.parked == 1, "the query to park")
            await trio.sleep(30)
            await fire(a, "other")  # wakes it, but its index is unchanged: parks again
            await trio.sleep(30)
            assert waiter.result is None and a.agent.store.parked == 1
            fired_at = trio.current_time()
            second = await fire(a, "deploy")
        assert waiter.result is not None
        new_index, events, _ = waiter.result
        assert waiter.done_at - fired_at < 0.1
        assert new_index == id_to_index(second)
        assert [e["ID"] for e in events] == [first, second]
        assert a.agent.store.parked == 0


async def test_wait_expiry_returns_same_index_and_list(autojump_clock: Any) -> None:
    async with in_process_agent(free_host(ports=()), "b2") as a:
        await fire(a, "deploy")
        await fire(a, "restart")
        index, events, _ = await listing(a)
        again, same, took = await listing(a, f"index={index}&wait=5s")
        assert (again, same) == (index, events)
        assert 5.0 <= took < 5.1
        # the empty list has index 1, and a client holding 1 blocks on it too
        idx, none, took = await listing(a, "name=nothing&index=1&wait=250ms")
        assert (idx, none) == (1, []) and 0.25 <= took < 0.3
        # no wait -> Consul's 600 s; a longer wait is capped at 600 s; no jitter either way
        for query in (f"index={index}", f"index={index}&wait=20m"):
            again, same, took = await listing(a, query)
            assert (again, same) == (index, events) and 600.0 <= took < 600.1, query


async def test_other_index_returns_at_once(autojump_clock: Any) -> None:
    async with in_process_agent(free_host(ports=()), "b3") as a:
        await fire(a, "deploy")
        index, events, _ = await listing(a)
        for other in (index + 1, index - 1, 1, (1 << 64) - 1):
            got, same, took = await listing(a, f"index={other}&wait=1m")
            assert (got, same, took) == (index, events, 0.0), other
        got, same, took = await listing(a, "index=0&wait=1m")
        assert (got, same, took) == (index, events, 0.0)


async def test_thousand_parked_queries_answered_by_one_event(autojump_clock: Any) -> None:
    async with in_process_agent(free_host(ports=()), "b4") as a:
        await fire(a, "deploy")
        index, _, _ = await listing(a)
        waiters = [Pending() for _ in range(1000)]
        async with trio.open_nursery() as nursery:
            for w in waiters:
                nursery.start_soon(w.run, a, f"index={index}&wait=10m")
            await eventually(lambda: a.agent.store.parked == 1000, "1000 parked queries")
            fired_at = trio.current_time()
            new_id = await fire(a, "deploy")
        assert a.agent.store.parked == 0
        for w in waiters:
            assert w.result is not None and w.result[0] == id_to_index(new_id)
            assert w.result[1][-1]["ID"] == new_id
            assert w.done_at - fired_at < 0.1


async def test_hundred_parked_queries_over_real_sockets() -> None:
    async with in_process_agent(free_host(ports=()), "b5") as a:
        first = (await a.client.put("/v1/event/fire/deploy")).json()["ID"]
        index = id_to_index(first)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        results: list[httpx.Response] = []

        async with httpx.AsyncClient(base_url=a.base_url, limits=limits, timeout=20) as client:
            async def poll() -> None:
                results.append(await client.get("/v1/event/list",
                                                params={"index": index, "wait": "1m"}))

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for _ in range(100):
                        nursery.start_soon(poll)
                    await eventually(lambda: a.agent.store.parked == 100,
                                     "100 parked queries", timeout=15)
                    assert results == []
                    m = await a.client.get("/v1/agent/metrics?format=prometheus")
                    assert "\nrumor_blocking_queries_parked 100\n" in m.text
                    second = (await a.client.put("/v1/event/fire/deploy")).json()["ID"]
        assert len(results) == 100
        for r in results:
            assert r.status_code == 200
            assert r.headers["x-consul-index"] == str(id_to_index(second))
            assert [e["ID"] for e in r.json()] == [first, second]
        assert a.agent.store.parked == 0


async def test_client_hang_up_frees_its_slot() -> None:
    async with in_process_agent(free_host(ports=()), "b6") as a:
        first = (await a.client.put("/v1/event/fire/deploy")).json()["ID"]
        request = (f"GET /v1/event/list?index={id_to_index(first)} HTTP/1.1\r\n"
                   f"Host: {a.host}\r\n\r\n").encode()
        with trio.fail_after(10):
            streams = [await trio.open_tcp_stream(a.host, a.http_port) for _ in range(3)]
            for s in streams:
                await s.send_all(request)
            await eventually(lambda: a.agent.store.parked == 3, "3 parked queries")
            await streams[0].aclose()
            await eventually(lambda: a.agent.store.parked == 2, "a hang-up to free its slot")
            for s in streams[1:]:
                await s.aclose()
            await eventually(lambda: a.agent.store.parked == 0, "every slot freed")
            # the agent still answers normally afterwards
            r = await a.client.get("/v1/event/list")
            assert [e["ID"] for e in r.json()] == [first]
