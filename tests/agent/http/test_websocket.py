"""WebSocket upgrade on the h11 shell (agent/http/websocket.py), driven by trio-websocket.

Real loopback sockets for the normal cases; memory streams + autojump_clock where the
close grace period (virtual seconds) matters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trio_websocket as tw

from agent.http import (
    ConnectionClosed,
    Limits,
    Request,
    Response,
    Router,
    WebSocket,
    WebSocketResponse,
    handle_connection,
    serve_http,
)
from agent.http.types import AnyResponse


async def start(nursery: trio.Nursery, handler: Router, limits: Limits = Limits()) -> int:  # noqa: B008
    port: int = await nursery.start(partial(serve_http, handler, "127.0.0.1", 0, limits=limits))
    return port


@asynccontextmanager
async def ws_client(port: int, resource: str, **kw: Any) -> AsyncIterator[tw.WebSocketConnection]:
    """A trio-websocket client on a socket this test owns and always closes.

    (``tw.open_websocket_url`` leaves its socket open when the server closes first or
    rejects the upgrade: the client waits for the server's TCP close, then never closes its
    own end.)"""
    try:
        async with trio.open_nursery() as nursery:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                ws = await tw.wrap_client_stream(nursery, stream, "127.0.0.1", resource, **kw)
                try:
                    yield ws
                finally:
                    await ws.aclose()
            finally:
                await stream.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # a rejection comes from the client's reader task
        rejected, rest = group.split(tw.ConnectionRejected)
        if rejected is None or rest is not None:
            raise
        exc: BaseException = rejected
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        raise exc from None


def ws_router(session: object, subprotocol: str | None = None) -> Router:
    async def upgrade(req: Request) -> AnyResponse:
        return WebSocketResponse(session, subprotocol)  # type: ignore[arg-type]

    async def plain(req: Request) -> AnyResponse:
        return Response.text("no websocket here", 403)

    router = Router()
    router.add("GET", "/ws", upgrade)
    router.add("GET", "/plain", plain)
    return router


async def test_echo_ping_and_client_close(nursery: trio.Nursery) -> None:
    codes: list[int] = []
    done = trio.Event()

    async def echo(ws: WebSocket) -> None:
        try:
            while True:
                await ws.send_text("echo:" + await ws.receive_text())
        except ConnectionClosed as exc:
            codes.append(exc.code)
            done.set()
            raise

    port = await start(nursery, ws_router(echo))
    with trio.fail_after(10):
        async with ws_client(port, "/ws") as client:
            for word in ["a", "é" * 1000, ""]:
                await client.send_message(word)
                assert await client.get_message() == "echo:" + word
            await client.ping(b"are you there")  # returns once the pong arrives
        await done.wait()
    assert codes == [1000]


async def test_server_side_close_and_subprotocol(nursery: trio.Nursery) -> None:
    async def bye(ws: WebSocket) -> None:
        await ws.send_text("bye")

    port = await start(nursery, ws_router(bye, "v2.rumor"))
    with trio.fail_after(10):
        async with ws_client(port, "/ws", subprotocols=["v1.rumor", "v2.rumor"]) as client:
            assert client.subprotocol == "v2.rumor"
            assert await client.get_message() == "bye"
            with pytest.raises(tw.ConnectionClosed) as closed:
                await client.get_message()
            assert closed.value.reason is not None and closed.value.reason.code == 1000


async def test_plain_response_to_an_upgrade_and_upgrade_without_handshake(
    nursery: trio.Nursery,
) -> None:
    port = await start(nursery, ws_router(None))
    with trio.fail_after(10):
        with pytest.raises(tw.ConnectionRejected) as rejected:
            async with ws_client(port, "/plain"):
                pass
        assert rejected.value.status_code == 403
        assert rejected.value.body == b"no websocket here"
        async with httpx.AsyncClient() as http:  # WebSocketResponse to a plain GET
            got = await http.get(f"http://127.0.0.1:{port}/ws")
        assert got.status_code == 400


async def test_oversized_message_closes_with_1009(nursery: trio.Nursery) -> None:
    async def sink(ws: WebSocket) -> None:
        while True:
            await ws.receive_text()

    port = await start(nursery, ws_router(sink), Limits(max_body_bytes=1000))
    with trio.fail_after(10):
        async with ws_client(port, "/ws") as client:
            await client.send_message("x" * 999)
            await client.send_message("x" * 1001)
            with pytest.raises(tw.ConnectionClosed) as closed:
                await client.get_message()
            assert closed.value.reason is not None and closed.value.reason.code == 1009


async def test_push_only_handler_is_cancelled_after_the_peer_leaves(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    pushed, cancelled = trio.Event(), trio.Event()

    async def push(ws: WebSocket) -> None:
        await ws.send_text("hello")
        pushed.set()
        try:
            await trio.sleep_forever()  # e.g. waiting for the next event to push
        finally:
            cancelled.set()

    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_connection, server_stream, ws_router(push), Limits(), ("m", 1))
    client = await tw.wrap_client_stream(nursery, client_stream, "x", "/ws")  # type: ignore[arg-type]
    assert await client.get_message() == "hello"
    await pushed.wait()
    t0 = trio.current_time()
    await client.aclose()
    with trio.fail_after(5):
        await cancelled.wait()
    assert 0 < trio.current_time() - t0 <= 1.0  # within the close grace period
