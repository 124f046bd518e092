"""WebSocket sessions on a connection the HTTP shell has just upgraded (wsproto).

Owns the handshake (`accept`: validate the upgrade request h11 parsed and build the 101
response) and the session (`run_session`): a reader task that answers pings, assembles
fragmented messages into a small queue, answers the peer's close, and caps message size;
the handler runs next to it with a `ServerWebSocket`. When the peer closes or disconnects,
pending and later `receive_text()` calls raise `ConnectionClosed`, and a handler still
running after `CLOSE_GRACE` seconds is cancelled. When the handler returns, we close with
1000 (if nobody closed yet) and wait up to `CLOSE_GRACE` for the peer's reply.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    TextMessage,
)
from wsproto.events import (
    Request as WSRequest,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .types import ConnectionClosed, WebSocket

__all__ = ["HandshakeError", "ServerWebSocket", "accept", "run_session"]

log = logging.getLogger("rumor.http")

CLOSE_GRACE = 1.0
SEND_TIMEOUT = 30.0  # a peer that takes longer than this to accept one message is dropped
INBOX_SIZE = 16
RECEIVE_BYTES = 65536
MESSAGE_TOO_BIG = 1009
ABNORMAL = 1006


class HandshakeError(Exception):
    """The upgrade request is not a valid WebSocket handshake (answer 400)."""


def accept(
    headers: Sequence[tuple[bytes, bytes]], target: bytes, subprotocol: str | None
) -> tuple[WSConnection, bytes]:
    """Validate the upgrade request; return the server connection and the 101 response bytes."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.initiate_upgrade_connection(list(headers), target)
        request = next(ws.events(), None)
        if not isinstance(request, WSRequest):
            raise HandshakeError("not a WebSocket upgrade request")
        if subprotocol is not None and subprotocol not in request.subprotocols:
            raise HandshakeError(f"client did not offer subprotocol {subprotocol!r}")
        return ws, ws.send(AcceptConnection(subprotocol=subprotocol))
    except (RemoteProtocolError, LocalProtocolError) as exc:
        raise HandshakeError(str(exc)) from exc


class ServerWebSocket:
    """The `WebSocket` a handler gets. One receiver at a time; sends may come from any task."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, max_message: int) -> None:
        self._stream, self._ws, self._max_message = stream, ws, max_message
        self._send_lock = trio.Lock()
        self._inbox_in, self._inbox_out = trio.open_memory_channel[str | bytes](INBOX_SIZE)
        self._closed: ConnectionClosed | None = None  # set when the session is over
        self._peer_done = trio.Event()

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the socket is closed, or None while it is open."""
        return self._closed

    async def send_text(self, message: str) -> None:
        """Send one text message. Raises ConnectionClosed if the socket is closed."""
        await self._send(TextMessage(data=message))

    async def send_bytes(self, message: bytes) -> None:
        """Send one binary message. Raises ConnectionClosed if the socket is closed."""
        await self._send(BytesMessage(data=message))

    async def receive(self) -> str | bytes:
        """The next message (str for text, bytes for binary). Raises ConnectionClosed."""
        try:
            return await self._inbox_out.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed or ConnectionClosed(ABNORMAL, "") from None

    async def receive_text(self) -> str:
        """The next text message; a binary message is decoded as UTF-8 (errors replaced)."""
        message = await self.receive()
        return message if isinstance(message, str) else message.decode("utf-8", "replace")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (no-op if it already started)."""
        if self._ws.state is ConnectionState.OPEN:
            try:
                await self._send(CloseConnection(code=code, reason=reason))
            except ConnectionClosed:
                pass
        if self._closed is None:
            self._closed = ConnectionClosed(code, reason)

    async def _send(self, event: Event) -> None:
        async with self._send_lock:
            if self._closed is not None and not isinstance(event, CloseConnection):
                raise self._closed
            try:
                data = self._ws.send(event)
                with trio.move_on_after(SEND_TIMEOUT) as timer:
                    await self._stream.send_all(data)
                if timer.cancelled_caught:  # the peer stopped reading: give up on it
                    self._closed = self._closed or ConnectionClosed(ABNORMAL, "send timed out")
                    await trio.aclose_forcefully(self._stream)
                    raise self._closed
            except LocalProtocolError:
                raise self._closed or ConnectionClosed(ABNORMAL, "") from None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._closed = self._closed or ConnectionClosed(ABNORMAL, "")
                raise self._closed from None

    async def _read(self, trailing: bytes) -> None:
        """Reader task: feed frames to wsproto until the peer closes or disconnects."""
        ws, parts, size = self._ws, [], 0
        code, reason = ABNORMAL, ""
        try:
            if trailing:
                ws.receive_data(trailing)
            while True:
                for event in ws.events():
                    if isinstance(event, Message):
                        parts.append(event.data)
                        size += len(event.data)
                        if size > self._max_message:
                            code, reason = MESSAGE_TOO_BIG, "message too big"
                            await self.close(code, reason)
                            return
                        if event.message_finished:
                            if isinstance(event, TextMessage):
                                message: str | bytes = "".join(parts)
                            else:
                                message = b"".join(parts)
                            parts, size = [], 0
                            await self._inbox_in.send(message)
                    elif isinstance(event, Ping):
                        await self._send(event.response())
                    elif isinstance(event, CloseConnection):
                        code, reason = event.code, event.reason or ""
                        if ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._send(event.response())
                        return
                data = await self._stream.receive_some(RECEIVE_BYTES)
                ws.receive_data(bytes(data) or None)
                if not data:
                    return
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if self._closed is None:
                self._closed = ConnectionClosed(code, reason)
            self._inbox_in.close()
            self._peer_done.set()


async def run_session(
    stream: trio.abc.Stream,
    ws: WSConnection,
    trailing: bytes,
    handler: Callable[[WebSocket], Awaitable[None]],
    max_message: int,
) -> None:
    """Run `handler` on an accepted WebSocket until both it and the closing handshake end."""
    sock = ServerWebSocket(stream, ws, max_message)

    async def reader(scope: trio.CancelScope) -> None:
        await sock._read(trailing)
        await trio.sleep(CLOSE_GRACE)  # the handler gets this long to notice, then is cancelled
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, nursery.cancel_scope)
        try:
            await handler(sock)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("WebSocket handler failed")
            await sock.close(1011, "internal error")
        await sock.close()
        with trio.move_on_after(CLOSE_GRACE):
            await sock._peer_done.wait()
        nursery.cancel_scope.cancel()
