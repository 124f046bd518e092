"""The only module with sockets: trio UDP and TCP on one gossip port.

* UDP: a non-blocking stdlib socket; receiving waits with ``trio.lowlevel.wait_readable`` and
  then drains every queued datagram without yielding (7-9x the per-packet rate of one await
  per datagram, measured in ``shared/reference/stack.md``); sending is a plain non-blocking
  ``sendto`` (a full buffer drops the datagram, as UDP would).
* TCP: one exchange per connection, parsed to its end by :class:`gossip.wire.StreamParser`
  (peers never half-close), bounded by a deadline and a byte limit; at most
  :class:`StreamLimit` ``.limit`` inbound exchanges run at once, the others are closed at once
  and counted (memberlist has no cap: idle connections could pin every task).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable

import trio

from gossip.config import Addr
from gossip.errors import DecodeError
from gossip.wire import StreamMessage, StreamParser

MAX_DATAGRAM = 65536
SOCKET_BUFFER = 4 * 1024 * 1024


class BindError(OSError):
    """The gossip port could not be bound; the message names the address."""


class UdpTransport:
    def __init__(self, bind: Addr) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            self.sock.bind(bind)
        except OSError as exc:
            self.sock.close()
            raise BindError(exc.errno, f"cannot bind UDP {bind[0]}:{bind[1]}: "
                                       f"{exc.strerror}") from None
        self.sock.setblocking(False)
        self.send_errors = 0

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def send(self, addr: Addr, data: bytes) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self.send_errors += 1

    async def receive_batch(self, limit: int = 512) -> list[tuple[bytes, Addr]]:
        """Wait for at least one datagram, then take all queued ones (up to ``limit``)."""
        await trio.lowlevel.wait_readable(self.sock)
        out: list[tuple[bytes, Addr]] = []
        for _ in range(limit):
            try:
                data, src = self.sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue  # ICMP errors from earlier sends surface here on Linux
                raise
            out.append((data, (src[0], src[1])))
        return out

    def close(self) -> None:
        self.sock.close()


async def open_tcp_listener(bind: Addr) -> trio.SocketListener:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind(bind)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot bind TCP {bind[0]}:{bind[1]}: "
                                   f"{exc.strerror}") from None
    return trio.SocketListener(sock)


async def read_message(stream: trio.abc.ReceiveStream, parser: StreamParser) -> StreamMessage:
    """Read until ``parser`` has one complete message; DecodeError on EOF or garbage."""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise DecodeError("connection closed before a complete message")
        msg = parser.feed(bytes(chunk))
        if msg is not None:
            return msg


async def exchange(addr: Addr, data: bytes, parser: StreamParser | None,
                   timeout: float) -> StreamMessage | None:
    """Connect, send ``data``, and (if ``parser``) read one reply.  None on any failure."""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(addr[0], addr[1])
        except OSError:
            return None
        async with stream:
            try:
                await stream.send_all(data)
                if parser is None:
                    return None
                return await read_message(stream, parser)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, DecodeError):
                return None
    return None


class StreamLimit:
    """How many inbound streams may run at once; counts those refused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.refused = 0

    def wrap(self, handler: Callable[[trio.SocketStream, Addr], Awaitable[None]]
             ) -> Callable[[trio.SocketStream, Addr], Awaitable[None]]:
        async def limited(stream: trio.SocketStream, peer: Addr) -> None:
            if self.active >= self.limit:
                self.refused += 1
                await trio.aclose_forcefully(stream)
                return
            self.active += 1
            try:
                await handler(stream, peer)
            finally:
                self.active -= 1
        return limited


async def serve_tcp(listener: trio.SocketListener,
                    handler: Callable[[trio.SocketStream, Addr], Awaitable[None]],
                    limit: StreamLimit | None = None) -> None:
    """Accept forever, running ``handler(stream, peer)`` in its own task per connection."""
    if limit is not None:
        handler = limit.wrap(handler)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                stream = await listener.accept()
            except OSError:
                await trio.sleep(0.01)
                continue
            try:
                peer = stream.socket.getpeername()
            except OSError:
                await stream.aclose()
                continue
            nursery.start_soon(handler, stream, (peer[0], peer[1]))
