"""Parked long-polls answered by one broadcast (agent/http/fanout.py), over real sockets.

A test LongPolls keyed by topic: `state[topic]` is the version a parked request waits past.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from functools import partial

import pytest
import trio

from agent.http import Limits, Request, Response, fanout, serve_http
from agent.http.fanout import LongPolls, response_bytes
from agent.http.types import AnyResponse, LongPoll
from tests.agent.http.test_server import Raw


class Topics:
    def __init__(self) -> None:
        self.version: dict[str, int] = {}
        self.body_size = 0  # extra bytes in each answer (to force partial writes)
        self.renders = 0
        self.polls = LongPolls(self.changed, self.render)

    def changed(self, key: Hashable) -> bool:
        topic, seen = key  # type: ignore[misc]
        return self.version.get(topic, 0) != seen

    def render(self, key: Hashable) -> Response:
        topic, _ = key  # type: ignore[misc]
        self.renders += 1
        body = b"%s=%d;" % (topic.encode(), self.version.get(topic, 0)) + b"x" * self.body_size
        return Response(200, body, [("X-Version", str(self.version.get(topic, 0)))])

    def bump(self, topic: str) -> None:
        self.version[topic] = self.version.get(topic, 0) + 1
        self.polls.notify()

    async def handler(self, req: Request) -> AnyResponse:
        topic = req.arg("t") or ""
        seen = int(req.arg("v") or 0)
        if self.version.get(topic, 0) == seen:
            return LongPoll(self.polls, (topic, seen), float(req.arg("wait") or 60))
        return self.render((topic, seen))


async def serve(nursery: trio.Nursery, topics: Topics, **limits: int) -> int:
    return int(await nursery.start(partial(
        serve_http, topics.handler, "127.0.0.1", 0, limits=Limits(**limits))))


Connect = Callable[[int], Awaitable[Raw]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open raw clients to 127.0.0.1:port; all are closed when the test ends."""
    opened: list[trio.SocketStream] = []

    async def open_one(port: int) -> Raw:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        opened.append(stream)
        return Raw(stream)

    yield open_one
    for stream in opened:
        await stream.aclose()


def get(topic: str, seen: int, extra: bytes = b"", method: bytes = b"GET",
        version: bytes = b"1.1") -> bytes:
    return (b"%s /?t=%s&v=%d HTTP/%s\r\nHost: x\r\n%s\r\n"
            % (method, topic.encode(), seen, version, extra))


async def parked(topics: Topics, n: int) -> None:
    with trio.fail_after(10):
        while topics.polls.parked < n:
            await trio.sleep(0.01)


async def test_one_render_per_key_answers_every_parked_request_and_keeps_them_alive(
    nursery: trio.Nursery, connect: Connect,
) -> None:
    topics = Topics()
    port = await serve(nursery, topics)
    a = [await connect(port) for _ in range(30)]
    b = [await connect(port) for _ in range(20)]
    for raw in a:
        await raw.send(get("a", 0))
    for raw in b:
        await raw.send(get("b", 0))
    await parked(topics, 50)
    topics.bump("a")  # answers the 30 on "a" with one render; "b" stays parked
    assert topics.renders == 1 and topics.polls.parked == 20
    assert topics.polls.last_fanout[1] == 30
    for raw in a:
        status, headers, body = await raw.response()
        assert (status, headers["x-version"], body) == (200, "1", b"a=1;")
        assert "date" in headers
    # h11 knows the answer went out: the same connections serve the next request
    for raw in a:
        await raw.send(get("a", 0))
        assert (await raw.response())[2] == b"a=1;"
    topics.bump("b")
    for raw in b:
        assert (await raw.response())[2] == b"b=1;"
    assert topics.polls.parked == 0


async def test_requests_the_loop_cannot_write_get_the_same_answer_from_their_task(
    nursery: trio.Nursery, connect: Connect,
) -> None:
    topics = Topics()
    port = await serve(nursery, topics)
    head, old, close = await connect(port), await connect(port), await connect(port)
    await head.send(get("a", 0, method=b"HEAD"))
    await old.send(get("a", 0, version=b"1.0"))
    await close.send(get("a", 0, extra=b"Connection: close\r\n"))
    await parked(topics, 3)
    topics.bump("a")
    status, headers, body = await head.response(no_body=True)
    assert status == 200 and headers["content-length"] == "4"
    assert (await old.response())[2] == b"a=1;" and await old.at_eof()
    assert (await close.response())[2] == b"a=1;" and await close.at_eof()


async def test_an_answer_bigger_than_the_socket_buffer_is_finished_by_the_task(
    nursery: trio.Nursery, connect: Connect,
) -> None:
    topics = Topics()
    topics.body_size = 8 * 1024 * 1024  # far more than one non-blocking write takes
    port = await serve(nursery, topics)
    raws = [await connect(port) for _ in range(3)]
    for raw in raws:
        await raw.send(get("a", 0) + get("b", 1))  # plus a pipelined second request
    await parked(topics, 3)
    topics.bump("a")
    for raw in raws:
        status, _, body = await raw.response()
        assert status == 200 and len(body) == 4 + topics.body_size
        status, _, body = await raw.response()  # the pipelined one ("b" is still at 0)
        assert status == 200 and body.startswith(b"b=0;")
    assert topics.polls.parked == 0


async def test_timeout_answers_with_the_unchanged_state_and_hang_up_unparks(
    nursery: trio.Nursery, connect: Connect,
) -> None:
    topics = Topics()
    port = await serve(nursery, topics)
    quick, gone = await connect(port), await connect(port)
    await quick.send(b"GET /?t=a&v=0&wait=0.2 HTTP/1.1\r\nHost: x\r\n\r\n")
    await gone.send(get("a", 0))
    await parked(topics, 1)
    assert (await quick.response())[2] == b"a=0;"
    await gone.stream.aclose()
    with trio.fail_after(10):
        while topics.polls.parked:
            await trio.sleep(0.01)


async def test_past_max_parked_a_long_poll_gets_503(nursery: trio.Nursery,
                                                     connect: Connect) -> None:
    topics = Topics()
    port = await serve(nursery, topics, max_parked=2)
    raws = [await connect(port) for _ in range(3)]
    for raw in raws[:2]:
        await raw.send(get("a", 0))
    await parked(topics, 2)
    await raws[2].send(get("a", 0))
    status, _, body = await raws[2].response()
    assert status == 503 and b"Too many blocking queries parked (the limit is 2)" in body
    topics.bump("a")
    for raw in raws[:2]:
        assert (await raw.response())[2] == b"a=1;"


async def test_answered_tasks_are_woken_in_batches_and_all_keep_serving(
    nursery: trio.Nursery, connect: Connect, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fanout, "WAKE_BATCH", 4)  # 30 answers: 4 woken now, the rest later
    topics = Topics()
    port = await serve(nursery, topics)
    raws = [await connect(port) for _ in range(30)]
    for raw in raws:
        await raw.send(get("a", 0))
    await parked(topics, 30)
    topics.bump("a")
    assert topics.polls.parked == 0 and topics.polls.last_fanout[1] == 30
    for raw in raws:
        assert (await raw.response())[2] == b"a=1;"
    for raw in raws:  # every task did its bookkeeping: the connections serve again
        await raw.send(get("a", 0))
        assert (await raw.response())[2] == b"a=1;"


async def test_a_cancel_between_the_answer_and_the_wake_up_still_gets_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fanout, "WAKE_BATCH", 2)
    topics = Topics()
    scopes = [trio.CancelScope() for _ in range(10)]
    got: list[bytes] = []

    async def park(scope: trio.CancelScope) -> None:
        got.append((await topics.polls.wait(("a", 0), 60, -1, scope)).response.body)

    async with trio.open_nursery() as nursery:
        for scope in scopes:
            nursery.start_soon(park, scope)
        await parked(topics, 10)
        topics.bump("a")
        for scope in scopes:  # 8 of them are answered but not yet rescheduled
            scope.cancel()
    assert got == [b"a=1;"] * 10 and topics.polls.parked == 0


def test_response_bytes_is_a_complete_http_message() -> None:
    wire = response_bytes(Response(200, b"[]", [("X-Consul-Index", "7")]), b"DATE")
    assert wire == (b"HTTP/1.1 200 OK\r\nDate: DATE\r\nContent-Length: 2\r\n"
                    b"X-Consul-Index: 7\r\n\r\n[]")
