"""The HTTP/1.1 shell: h11 on trio, one task per connection.

Owns the wire policy the handlers never see: keep-alive with an idle timeout, a header-read
timeout (408) against slowloris, header (431) and body (413) size limits, `Expect:
100-continue`, HEAD, pipelining, malformed requests (400 + close), handler errors (500,
logged on "rumor.http"), `Date` / `Content-Length`, chunked streaming, handing an upgrade over
to `websocket.py`, connection limits and graceful shutdown.

Hang-ups: while a handler is suspended (a long-poll) or a stream is open, the connection's
socket is watched; EOF cancels the connection's scope, so the handler sees Cancelled at once.
Bytes that arrive meanwhile (a pipelined request) are kept, up to `max_header_bytes`, and
parsed afterwards. Under `serve_http` one task with its own epoll set watches every parked
socket (registering is a syscall, so a parked long-poll costs no extra task); elsewhere (other
platforms, `handle_connection` on a non-socket stream) a watcher task per wait does it.
A handler that finishes without ever suspending (the common case) is not watched at all: the
shell steps its coroutine once by hand, and only if it yielded to trio starts watching and
forwards the rest unchanged (`_Resume`). Nothing enters or leaves a cancel scope in between,
so the handler's own cancel scopes nest correctly.

Timeouts are lazy: each phase of a connection (idle, head, body, handler, write) stores a
deadline float, which is cheap to update per request. Under `serve_http` one reaper task
expires connections whose deadline passed (checked every second, or a quarter of the
shortest timeout if that is smaller); `handle_connection` alone runs an exact watchdog task.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NoReturn

import h11
import trio

from . import websocket
from .types import (
    TEXT_PLAIN,
    AnyResponse,
    Handler,
    HTTPError,
    RawChunk,
    Request,
    Response,
    StreamResponse,
    WebSocketResponse,
    make_request,
)

__all__ = ["Limits", "handle_connection", "serve_http"]

log = logging.getLogger("rumor.http")

RECEIVE_BYTES = 65536
LINGER_BYTES = 256 * 1024  # after an error response, read (and drop) this much before closing
LINGER_SECONDS = 1.0
ACLOSE_SECONDS = 1.0  # how long a stream's aclose() may take
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclass(frozen=True)
class Limits:
    """Per-connection limits and timeouts (seconds)."""

    max_header_bytes: int = 16 * 1024  # request head larger than this -> 431
    max_body_bytes: int = 1 * 1024 * 1024  # request body (or WS message) larger -> 413
    header_timeout: float = 10.0  # complete request head within this -> else 408 + close
    idle_timeout: float = 60.0  # keep-alive wait for the next request -> silent close
    body_timeout: float = 30.0  # complete request body within this -> else 408 + close
    max_connections: int = 10_000  # more wait in the kernel's accept queue
    write_timeout: float = 30.0  # one write of a response (or chunk) -> else close
    shutdown_grace: float = 5.0  # on shutdown, in-progress writes may finish within this


_REASONS = {int(s): s.phrase.encode("ascii") for s in HTTPStatus}
_date_second = -1
_date_value = b""


def _http_date() -> bytes:
    global _date_second, _date_value
    now = int(time.time())
    if now != _date_second:
        _date_second, _date_value = now, formatdate(now, usegmt=True).encode("ascii")
    return _date_value


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


IDLE, HEAD, BODY, HANDLER, WRITE = "idle", "head", "body", "handler", "write"
_Watch = int | tuple[trio.CancelScope, trio.Event]  # a watched fd, or a watcher task's handles


class _Connection:
    """One client connection: the request/response loop, its phases and deadlines."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        limits: Limits,
        remote: tuple[str, int],
        server: _Server | None = None,
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

    def _start_watch(self) -> _Watch:
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

    async def _stop_watch(self, watch: _Watch) -> None:
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

    # ---- writing ---------------------------------------------------------------------------
    async def _write(self, data: bytes) -> None:
        phase, deadline = self.phase, self.deadline
        self.phase, self.deadline = WRITE, trio.current_time() + self.limits.write_timeout
        try:
            await self.stream.send_all(data)
        finally:
            self.phase, self.deadline = phase, deadline

    def _head(self, status: int, headers: list[tuple[str, str]], size: int | None) -> h11.Response:
        fields: list[tuple[bytes | str, bytes | str]] = [(b"Date", _http_date())]
        if size is not None and status != 204 and status != 304:
            fields.append((b"Content-Length", b"%d" % size))
        fields.extend(headers)
        if self.closing:
            fields.append((b"Connection", b"close"))
        reason = _REASONS.get(status, b"")
        return h11.Response(status_code=status, headers=fields, reason=reason)  # type: ignore[arg-type]

    async def _send_response(self, req: Request, resp: Response) -> bool:
        conn, body = self.conn, resp.body
        try:
            data = conn.send(self._head(resp.status, resp.headers, len(body)))
            if body and req.method != "HEAD":
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log.error("bad response to %s %s: %s", req.method, req.target, exc)
            return False
        await self._write(data)
        return True

    async def _send_error(self, status: int) -> None:
        """Answer a protocol-level error (400/408/413/431) and mark the connection to close."""
        conn = self.conn
        self.linger = True
        if conn.our_state is not h11.IDLE and conn.our_state is not h11.SEND_RESPONSE:
            return
        text = HTTPStatus(status).phrase
        if status == 413:
            text = f"Request body too large: the limit is {self.limits.max_body_bytes} bytes"
        body = text.encode("ascii")
        headers = [("Content-Type", TEXT_PLAIN), ("Connection", "close")]
        try:
            data = conn.send(self._head(status, headers, len(body)))
            data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        try:
            await self._write(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _send_stream(self, req: Request, resp: StreamResponse) -> bool:
        conn, chunks = self.conn, resp.chunks
        try:
            try:
                head = conn.send(self._head(resp.status, resp.headers, None))
            except h11.LocalProtocolError as exc:
                log.error("bad stream response to %s %s: %s", req.method, req.target, exc)
                return False
            await self._write(head)
            if req.method != "HEAD" and resp.status != 204 and resp.status != 304:
                if not await self._pump(chunks, resp):
                    return False
            await self._write(conn.send(h11.EndOfMessage()))
            return True
        finally:
            await _aclose_iterator(chunks)

    async def _pump(self, chunks: AsyncIterator[bytes], resp: StreamResponse) -> bool:
        """Write every chunk as it comes while watching the peer; False if it went wrong."""
        watch = self._start_watch()
        slot = resp.direct
        if (slot is not None and isinstance(self.stream, trio.SocketStream)
                and self.conn.their_http_version == b"1.1"
                and not any(k.lower() in ("content-length", "transfer-encoding")
                            for k, _ in resp.headers)):  # h11 frames the body chunked
            slot.fd = self.stream.socket.fileno()
        try:
            async for chunk in chunks:
                if type(chunk) is RawChunk:
                    await self._write(chunk)
                elif chunk:
                    await self._write(self.conn.send(h11.Data(data=chunk)))
                if self.closing:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        except Exception:
            log.exception("stream for %s:%s failed", *self.remote)
            return False
        finally:
            if slot is not None:
                slot.fd = -1
            await self._stop_watch(watch)
        return True

    async def _upgrade(self, result: WebSocketResponse) -> None:
        conn = self.conn
        if conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]
            await self._send_error(400)
            return
        try:
            ws, handshake = websocket.accept(self.raw_headers, self.raw_target, result.subprotocol)
        except websocket.HandshakeError:
            # h11 still expects an answer to the upgrade request
            await self._send_error(400)
            return
        await self._write(handshake)
        trailing = conn.trailing_data[0] + bytes(self.pending)  # h11's part ends here
        self.pending.clear()
        await websocket.run_session(
            self.stream, ws, trailing, result.handler, self.limits.max_body_bytes
        )


async def _aclose_iterator(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is None:
        return
    with trio.CancelScope(shield=True, deadline=trio.current_time() + ACLOSE_SECONDS):
        try:
            await aclose()
        except Exception:
            log.exception("closing a response stream failed")


async def handle_connection(
    stream: trio.abc.Stream, handler: Handler, limits: Limits, remote: tuple[str, int]
) -> None:
    """Serve HTTP/1.1 on one connected stream until it closes; closes `stream` at the end."""
    await _Connection(stream, handler, limits, remote).run()


class _PeerWatch:
    """One task and one epoll set noticing bytes or EOF on the sockets of parked connections.

    Registering a socket is a syscall, not a task: a parked long-poll costs no extra task."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.watched: dict[int, _Connection] = {}

    def add(self, fd: int, conn: _Connection) -> None:
        self.epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        self.watched[fd] = conn

    def discard(self, fd: int) -> None:
        if self.watched.pop(fd, None) is not None and not self.epoll.closed:
            self.epoll.unregister(fd)

    async def run(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self.epoll.fileno())
                for fd, _ in self.epoll.poll(0):
                    conn = self.watched.get(fd)
                    if conn is not None and not conn.take_bytes(fd):
                        self.discard(fd)
        finally:
            self.epoll.close()


class _Server:
    """Accept loops, live connections, their timeouts (one reaper task) and shutdown."""

    def __init__(self, handler: Handler, limits: Limits) -> None:
        self.handler, self.limits = handler, limits
        self.slots = trio.Semaphore(limits.max_connections)
        self.conns: set[_Connection] = set()
        self.closing = False
        self.shield = trio.CancelScope(shield=True)
        self.accepting = trio.CancelScope()
        self.peers = _PeerWatch() if hasattr(select, "epoll") else None
        self.spawn: Callable[..., object]

    async def host(
        self,
        listeners: list[trio.SocketListener],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with self.shield:  # the caller's cancellation reaches us only through shutdown()
            async with trio.open_nursery() as conns:
                self.spawn = conns.start_soon
                with self.accepting:
                    async with trio.open_nursery() as accepts:
                        accepts.start_soon(self._reap)
                        if self.peers is not None:
                            accepts.start_soon(self.peers.run)
                        for listener in listeners:
                            accepts.start_soon(self._accept_loop, listener, conns)
                        task_status.started()
                for listener in listeners:
                    await trio.aclose_forcefully(listener)

    def shutdown(self) -> None:
        self.closing = True
        self.accepting.cancel()
        self.shield.deadline = trio.current_time() + self.limits.shutdown_grace
        for conn in list(self.conns):
            conn.shutdown()

    async def _reap(self) -> None:
        """Expire connections whose phase deadline passed (checked every `tick` seconds)."""
        limits = self.limits
        shortest = min(
            limits.header_timeout, limits.idle_timeout, limits.body_timeout, limits.write_timeout
        )
        tick = min(1.0, max(0.01, shortest / 4))
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for conn in self.conns:
                if now >= conn.deadline:
                    conn.expire()

    async def _accept_loop(self, listener: trio.SocketListener, conns: trio.Nursery) -> None:
        while True:
            await self.slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                self.slots.release()
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                log.error("accept failed (%s); retrying in 0.1 s", exc)
                await trio.sleep(0.1)
                continue
            except BaseException:
                self.slots.release()
                raise
            conns.start_soon(self._run_connection, stream)

    async def _run_connection(self, stream: trio.SocketStream) -> None:
        try:
            try:
                peer = stream.socket.getpeername()
                remote = (str(peer[0]), int(peer[1]))
            except OSError:
                remote = ("", 0)
            conn = _Connection(stream, self.handler, self.limits, remote, self)
            self.conns.add(conn)
            try:
                await conn.run()
            finally:
                self.conns.discard(conn)
        finally:
            self.slots.release()


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: Limits = Limits(),  # noqa: B008  (frozen, so sharing the default is safe)
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Listen on host:port and serve `handler` until cancelled.

    Reports the bound port through `task_status.started(port)` (useful with port 0).
    Raises OSError naming host:port if it cannot listen. On cancellation it stops accepting,
    closes idle connections, cancels running handlers and streams, lets writes in progress
    finish (up to `limits.shutdown_grace`), then re-raises the cancellation.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host or None)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from exc
    server = _Server(handler, limits)
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(server.host, listeners)
            task_status.started(listeners[0].socket.getsockname()[1])
            await trio.sleep_forever()
        finally:
            server.shutdown()
    raise AssertionError("unreachable")  # sleep_forever only ends by cancellation
