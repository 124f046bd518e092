"""The h11 shell serving HTTPS (`serve_http(..., tls=...)`) over real loopback sockets:
keep-alive, a client hanging up during a long-poll, a client that never starts the TLS
handshake (closed at the header timeout), plain HTTP sent to the TLS port, and the context
being asked per connection (so a reload applies to new connections)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio

from agent.http import Limits, Request, Response, Router, serve_http
from agent.tls import client_context, server_context
from agent.tlsgen import create_ca, create_cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        assert create_ca([]) == 0
        assert create_cert(["-server"]) == 0
        assert create_cert(["-client"]) == 0
    return d


def contexts(d: Path, verify: bool) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = server_context(str(d / "consul-agent-ca.pem"), str(d / "dc1-server-consul-0.pem"),
                            str(d / "dc1-server-consul-0-key.pem"), verify)
    client = client_context(str(d / "consul-agent-ca.pem"), str(d / "dc1-client-consul-0.pem"),
                            str(d / "dc1-client-consul-0-key.pem"))
    return server, client


class Holder:
    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx, self.asked = ctx, 0

    def __call__(self) -> ssl.SSLContext:
        self.asked += 1
        return self.ctx


async def get(stream: trio.abc.Stream, path: str) -> bytes:
    """One keep-alive GET; returns the body (Content-Length framed)."""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError("closed before the response head")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += await stream.receive_some(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


@pytest.fixture
async def server(pki: Path) -> AsyncIterator[tuple[int, Holder, dict[str, object]]]:
    state: dict[str, object] = {"parked": trio.Event(), "cancelled": trio.Event()}
    router = Router()

    async def hello(req: Request) -> Response:
        return Response.text("hello " + req.path, 200)

    async def park(req: Request) -> Response:
        try:
            parked = state["parked"]
            assert isinstance(parked, trio.Event)
            parked.set()
            await trio.sleep_forever()
        finally:
            cancelled = state["cancelled"]
            assert isinstance(cancelled, trio.Event)
            cancelled.set()
        raise AssertionError("unreachable")

    router.add("GET", "/hello", hello)
    router.add("GET", "/park", park)
    ctx, _ = contexts(pki, verify=True)
    holder = Holder(ctx)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_http, router, "127.0.0.1", 0,
                                           limits=Limits(header_timeout=1.0), tls=holder))
        yield port, holder, state
        nursery.cancel_scope.cancel()


async def test_https_keep_alive_and_hang_up_during_a_long_poll(
        pki: Path, server: tuple[int, Holder, dict[str, object]]) -> None:
    port, holder, state = server
    _, client = contexts(pki, verify=True)
    with trio.fail_after(20):
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=client)
        assert await get(stream, "/hello") == b"hello /hello"
        assert await get(stream, "/hello") == b"hello /hello"  # same TLS connection
        await stream.send_all(b"GET /park HTTP/1.1\r\nHost: x\r\n\r\n")
        parked, cancelled = state["parked"], state["cancelled"]
        assert isinstance(parked, trio.Event) and isinstance(cancelled, trio.Event)
        await parked.wait()
        await trio.aclose_forcefully(stream)  # the client hangs up
        await cancelled.wait()  # ... and the parked handler is cancelled at once
        assert holder.asked == 1


async def test_https_refuses_silence_plain_http_and_missing_client_certs(
        pki: Path, server: tuple[int, Holder, dict[str, object]]) -> None:
    port, holder, _ = server
    with trio.fail_after(20):
        silent = await trio.open_tcp_stream("127.0.0.1", port)  # never sends a ClientHello
        assert await silent.receive_some(100) == b""  # closed at the 1 s header timeout
        await silent.aclose()
        plain = await trio.open_tcp_stream("127.0.0.1", port)
        await plain.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := await plain.receive_some(100):
            data += chunk
        assert b"hello" not in data  # no handshake, no answer
        await plain.aclose()
        anonymous = ssl.create_default_context(cafile=str(pki / "consul-agent-ca.pem"))
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=anonymous)
        with pytest.raises(trio.BrokenResourceError):
            await get(stream, "/hello")  # verify_incoming: no certificate, no service
        await trio.aclose_forcefully(stream)
        # the context is asked per connection: a swapped-in one applies to the next
        holder.ctx, _ = contexts(pki, verify=False)
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=anonymous)
        assert await get(stream, "/hello") == b"hello /hello"
        await trio.aclose_forcefully(stream)
        assert holder.asked == 4
