"""One HTTP/1.1 connection: the request/response loop on h11, its phases and deadlines,
reading requests (header and body limits, ``Expect: 100-continue``), running the handler
raced against the peer hanging up, and watching the socket while a handler or stream runs.
Writing the answers is ``responses.Responder``'s half.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

import h11
import trio

from .limits import (
    BODY,
    HANDLER,
    HEAD,
    IDLE,
    LINGER_BYTES,
    LINGER_SECONDS,
    RECEIVE_BYTES,
    WRITE,
    Limits,
)
from .responses import Responder, Watch
from .types import (
    AnyResponse,
    Handler,
    HTTPError,
    LongPoll,
    Request,
    Response,
    StreamResponse,
    WebSocketResponse,
    make_request,
)

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("rumor.http")


class _Resume:
    """Await the rest of a coroutine whose first step (yielding `trap`) already ran."""

    __slots__ = ("_it", "_trap")

    def __init__(self, it: Generator[Any, Any, AnyResponse], trap: Any) -> None:
        self._it, self._trap = it, trap

    def __await__(self) -> Generator[Any, Any, AnyResponse]:
        it, message = self._it, self._trap
        while True:
            try:
                sent = yield message
            except GeneratorExit:
                it.close()
                raise
            except BaseException as exc:  # Cancelled and friends: deliver to the handler
                try:
                    message = it.throw(exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            else:
                try:
                    message = it.send(sent)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]




class Connection(Responder):
    """One client connection: the request/response loop, its phases and deadlines."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        limits: Limits,
        remote: tuple[str, int],
        server: Server | None = None,
    ) -> None:
        self.stream, self.handler, self.limits, self.remote = stream, handler, limits, remote
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.scope = trio.CancelScope()  # the request loop; cancelled by watchdog or shutdown
        self.started = trio.current_time()
        self.phase = IDLE
        self.deadline = self.started + limits.header_timeout
        self.expired: str | None = None  # the phase whose deadline passed
        self.pending = bytearray()  # read while a handler or stream ran; fed to h11 next
        self.fed = 0  # bytes handed to h11 so far
        self.mark = 0  # where the current request starts in that count
        self.first = True
        self.eof = False
        self.closing = server is not None and server.closing
        self.linger = False
        self.raw_headers: Sequence[tuple[bytes, bytes]] = []  # of the current request, for WS
        self.raw_target = b""
        self.server = server
        self.parked = False  # in a long-poll
        self.poll_scope = trio.CancelScope()  # cancelled: answer the long-poll now
        self.evicted = False  # closed by the server to make room
        self.spawn: Callable[..., object]  # start_soon of a nursery, for the fallback watcher

    # ---- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if self.closing:
                return
            if self.server is not None:  # the server's reaper and peer watcher serve us
                self.spawn = self.server.spawn
                await self._serve()
            else:
                async with trio.open_nursery() as nursery:
                    self.spawn = nursery.start_soon
                    nursery.start_soon(self._watchdog)
                    await self._serve()
                    nursery.cancel_scope.cancel()
            if (self.expired is HEAD or self.expired is BODY) and not self.closing:
                with trio.move_on_after(self.limits.write_timeout):
                    await self._send_error(408)
        finally:
            await self._close()

    async def _serve(self) -> None:
        with self.scope:
            try:
                await self._loop()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:
                log.exception("connection from %s:%s failed", *self.remote)

    def expire(self) -> None:
        """The current phase's deadline passed: stop serving (run() then answers 408 or not)."""
        self.expired, self.deadline = self.phase, math.inf
        self.scope.cancel()

    async def _watchdog(self) -> None:
        """Expire exactly at the deadline (used without a server). It sleeps at most the
        shortest timeout at a time, so a newly set deadline (never nearer) is not missed."""
        limits = self.limits
        nap = max(
            0.01,
            min(
                limits.header_timeout,
                limits.idle_timeout,
                limits.body_timeout,
                limits.write_timeout,
            ),
        )
        while True:
            now = trio.current_time()
            if now >= self.deadline:
                self.expire()
                return
            await trio.sleep_until(min(self.deadline, now + nap))

    def shutdown(self) -> None:
        """Server is stopping: finish a write in progress, abandon anything else."""
        self.closing = True
        if self.phase is not WRITE:
            self.scope.cancel()

    async def _close(self) -> None:
        stream = self.stream
        try:
            if self.linger and not self.closing:
                with trio.move_on_after(LINGER_SECONDS):
                    if isinstance(stream, trio.abc.HalfCloseableStream):
                        await stream.send_eof()
                    drained = 0
                    while drained < LINGER_BYTES:
                        data = await stream.receive_some(RECEIVE_BYTES)
                        if not data:
                            break
                        drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _loop(self) -> None:
        conn = self.conn
        while True:
            req = await self._read_request()
            if req is None:
                return
            self.first = False
            self.phase, self.deadline = HANDLER, math.inf
            result = await self._dispatch(req)  # a hang-up meanwhile cancels self.scope
            if isinstance(result, Response):
                ok = await self._send_response(req, result)
            elif isinstance(result, StreamResponse):
                ok = await self._send_stream(req, result)
            elif isinstance(result, LongPoll):
                ok = await self._long_poll(req, result)
            elif isinstance(result, WebSocketResponse):
                await self._upgrade(result)
                return
            else:
                log.error("handler for %s %s returned %r", req.method, req.target, result)
                ok = await self._send_response(req, Response.text("Internal Server Error", 500))
            if not ok or self.closing:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    # ---- reading ---------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.fed += len(data)

    async def _receive(self) -> bytes:
        data = await self.stream.receive_some(RECEIVE_BYTES)
        if data:
            self._feed(data)  # type: ignore[arg-type]  # bytes from a SocketStream
        else:
            self.eof = True
            self.conn.receive_data(b"")
        return data  # type: ignore[return-value]

    async def _read_request(self) -> Request | None:
        conn, limits = self.conn, self.limits
        if self.pending:
            self._feed(bytes(self.pending))
            self.pending.clear()
        now = trio.current_time()
        if self.fed > self.mark:  # (part of) a pipelined request is already buffered
            self.phase = HEAD
            self.deadline = now + limits.header_timeout
        elif not self.first:
            self.phase, self.deadline = IDLE, now + limits.idle_timeout
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if await self._receive() and self.phase is IDLE:
                        self.phase = HEAD
                        if not self.first:
                            self.deadline = trio.current_time() + limits.header_timeout
                    continue
                if type(event) is h11.Request:
                    break
                return None  # ConnectionClosed (clean EOF between requests)
            if self.fed - self.mark > limits.max_header_bytes:
                head_size = self.fed - len(conn.trailing_data[0]) - self.mark
                if head_size > limits.max_header_bytes:
                    await self._send_error(431)
                    return None
            body = await self._read_body(event)
        except h11.RemoteProtocolError as exc:
            if not self.eof:
                await self._send_error(exc.error_status_hint)
            return None
        if body is None:
            return None
        self.mark = self.fed - len(conn.trailing_data[0])
        self.raw_headers, self.raw_target = event.headers, event.target
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        return make_request(
            event.method.decode("ascii"),
            event.target.decode("latin-1"),
            headers,
            body,
            self.remote,
        )

    async def _read_body(self, event: h11.Request) -> bytes | None:
        conn, limits = self.conn, self.limits
        for name, value in event.headers:
            if name == b"content-length" and int(value) > limits.max_body_bytes:
                await self._send_error(413)
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            ev = conn.next_event()
            kind = type(ev)
            if kind is h11.EndOfMessage:
                return b"".join(chunks) if len(chunks) != 1 else chunks[0]
            if kind is h11.Data:
                size += len(ev.data)  # type: ignore[union-attr]
                if size > limits.max_body_bytes:
                    await self._send_error(413)
                    return None
                chunks.append(bytes(ev.data))  # type: ignore[union-attr]
            elif ev is h11.NEED_DATA:
                if self.phase is not BODY:
                    self.phase = BODY
                    self.deadline = trio.current_time() + limits.body_timeout
                if conn.they_are_waiting_for_100_continue:
                    info = h11.InformationalResponse(status_code=100, headers=[])
                    await self._write(conn.send(info))
                await self._receive()
            else:
                return None

    # ---- the handler, raced against the peer going away -------------------------------------
    async def _dispatch(self, req: Request) -> AnyResponse:
        try:
            it = self.handler(req).__await__()
            try:
                trap = it.send(None)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            # The handler suspended (a long-poll): watch the socket until it finishes.
            # Nothing may enter or leave a cancel scope between its first step and the rest.
            watch = self._start_watch()
            try:
                return await _Resume(it, trap)
            finally:
                await self._stop_watch(watch)
        except HTTPError as exc:
            return Response.text(exc.message, exc.status)
        except Exception:
            log.exception("handler for %s %s failed", req.method, req.target)
            return Response.text("Internal Server Error", 500)

    def _start_watch(self) -> Watch:
        peers = self.server.peers if self.server is not None else None
        if (
            peers is not None
            and not peers.epoll.closed
            and isinstance(self.stream, trio.SocketStream)
        ):
            fd = self.stream.socket.fileno()
            peers.add(fd, self)
            return fd
        watch = (trio.CancelScope(), trio.Event())
        self.spawn(self._watch_peer, *watch)
        return watch

    async def _stop_watch(self, watch: Watch) -> None:
        if isinstance(watch, int):
            assert self.server is not None and self.server.peers is not None
            self.server.peers.discard(watch)
        else:
            watch[0].cancel()
            await watch[1].wait()  # it must stop reading before we read again

    def take_bytes(self, fd: int) -> bool:
        """The peer watcher saw `fd` readable: keep the bytes, or cancel on EOF.

        Returns whether to keep watching."""
        try:
            data = os.read(fd, RECEIVE_BYTES)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self.eof = True
            self.scope.cancel()
            return False
        self.pending += data
        return len(self.pending) < self.limits.max_header_bytes

    async def _watch_peer(self, scope: trio.CancelScope, done: trio.Event) -> None:
        """Read while a handler or stream runs: keep early bytes; EOF cancels the connection."""
        try:
            with scope:
                while len(self.pending) < self.limits.max_header_bytes:
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        break
                    self.pending += data
                else:
                    return  # enough buffered: stop reading, let TCP push back
                self.eof = True
                self.scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.eof = True
            self.scope.cancel()
        finally:
            done.set()


async def handle_connection(
    stream: trio.abc.Stream, handler: Handler, limits: Limits, remote: tuple[str, int]
) -> None:
    """Serve HTTP/1.1 on one connected stream until it closes; closes `stream` at the end."""
    await Connection(stream, handler, limits, remote).run()
