"""The HTTP/1.1 shell: h11 on trio, one task per connection.

Owns the wire policy the handlers never see: keep-alive with an idle timeout, a header-read
timeout (408) against slowloris, header (431) and body (413) size limits, `Expect:
100-continue`, HEAD, pipelining, malformed requests (400 + close), handler errors (500,
logged on "rumor.http"), `Date` / `Content-Length`, chunked streaming, handing an upgrade over
to `websocket.py`, connection limits and graceful shutdown. Parked long-polls (`LongPoll`)
are answered by `fanout.py`; who gets a connection at all is `admission.py`'s policy. With
`tls`, each accepted socket is wrapped in a trio `SSLStream` (the handshake runs under the
header timeout).

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

Layout: `limits.py` (Limits, phases), `connection.py` (one connection: the loop, reading, the
handler raced against a hang-up), `responses.py` (writing answers, streams, long-poll answers,
the upgrade), and here the listener side: accept loops, connection caps, the reaper, the
shared peer watcher and graceful shutdown.
"""

from __future__ import annotations

import errno
import logging
import select
import ssl
from collections.abc import Callable
from typing import NoReturn

import trio

from . import admission
from .connection import Connection, handle_connection
from .limits import IDLE, Limits
from .types import Handler

__all__ = ["Limits", "handle_connection", "serve_http"]

log = logging.getLogger("rumor.http")

_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class _PeerWatch:
    """One task and one epoll set noticing bytes or EOF on the sockets of parked connections.

    Registering a socket is a syscall, not a task: a parked long-poll costs no extra task."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.watched: dict[int, Connection] = {}

    def add(self, fd: int, conn: Connection) -> None:
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


class Server:
    """Accept loops, live connections, their timeouts (one reaper task) and shutdown."""

    def __init__(self, handler: Handler, limits: Limits,
                 tls: Callable[[], ssl.SSLContext] | None = None) -> None:
        self.handler, self.limits, self.tls = handler, limits, tls
        self.conns: set[Connection] = set()
        self.evicting = 0  # of conns, closed to make room but not gone yet
        self.clients = admission.ClientCounts(limits.max_conns_per_client)
        self.out_of_files = admission.OutOfFiles()
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
                self.out_of_files.close()

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
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                if exc.errno in admission.FD_ERRNOS:
                    self.out_of_files.note(exc)
                    if self._make_room(parked_too=True):
                        await trio.sleep(0.001)  # let it close; then accept normally
                    else:
                        await self.out_of_files.answer_one(listener)
                else:
                    log.error("accept failed (%s); retrying in 0.1 s", exc)
                    await trio.sleep(0.1)
                continue
            conns.start_soon(self._run_connection, stream)

    def _make_room(self, parked_too: bool) -> bool:
        """Close the connection idle longest (else, if `parked_too`, the oldest parked one)."""
        victim: Connection | None = None
        for conn in self.conns:
            if conn.phase is IDLE and not conn.first and not conn.evicted:
                if victim is None or conn.deadline < victim.deadline:
                    victim = conn
        if victim is None and parked_too:
            for conn in self.conns:
                if conn.parked and not conn.evicted:
                    if victim is None or conn.started < victim.started:
                        victim = conn
        if victim is None:
            return False
        victim.evicted = True
        self.evicting += 1
        if victim.parked:  # answer it now, as things stand (Consul clients just ask again)
            victim.closing = True
            victim.poll_scope.cancel()
        else:
            victim.expire()
        return True

    async def _refuse(self, stream: trio.SocketStream, answer: bytes) -> None:
        """Turn a connection away: plain HTTP gets `answer`; on HTTPS (no handshake spent on
        a refused client) it is just closed."""
        if self.tls is None:
            await admission.refuse(stream, answer)
        else:
            await trio.aclose_forcefully(stream)

    async def _run_connection(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            remote = (str(peer[0]), int(peer[1]))
        except OSError:
            remote = ("", 0)
        if not self.clients.admit(remote[0]):
            await self._refuse(stream, admission.TOO_MANY_PER_CLIENT)
            return
        try:
            limit = self.limits.max_connections
            if len(self.conns) - self.evicting >= limit and not self._make_room(parked_too=True):
                await self._refuse(stream, admission.too_many_connections(limit))
                return
            wrapped: trio.abc.Stream = stream
            if self.tls is not None:  # the context is asked per connection: reload swaps it
                wrapped = trio.SSLStream(stream, self.tls(), server_side=True,
                                         https_compatible=True)
            conn = Connection(wrapped, self.handler, self.limits, remote, self)
            self.conns.add(conn)
            try:
                await conn.run()
            finally:
                self.conns.discard(conn)
                if conn.evicted:
                    self.evicting -= 1
        finally:
            self.clients.release(remote[0])


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: Limits = Limits(),  # noqa: B008  (frozen, so sharing the default is safe)
    tls: Callable[[], ssl.SSLContext] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Listen on host:port and serve `handler` until cancelled.

    Reports the bound port through `task_status.started(port)` (useful with port 0).
    With `tls` (returns the current server context) it serves HTTPS.
    Raises OSError naming host:port if it cannot listen. On cancellation it stops accepting,
    closes idle connections, cancels running handlers and streams, lets writes in progress
    finish (up to `limits.shutdown_grace`), then re-raises the cancellation.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host or None)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from exc
    server = Server(handler, limits, tls)
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(server.host, listeners)
            task_status.started(listeners[0].socket.getsockname()[1])
            await trio.sleep_forever()
        finally:
            server.shutdown()
    raise AssertionError("unreachable")  # sleep_forever only ends by cancellation
