"""Connection admission (agent/http/admission.py) over real loopback sockets: Consul's
per-client cap (429), the total cap that parked long-polls never use up, and running out of
file descriptors in a real agent process with a lowered RLIMIT_NOFILE."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from agent.events import id_to_index
from agent.http import Limits, serve_http
from tests.agent.helpers import (
    HTTP_PORT,
    RUMOR,
    SERF_PORT,
    AgentProcess,
    free_host,
    free_subnet,
    in_process_agent,
    wait_for,
)
from tests.agent.http.test_server import Raw, echo_router

CONSUL_429 = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 81\r\nConnection: close\r\n\r\n"
              b"Your IP is issuing too many concurrent connections, please rate limit your calls\n")
ECHO = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"


Connect = Callable[..., Awaitable[Raw]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open raw clients (host, port, optional source address); all are closed when the test
    ends, whatever the server did with them."""
    opened: list[trio.SocketStream] = []

    async def open_one(host: str, port: int, source: str | None = None) -> Raw:
        stream = await trio.open_tcp_stream(host, port, local_address=source)
        opened.append(stream)
        return Raw(stream)

    yield open_one
    for stream in opened:
        await stream.aclose()


async def test_the_201st_connection_from_one_ip_gets_consuls_429(
    nursery: trio.Nursery, connect: Connect,
) -> None:
    net = free_subnet(2, ports=())
    server, client, other = f"{net}.1", f"{net}.2", f"{net}.3"
    port = await nursery.start(partial(serve_http, echo_router(), server, 0))
    with trio.fail_after(30):
        first = [await connect(server, port, client) for _ in range(200)]
        for raw in first:
            await raw.send(ECHO)
            assert (await raw.response())[0] == 200
        extra = await connect(server, port, client)
        await extra.send(ECHO)
        with trio.move_on_after(10):
            while True:
                try:
                    await extra._more()
                except EOFError:
                    break
        assert bytes(extra.buf) == CONSUL_429  # then closed
        for raw in first:  # the first 200 are still served
            await raw.send(ECHO)
            assert (await raw.response())[0] == 200
        elsewhere = await connect(server, port, other)  # another client IP is not limited
        await elsewhere.send(ECHO)
        assert (await elsewhere.response())[0] == 200
        await first[0].stream.aclose()
        with trio.move_on_after(5):  # the server notices the close; then there is room
            while True:
                again = await connect(server, port, client)
                await again.send(ECHO)
                status = (await again.response())[0]
                if status == 200:
                    break
                await trio.sleep(0.05)
        assert status == 200


async def test_busy_at_the_total_cap_the_newcomer_gets_503(
    nursery: trio.Nursery, connect: Connect,
) -> None:
    release = trio.Event()

    async def slow(req: object) -> object:
        await release.wait()
        return await echo_router()(req)  # type: ignore[arg-type]

    port = await nursery.start(partial(serve_http, slow, "127.0.0.1", 0,
                                       limits=Limits(max_connections=1)))
    with trio.fail_after(10):
        busy = await connect("127.0.0.1", port)
        await busy.send(ECHO)
        await trio.sleep(0.2)  # the handler is running: nothing can be closed for room
        late = await connect("127.0.0.1", port)
        status, _, body = await late.response()
        assert status == 503 and b"Too many open connections (the limit is 1)" in body
        release.set()
        assert (await busy.response())[0] == 200


async def test_with_the_parked_cap_reached_a_new_clients_fire_is_answered_and_wakes_all(
    connect: Connect,
) -> None:
    parked_cap = 40
    limits = Limits(max_parked=parked_cap, max_connections=parked_cap + 3)
    host = free_host(ports=())
    async with in_process_agent(host, "cap", limits=limits) as a:
        first = (await a.client.put("/v1/event/fire/deploy")).json()["ID"]
        poll = (f"GET /v1/event/list?index={id_to_index(first)}&wait=60s HTTP/1.1\r\n"
                f"Host: {host}\r\n\r\n").encode()
        with trio.fail_after(30):
            parked = [await connect(host, a.http_port) for _ in range(parked_cap)]
            for raw in parked:
                await raw.send(poll)
            while a.agent.store.parked < parked_cap:
                await trio.sleep(0.01)
            idle = [await connect(host, a.http_port) for _ in range(3)]  # now at the total cap
            for raw in idle:
                await raw.send(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await raw.response())[0] == 200
            one_more = await connect(host, a.http_port)
            await one_more.send(poll)
            status, _, body = await one_more.response()
            assert status == 503 and b"blocking queries parked" in body
            # a new client (a new connection) fires: accepted, answered, and wakes every one
            fire = await connect(host, a.http_port)
            await fire.send(b"PUT /v1/event/fire/deploy HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 2\r\n\r\nv2")
            status, _, body = await fire.response()
            assert status == 200
            second = id_to_index(__import__("json").loads(body)["ID"])
            for raw in parked:
                status, headers, _ = await raw.response()
                assert status == 200 and headers["x-consul-index"] == str(second)
            closed = 0
            for raw in idle:
                with trio.move_on_after(1):
                    closed += await raw.at_eof()
            assert closed >= 1  # the idle keep-alive connections made room
            metrics = (await a.client.get("/v1/agent/metrics?format=prometheus")).text
            assert f"\nrumor_blocking_fanout_last_answered {parked_cap}\n" in metrics


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


async def test_out_of_file_descriptors_neither_hangs_nor_crashes_the_agent(
    tmp_path: Path, connect: Connect,
) -> None:
    host = free_host()
    agent = AgentProcess("fds", host, tmp_path / "fds")
    argv = [*RUMOR, "agent", f"-node={agent.name}", f"-bind={host}",
            f"-serf-lan-port={SERF_PORT}", f"-client={host}", f"-http-port={HTTP_PORT}",
            f"-data-dir={agent.data_dir}"]
    with open(agent.log_path, "ab") as log:
        agent.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=_low_fd_limit)
    try:
        await trio.to_thread.run_sync(agent.wait_ready)
        first = agent.fire("deploy").json()["ID"]
        poll = (f"GET /v1/event/list?index={id_to_index(first)}&wait=60s HTTP/1.1\r\n"
                f"Host: {host}\r\n\r\n").encode()
        outcomes: list[str] = []

        async def one(raw: Raw) -> None:
            try:
                await raw.send(poll)
                status, _, body = await raw.response()
                outcomes.append(f"{status}")
            except (EOFError, trio.BrokenResourceError, OSError):
                outcomes.append("closed")

        with trio.fail_after(60):
            raws = [await connect(host, HTTP_PORT) for _ in range(100)]  # the agent has 64
            async with trio.open_nursery() as nursery:
                for raw in raws:
                    nursery.start_soon(one, raw)
                with trio.move_on_after(3):  # let every connection be accepted or refused
                    while len(outcomes) < 30:
                        await trio.sleep(0.05)
                assert agent.proc.poll() is None, agent.log_tail()
                assert "503" in outcomes or "closed" in outcomes, outcomes
                # the agent still takes a fire (a spare descriptor or a freed one serves it)
                reply = await trio.to_thread.run_sync(
                    lambda: wait_for(lambda: _try_fire(agent), 20, "a fire to be answered"))
                assert reply == 200
                # which answers every query still parked; nobody is left hanging
        assert len(outcomes) == 100
        assert set(outcomes) <= {"200", "503", "closed"}, outcomes
        for raw in raws:
            await raw.stream.aclose()
        assert "accept failed" in agent.log_path.read_text()
        assert agent.get_json("/v1/agent/self")["Config"]["NodeName"] == "fds"
        assert agent.proc.poll() is None
    finally:
        agent.stop()


def _try_fire(agent: AgentProcess) -> int | None:
    try:
        status = agent.fire("deploy", b"again").status
    except OSError:
        return None
    return status if status == 200 else None


if sys.platform != "linux":  # RLIMIT_NOFILE + preexec_fn are POSIX; epoll is Linux
    del test_out_of_file_descriptors_neither_hangs_nor_crashes_the_agent


async def test_at_the_total_cap_the_oldest_parked_query_is_answered_early(
    nursery: trio.Nursery, connect: Connect,
) -> None:
    from tests.agent.http.test_fanout import Topics, get, parked, serve

    topics = Topics()
    port = await serve(nursery, topics, max_connections=3)
    with trio.fail_after(10):
        polls = []
        for _ in range(3):
            raw = await connect("127.0.0.1", port)
            await raw.send(get("a", 0))
            polls.append(raw)
            await parked(topics, len(polls))  # so that polls[0] is the oldest
        newcomer = await connect("127.0.0.1", port)
        await newcomer.send(get("b", 5))  # changed at once: answered, not parked
        status, _, body = await newcomer.response()
        assert (status, body) == (200, b"b=0;")
        status, headers, body = await polls[0].response()  # as things stand, then closed
        assert (status, body, headers["connection"]) == (200, b"a=0;", "close")
        assert await polls[0].at_eof()
        assert topics.polls.parked == 2
        topics.bump("a")
        for raw in polls[1:]:
            assert (await raw.response())[2] == b"a=1;"
