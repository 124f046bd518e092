"""The h11 shell (agent/http): routing, limits, timeouts, pipelining, hang-ups, streams.

Normal traffic goes through real loopback sockets (`serve_http` on port 0 + httpx); protocol
edge cases write raw bytes, over `trio.testing.memory_stream_pair` when virtual time matters
(autojump_clock) and over 127.0.0.1 otherwise. Real-socket tests never use autojump_clock
(it would fire timeouts while the kernel moves bytes); they are bounded with fail_after.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from agent.http import (
    HTTPError,
    Limits,
    Request,
    Response,
    Router,
    StreamResponse,
    handle_connection,
    serve_http,
)
from agent.http.types import AnyResponse, go_json, make_request

Start = Callable[..., Awaitable[str]]
DEFAULT = Limits()


# ---- helpers ---------------------------------------------------------------------------------
class Raw:
    """A raw HTTP/1.1 client: write bytes, parse responses (Content-Length or chunked)."""

    def __init__(self, stream: trio.abc.Stream, timeout: float = 10.0) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.timeout = timeout  # bound on every read, so a broken server fails, not hangs

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> None:
        with trio.fail_after(self.timeout):
            data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            await self._more()
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf = bytearray(rest)
        return line

    async def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._more()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def head(self) -> tuple[int, dict[str, str]]:
        status_line = await self._line()
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while line := await self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" for the last one (trailers consumed)."""
        size = int(await self._line(), 16)
        if size == 0:
            while await self._line():
                pass
            return b""
        data = await self._exactly(size)
        assert await self._exactly(2) == b"\r\n"
        return data

    async def response(self, *, no_body: bool = False) -> tuple[int, dict[str, str], bytes]:
        status, headers = await self.head()
        if no_body or status < 200 or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, await self._exactly(int(headers["content-length"]))
        assert headers.get("transfer-encoding") == "chunked"
        parts = []
        while part := await self.chunk():
            parts.append(part)
        return status, headers, b"".join(parts)

    async def at_eof(self) -> bool:
        """True if the server closed without sending anything more."""
        if self.buf:
            return False
        try:
            await self._more()
        except EOFError:
            return True
        return False


def raw_memory(
    nursery: trio.Nursery,
    handler: Callable[..., Awaitable[AnyResponse]],
    limits: Limits = DEFAULT,
    timeout: float = 10.0,  # use a large one under autojump_clock: it is virtual time there
) -> Raw:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_connection, server, handler, limits, ("mem", 1))
    return Raw(client, timeout)


@pytest.fixture
def start(nursery: trio.Nursery) -> Start:
    async def start_server(
        handler: Callable[..., Awaitable[AnyResponse]], limits: Limits = DEFAULT
    ) -> str:
        port = await nursery.start(partial(serve_http, handler, "127.0.0.1", 0, limits=limits))
        return f"http://127.0.0.1:{port}"

    return start_server


Connect = Callable[[str], Awaitable[Raw]]


@pytest.fixture
async def raw_tcp() -> AsyncIterator[Connect]:
    """Open raw clients to a server URL; all are closed when the test ends."""
    opened: list[trio.SocketStream] = []

    async def connect(url: str) -> Raw:
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        opened.append(stream)
        return Raw(stream)

    yield connect
    for stream in opened:
        await stream.aclose()


async def echo(req: Request) -> Response:
    return Response.json(
        {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "params": req.params,
            "body": req.body.decode("latin-1"),
            "ua": req.header("User-Agent"),
        }
    )


def echo_router() -> Router:
    router = Router()
    router.add(["GET", "PUT"], "/echo", echo)
    router.add("PUT", "/v1/event/fire/{name...}", echo)
    router.add("PUT", "/v1/agent/service/deregister/{id}", echo)
    return router


# ---- normal traffic over real sockets ---------------------------------------------------------
async def test_get_and_put_with_body(start: Start) -> None:
    url = await start(echo_router())
    async with httpx.AsyncClient(base_url=url) as client:
        got = await client.get("/echo", headers={"User-Agent": "t/1"})
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/json"
        assert got.headers["content-length"] == str(len(got.content))
        assert got.headers["date"].endswith(" GMT")
        assert got.json()["method"] == "GET" and got.json()["ua"] == "t/1"
        put = await client.put("/echo", content=b"payload \x00\xff")
        assert put.json()["method"] == "PUT"
        assert put.json()["body"] == "payload \x00\xff"


async def test_query_parsing_and_percent_decoding(start: Start) -> None:
    url = await start(echo_router())
    async with httpx.AsyncClient(base_url=url) as client:
        got = await client.put("/v1/event/fire/my%20event%2Fx?node=web.%2A&pretty&a=1&a=2&e=")
        body = got.json()
        assert body["path"] == "/v1/event/fire/my event/x"
        assert body["params"] == {"name": "my event/x"}
        assert body["query"] == {"node": ["web.*"], "pretty": [""], "a": ["1", "2"], "e": [""]}
        dereg = await client.put("/v1/agent/service/deregister/redis-1")
        assert dereg.json()["params"] == {"id": "redis-1"}


def test_request_accessors() -> None:
    req = make_request("GET", "/v1/event/list?name=x&pretty&name=y", [("x-consul-token", "t")])
    assert req.path == "/v1/event/list"
    assert req.arg("name") == "x" and req.arg("missing") is None
    assert req.has_arg("pretty") and req.arg("pretty") == "" and not req.has_arg("index")
    assert req.header("X-Consul-Token") == "t" and req.header("Authorization") is None
    assert make_request("GET", "/a+b?q=a+b").path == "/a+b"
    assert make_request("GET", "/a+b?q=a+b").query == {"q": ["a b"]}
    assert make_request("GET", "http://host:1/x/y?z=1").path == "/x/y"


async def test_404_and_405_texts(start: Start) -> None:
    url = await start(echo_router())
    async with httpx.AsyncClient(base_url=url) as client:
        missing = await client.get("/v1/nope")
        assert (missing.status_code, missing.text) == (404, "404 page not found")
        assert missing.headers["content-type"] == "text/plain; charset=utf-8"
        wrong = await client.delete("/echo")
        assert (wrong.status_code, wrong.text) == (405, "Method not allowed")
        assert wrong.headers["allow"] == "GET, HEAD, PUT"
        fire = await client.get("/v1/event/fire/x")
        assert fire.status_code == 405 and fire.headers["allow"] == "PUT"


async def test_head_uses_get_handler_and_drops_body(nursery: trio.Nursery) -> None:
    seen: list[str] = []

    async def page(req: Request) -> Response:
        seen.append(req.method)
        return Response.text("twelve bytes", 200)

    router = Router()
    router.add("GET", "/page", page)
    raw = raw_memory(nursery, router)
    # HEAD then GET pipelined: a body after the HEAD response would corrupt the second one
    await raw.send(b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\nGET /page HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await raw.response(no_body=True)
    get_status, get_headers, body = await raw.response()
    assert status == 200 == get_status and body == b"twelve bytes"
    assert headers["content-length"] == get_headers["content-length"] == "12"
    assert seen == ["HEAD", "GET"]


# ---- bodies, Expect: 100-continue and size limits ---------------------------------------------
async def test_expect_100_continue_sent_just_before_reading_the_body(
    nursery: trio.Nursery,
) -> None:
    raw = raw_memory(nursery, echo_router())
    await raw.send(
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    status, _ = await raw.head()
    assert status == 100
    await raw.send(b"hello")
    status, _, body = await raw.response()
    assert status == 200 and b'"body":"hello"' in body


async def test_413_from_content_length_without_sending_100(nursery: trio.Nursery) -> None:
    raw = raw_memory(nursery, echo_router(), Limits(max_body_bytes=10))
    await raw.send(
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
    )
    status, headers, _ = await raw.response()
    assert status == 413 and headers["connection"] == "close"
    assert await raw.at_eof()


async def test_413_while_reading_a_chunked_body(start: Start, raw_tcp: Connect) -> None:
    url = await start(echo_router(), Limits(max_body_bytes=1000))
    raw = await raw_tcp(url)
    with trio.fail_after(10):
        await raw.send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        await raw.send(b"258\r\n" + b"a" * 600 + b"\r\n")  # 600 bytes: still fine
        await raw.send(b"258\r\n" + b"a" * 600 + b"\r\n")  # 1200 > 1000
        status, _, body = await raw.response()
        assert (status, body) == (413, b"Request body too large: the limit is 1000 bytes")
        assert await raw.at_eof()


async def test_body_within_limit_is_accepted_chunked(start: Start, raw_tcp: Connect) -> None:
    url = await start(echo_router(), Limits(max_body_bytes=1000))
    raw = await raw_tcp(url)
    with trio.fail_after(10):
        await raw.send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        await raw.send(b"3e8\r\n" + b"b" * 1000 + b"\r\n0\r\n\r\n")
        status, _, body = await raw.response()
        assert status == 200 and b"b" * 1000 in body


@pytest.mark.parametrize("pieces", [1, 40])
async def test_431_for_an_oversized_head(start: Start, raw_tcp: Connect, pieces: int) -> None:
    url = await start(echo_router(), Limits(max_header_bytes=4096))
    raw = await raw_tcp(url)
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"x" * 5000 + b"\r\n\r\n"
    step = -(-len(head) // pieces)
    with trio.fail_after(10):
        try:
            for i in range(0, len(head), step):
                await raw.send(head[i : i + step])
        except trio.BrokenResourceError:
            pass  # the server may answer and close before the last piece
        status, _, body = await raw.response()
        assert (status, body) == (431, b"Request Header Fields Too Large")


async def test_head_just_under_the_limit_is_fine(nursery: trio.Nursery) -> None:
    raw = raw_memory(nursery, echo_router(), Limits(max_header_bytes=4096))
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"x" * 3900 + b"\r\n\r\n"
    await raw.send(head + head)  # two pipelined, together over the limit
    assert (await raw.response())[0] == 200
    assert (await raw.response())[0] == 200


async def test_malformed_request_gets_400_and_close(nursery: trio.Nursery) -> None:
    raw = raw_memory(nursery, echo_router())
    await raw.send(b"THIS IS NOT HTTP\r\n\r\n")
    status, headers, body = await raw.response()
    assert (status, body, headers["connection"]) == (400, b"Bad Request", "close")
    assert await raw.at_eof()


# ---- timeouts (virtual time) ------------------------------------------------------------------
async def test_408_on_a_slow_head(nursery: trio.Nursery, autojump_clock: object) -> None:
    raw = raw_memory(nursery, echo_router(), Limits(header_timeout=10), timeout=1000)
    t0 = trio.current_time()
    await raw.send(b"GET /echo HTTP/1.1\r\nHo")
    status, headers, _ = await raw.response()
    assert status == 408 and headers["connection"] == "close"
    assert trio.current_time() - t0 == pytest.approx(10)
    assert await raw.at_eof()


async def test_trickled_head_does_not_reset_the_header_timeout(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    raw = raw_memory(nursery, echo_router(), Limits(header_timeout=10), timeout=1000)
    t0 = trio.current_time()

    async def trickle() -> None:
        for byte in b"GET /echo HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxx":
            await raw.send(bytes([byte]))
            await trio.sleep(1)

    nursery.start_soon(trickle)
    status, _, _ = await raw.response()
    assert status == 408
    assert trio.current_time() - t0 == pytest.approx(10)


async def test_idle_keep_alive_connection_is_closed_silently(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    raw = raw_memory(
        nursery, echo_router(), Limits(idle_timeout=60, header_timeout=10), timeout=1000
    )
    await raw.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await raw.response())[0] == 200
    t0 = trio.current_time()
    await trio.sleep(59)
    await raw.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")  # still open at 59 s
    assert (await raw.response())[0] == 200
    t1 = trio.current_time()
    assert await raw.at_eof()  # nothing sent, just closed
    assert trio.current_time() - t1 == pytest.approx(60)
    assert t1 - t0 == pytest.approx(59)


async def test_server_expires_slow_heads_and_idle_connections(
        start: Start, raw_tcp: Connect) -> None:
    url = await start(echo_router(), Limits(header_timeout=0.2, idle_timeout=0.3))
    slow, idle = await raw_tcp(url), await raw_tcp(url)
    with trio.fail_after(10):
        await slow.send(b"GET /echo HTTP/1.1\r\n")
        await idle.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await idle.response())[0] == 200
        assert (await slow.response())[0] == 408
        assert await slow.at_eof() and await idle.at_eof()


async def test_silent_new_connection_closes_after_header_timeout(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    raw = raw_memory(nursery, echo_router(), Limits(header_timeout=10), timeout=1000)
    t0 = trio.current_time()
    assert await raw.at_eof()
    assert trio.current_time() - t0 == pytest.approx(10)


async def test_408_on_a_slow_body(nursery: trio.Nursery, autojump_clock: object) -> None:
    raw = raw_memory(nursery, echo_router(), Limits(body_timeout=30), timeout=1000)
    await raw.send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    t0 = trio.current_time()
    status, _, _ = await raw.response()
    assert status == 408
    assert trio.current_time() - t0 == pytest.approx(30)


# ---- pipelining and hang-ups ------------------------------------------------------------------
async def test_two_pipelined_requests_are_answered_in_order(start: Start, raw_tcp: Connect) -> None:
    url = await start(echo_router())
    raw = await raw_tcp(url)
    with trio.fail_after(10):
        await raw.send(
            b"GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"PUT /echo?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        )
        first, second = await raw.response(), await raw.response()
    assert b'"n":["1"]' in first[2] and b'"method":"GET"' in first[2]
    assert b'"n":["2"]' in second[2] and b'"body":"abc"' in second[2]


@pytest.mark.parametrize("transport", ["memory", "tcp"])  # watcher task / shared epoll
async def test_request_pipelined_behind_a_parked_handler_is_kept(
    nursery: trio.Nursery, start: Start, raw_tcp: Connect, transport: str
) -> None:
    parked, release = trio.Event(), trio.Event()

    async def wait(req: Request) -> Response:
        parked.set()
        await release.wait()
        return Response.text("waited", 200)

    router = echo_router()
    router.add("GET", "/wait", wait)
    raw = (
        raw_memory(nursery, router) if transport == "memory" else await raw_tcp(await start(router))
    )
    with trio.fail_after(10):
        await raw.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await parked.wait()
        await raw.send(b"GET /echo?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")  # read by the EOF watcher
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # let the kernel deliver it
        release.set()
        assert (await raw.response())[2] == b"waited"
        assert b'"n":["2"]' in (await raw.response())[2]


async def test_client_hangup_cancels_a_parked_handler_at_once(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    parked, cancelled = trio.Event(), trio.Event()

    async def long_poll(req: Request) -> Response:
        parked.set()
        try:
            await trio.sleep(600)
        except trio.Cancelled:
            cancelled.set()
            raise
        return Response.text("timeout", 200)

    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_connection, server, long_poll, Limits(), ("mem", 1))
    await client.send_all(b"GET /v1/event/list?index=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    await parked.wait()
    t0 = trio.current_time()
    await client.aclose()
    with trio.fail_after(1):
        await cancelled.wait()
    assert trio.current_time() == t0  # no virtual time passed: cancelled immediately


async def test_client_hangup_over_tcp_cancels_the_handler(start: Start) -> None:
    parked, cancelled = trio.Event(), trio.Event()

    async def long_poll(req: Request) -> Response:
        parked.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    url = await start(long_poll)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=url) as client, trio.open_nursery() as inner:
            inner.start_soon(client.get, "/wait")
            await parked.wait()
            inner.cancel_scope.cancel()  # httpx drops the connection
        await cancelled.wait()


async def test_many_parked_requests_are_all_answered(start: Start, raw_tcp: Connect) -> None:
    total = 1000
    fire, all_parked = trio.Event(), trio.Event()
    parked = 0

    async def long_poll(req: Request) -> Response:
        nonlocal parked
        parked += 1
        if parked == total:
            all_parked.set()
        await fire.wait()
        return Response.json({"n": req.arg("n")})

    url = await start(long_poll, Limits(max_conns_per_client=0))  # 1,000 from one IP
    answers: list[bytes] = []

    async def one(raw: Raw, n: int) -> None:
        await raw.send(b"GET /x?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        status, _, body = await raw.response()
        assert status == 200
        answers.append(body)

    with trio.fail_after(60):
        raws = []
        for _ in range(total):
            raws.append(await raw_tcp(url))
        async with trio.open_nursery() as clients:
            for n, raw in enumerate(raws):
                clients.start_soon(one, raw, n)
            await all_parked.wait()
            assert not answers
            fire.set()
        for raw in raws:
            await raw.stream.aclose()
    assert sorted(answers) == sorted(b'{"n":"%d"}' % n for n in range(total))


# ---- errors -----------------------------------------------------------------------------------
async def test_handler_exception_gives_500_and_keeps_the_connection(
    start: Start, raw_tcp: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(req: Request) -> Response:
        raise RuntimeError("kaboom")

    async def teapot(req: Request) -> Response:
        raise HTTPError(400, "Missing name")

    router = echo_router()
    router.add("GET", "/boom", boom)
    router.add("GET", "/teapot", teapot)
    url = await start(router)
    caplog.set_level(logging.ERROR, logger="rumor.http")
    raw = await raw_tcp(url)
    with trio.fail_after(10):
        await raw.send(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await raw.response())[::2] == (500, b"Internal Server Error")
        await raw.send(b"GET /teapot HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await raw.response())[::2] == (400, b"Missing name")
        await raw.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection still works
        assert (await raw.response())[0] == 200
    errors = [r for r in caplog.records if r.name == "rumor.http"]
    assert len(errors) == 1 and "kaboom" in (errors[0].exc_text or "")


async def test_exception_after_suspending_also_gives_500(nursery: trio.Nursery) -> None:
    async def slow_boom(req: Request) -> Response:
        await trio.sleep(0)
        raise ValueError("late")

    raw = raw_memory(nursery, slow_boom)
    await raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await raw.response())[0] == 500
    assert (await raw.response())[0] == 500


async def test_connection_close_is_honoured(nursery: trio.Nursery) -> None:
    raw = raw_memory(nursery, echo_router())
    await raw.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = await raw.response()
    assert status == 200 and headers["connection"] == "close"
    assert await raw.at_eof()


async def test_http10_request_is_answered_then_closed(nursery: trio.Nursery) -> None:
    raw = raw_memory(nursery, echo_router())
    await raw.send(b"GET /echo HTTP/1.0\r\n\r\n")
    status, headers, body = await raw.response()
    assert status == 200 and b'"method":"GET"' in body
    assert await raw.at_eof()


async def test_at_the_connection_cap_the_idle_keep_alive_connection_makes_room(
        start: Start, raw_tcp: Connect) -> None:
    url = await start(echo_router(), Limits(max_connections=1))
    first = await raw_tcp(url)
    with trio.fail_after(10):
        await first.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await first.response())[0] == 200  # now idle, kept alive
        second = await raw_tcp(url)
        await second.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await second.response())[0] == 200
        assert await first.at_eof()  # closed to make room


async def test_bind_error_names_host_and_port(start: Start) -> None:
    url = await start(echo_router())
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
        await serve_http(echo_router(), "127.0.0.1", port)


# ---- streams ----------------------------------------------------------------------------------
async def test_stream_chunks_arrive_as_produced_and_hangup_closes_it(
        start: Start, raw_tcp: Connect) -> None:
    step = trio.Event()
    closed = trio.Event()

    async def ticks() -> AsyncIterator[bytes]:
        nonlocal step
        try:
            for n in range(1000):
                yield b'{"n":%d}\n' % n
                await step.wait()
                step = trio.Event()
        finally:
            closed.set()

    async def stream(req: Request) -> StreamResponse:
        return StreamResponse(200, [("Content-Type", "application/x-ndjson")], ticks())

    # a raw client sees each chunk as it is written (httpx's line iterator would also leave
    # its nested async generators for the garbage collector when the test stops reading)
    raw = await raw_tcp(await start(stream))
    with trio.fail_after(10):
        await raw.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers = await raw.head()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert await raw.chunk() == b'{"n":0}\n'  # arrives before step 1 exists
        step.set()
        assert await raw.chunk() == b'{"n":1}\n'
        await raw.stream.aclose()
        await closed.wait()  # the generator's finally ran after the client left


async def test_finite_stream_and_head_on_a_stream(nursery: trio.Nursery) -> None:
    closed: list[str] = []

    async def gen(tag: str) -> AsyncIterator[bytes]:
        try:
            yield b"a"
            yield b""
            yield b"bc"
        finally:
            closed.append(tag)

    gens: list[AsyncIterator[bytes]] = []

    async def stream(req: Request) -> StreamResponse:
        gens.append(gen(req.method))
        return StreamResponse(200, [], gens[-1])

    raw = raw_memory(nursery, stream)
    await raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await raw.response())[2] == b"abc"
    status, headers, _ = await raw.response(no_body=True)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    await raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # connection still in sync
    assert (await raw.response())[2] == b"abc"
    assert closed == ["GET", "GET"]  # the HEAD one never started...
    assert all(g.ag_frame is None for g in gens)  # type: ignore[attr-defined]  # ...but is closed


# ---- shutdown ---------------------------------------------------------------------------------
async def test_cancelling_serve_http_cancels_handlers_and_closes(nursery: trio.Nursery) -> None:
    parked, cancelled = trio.Event(), trio.Event()

    async def long_poll(req: Request) -> Response:
        parked.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            port = await inner.start(partial(serve_http, long_poll, "127.0.0.1", 0))
            parked_raw = Raw(await trio.open_tcp_stream("127.0.0.1", port))
            idle_raw = Raw(await trio.open_tcp_stream("127.0.0.1", port))
            await parked_raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await parked.wait()
            inner.cancel_scope.cancel()
        assert cancelled.is_set()
        assert await parked_raw.at_eof() and await idle_raw.at_eof()
        await parked_raw.stream.aclose()
        await idle_raw.stream.aclose()
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


# ---- routing and JSON (no I/O) ----------------------------------------------------------------
async def test_router_patterns() -> None:
    async def named(tag: str, req: Request) -> Response:
        return Response.text(f"{tag}:{req.params}", 200)

    router = Router()
    router.add("GET", "/v1/kv/{key...}", partial(named, "kv"))
    router.add("GET", "/v1/kv/special", partial(named, "exact"))
    router.add("GET", "/v1/{rest...}", partial(named, "v1"))
    router.add("GET", "/v1/node/{id}", partial(named, "node"))

    async def call(path: str) -> tuple[int, bytes]:
        resp = await router(make_request("GET", path))
        assert isinstance(resp, Response)
        return resp.status, resp.body

    assert await call("/v1/kv/special") == (200, b"exact:{}")
    assert await call("/v1/kv/a/b") == (200, b"kv:{'key': 'a/b'}")
    assert await call("/v1/kv/") == (200, b"kv:{'key': ''}")
    assert await call("/v1/node/n1") == (200, b"node:{'id': 'n1'}")
    assert await call("/v1/node/n1/x") == (200, b"v1:{'rest': 'node/n1/x'}")
    assert await call("/v1/node/") == (200, b"v1:{'rest': 'node/'}")
    assert (await call("/v2"))[0] == 404
    for bad in ["nope", "/a/{x}/b", "/a{x}", "/a/{x-y}", "/a/{x}{y}"]:
        with pytest.raises(ValueError):
            router.add("GET", bad, partial(named, "bad"))
    with pytest.raises(ValueError):
        router.add("GET", "/v1/kv/special", partial(named, "dup"))
    assert await call("/v1/kv/special") == (200, b"exact:{}")  # unchanged after the errors


def test_json_matches_go_encoding() -> None:
    obj: dict[str, object] = {
        "Name": "a<b>&c",
        "Payload": None,
        "List": [],
        "Map": {},
        "U": "é\u2028",
    }
    assert go_json(obj) == (
        b'{"Name":"a\\u003cb\\u003e\\u0026c","Payload":null,"List":[],"Map":{},'
        b'"U":"\xc3\xa9\\u2028"}'
    )
    pretty = Response.json([{"ID": "x", "LTime": 1}], pretty=True).body
    assert pretty == b'[\n    {\n        "ID": "x",\n        "LTime": 1\n    }\n]\n'
    resp = Response.json({}, status=201, headers=[("X-Consul-Index", "7")])
    assert resp.status == 201 and ("X-Consul-Index", "7") in resp.headers
