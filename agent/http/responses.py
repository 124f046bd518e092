"""Writing a connection's answers: a plain response, a protocol error (400/408/413/431, then
close), a chunked stream (watching the peer meanwhile), the answer to a parked long-poll
(which ``fanout.py`` may have written itself) and the WebSocket upgrade.

``Responder`` is the writing half of ``connection.Connection`` (a mixin: it uses the
connection's stream, h11 state, phase and deadline, and its peer watch).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from http import HTTPStatus

import h11
import trio

from .fanout import http_date
from .limits import ACLOSE_SECONDS, WRITE, Limits
from .types import (
    TEXT_PLAIN,
    LongPoll,
    RawChunk,
    Request,
    Response,
    StreamResponse,
    WebSocketResponse,
)

log = logging.getLogger("rumor.http")

_REASONS = {int(s): s.phrase.encode("ascii") for s in HTTPStatus}
Watch = int | tuple[trio.CancelScope, trio.Event]  # a watched fd, or a watcher task's handles


class Responder:
    """The writing half of a connection (see ``connection.Connection`` for the state)."""

    stream: trio.abc.Stream
    conn: h11.Connection
    limits: Limits
    remote: tuple[str, int]
    phase: str
    deadline: float
    closing: bool
    linger: bool
    parked: bool
    poll_scope: trio.CancelScope
    pending: bytearray
    raw_headers: Sequence[tuple[bytes, bytes]]
    raw_target: bytes

    def _start_watch(self) -> Watch:  # the connection's: watch the peer while we write
        raise NotImplementedError

    async def _stop_watch(self, watch: Watch) -> None:
        raise NotImplementedError

    async def _long_poll(self, req: Request, poll: LongPoll) -> bool:
        """Park in `poll.polls` (fanout.py); answer with what it wrote or rendered."""
        limits = self.limits
        if poll.polls.parked >= limits.max_parked:
            text = f"Too many blocking queries parked (the limit is {limits.max_parked}); retry"
            return await self._send_response(req, Response.text(text, 503))
        fd = -1  # can the broadcast write our answer itself?
        if (
            isinstance(self.stream, trio.SocketStream)
            and req.method != "HEAD"
            and self.conn.their_http_version == b"1.1"
            and "close" not in (req.header("connection") or "").lower()
            and not self.closing
        ):
            fd = self.stream.socket.fileno()
        watch = self._start_watch()
        self.parked = True
        self.poll_scope = trio.CancelScope()
        try:
            answer = await poll.polls.wait(poll.key, poll.timeout, fd, self.poll_scope)
        finally:
            self.parked = False
            await self._stop_watch(watch)
        if answer.wire is None:
            return await self._send_response(req, answer.response)
        if answer.sent < 0 or self.closing:
            return False
        body, conn = answer.response.body, self.conn
        try:  # h11's bookkeeping for the bytes already written
            length = [(b"Content-Length", b"%d" % len(body))]
            conn.send_with_data_passthrough(h11.Response(status_code=answer.response.status,
                                                         headers=length))
            if body:
                conn.send_with_data_passthrough(h11.Data(data=body))
            conn.send_with_data_passthrough(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log.error("bad long-poll answer to %s %s: %s", req.method, req.target, exc)
            return False
        if answer.sent < len(answer.wire):
            await self._write(answer.wire[answer.sent :])
        return True

    # ---- writing ---------------------------------------------------------------------------
    async def _write(self, data: bytes) -> None:
        phase, deadline = self.phase, self.deadline
        self.phase, self.deadline = WRITE, trio.current_time() + self.limits.write_timeout
        try:
            await self.stream.send_all(data)
        finally:
            self.phase, self.deadline = phase, deadline

    def _head(self, status: int, headers: list[tuple[str, str]], size: int | None) -> h11.Response:
        fields: list[tuple[bytes | str, bytes | str]] = [(b"Date", http_date())]
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
        from . import websocket  # wsproto is loaded when the first WebSocket arrives

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
