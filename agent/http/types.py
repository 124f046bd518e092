"""Plain data passed between the HTTP shell and the API handlers.

This module owns the request and response shapes only: `Request` (what the shell parsed),
`Response` / `StreamResponse` / `WebSocketResponse` (what a handler returns), `HTTPError`
(what a handler raises to answer with a plain-text error), and the `WebSocket` protocol the
shell hands to a WebSocket handler.  Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

__all__ = [
    "ConnectionClosed",
    "DirectSlot",
    "RawChunk",
    "chunk_frame",
    "HTTPError",
    "Handler",
    "Request",
    "Response",
    "StreamResponse",
    "WebSocket",
    "WebSocketResponse",
    "make_request",
]

TEXT_PLAIN = "text/plain; charset=utf-8"
APPLICATION_JSON = "application/json"


@dataclass(slots=True)
class Request:
    """One parsed HTTP request; the body has already been read in full."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]
    body: bytes = b""
    remote: tuple[str, int] = ("", 0)
    params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def arg(self, name: str) -> str | None:
        """The first value of query argument `name`, or None if absent."""
        values = self.query.get(name)
        return values[0] if values else None

    def has_arg(self, name: str) -> bool:
        """True if `name` appears in the query string, even as `?name` with no value."""
        return name in self.query


def make_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    remote: tuple[str, int] = ("", 0),
) -> Request:
    """Build a Request from a raw target: split off the query, percent-decode the path."""
    raw_path, sep, raw_query = target.partition("?")
    if not raw_path.startswith("/") and "://" in raw_path:
        # absolute-form ("http://host/path"): keep only the path
        after_scheme = raw_path.split("://", 1)[1]
        slash = after_scheme.find("/")
        raw_path = after_scheme[slash:] if slash >= 0 else "/"
    path = unquote(raw_path) if "%" in raw_path else raw_path
    query = parse_qs(raw_query, keep_blank_values=True) if sep and raw_query else {}
    return Request(method, target, path, query, headers or [], body, remote, {})


class HTTPError(Exception):
    """Raised by a handler: the shell answers `message` as text/plain with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


# Go's encoding/json escapes these inside strings; Python's json does not.
_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_PRETTY = json.JSONEncoder(ensure_ascii=False, indent=4, separators=(",", ": "))


def go_json(obj: Any, pretty: bool = False) -> bytes:
    """Encode like Go's json.Marshal (compact) or Consul's `?pretty` (4-space indent + newline)."""
    text = _PRETTY.encode(obj) + "\n" if pretty else _COMPACT.encode(obj)
    for char, escaped in _GO_ESCAPES:
        if char in text:
            text = text.replace(char, escaped)
    return text.encode("utf-8")


@dataclass(slots=True)
class Response:
    """A complete response; the shell adds Date and Content-Length."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(
        cls,
        obj: Any,
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
        pretty: bool = False,
    ) -> Response:
        """`obj` as JSON, encoded the way Go encodes it (see `go_json`)."""
        return cls(status, go_json(obj, pretty), [("Content-Type", APPLICATION_JSON), *headers])

    @classmethod
    def text(cls, message: str, status: int) -> Response:
        """`message` verbatim as text/plain; charset=utf-8."""
        return cls(status, message.encode("utf-8"), [("Content-Type", TEXT_PLAIN)])


class RawChunk(bytes):
    """A stream chunk the shell writes as it is, without chunked framing: the rest of a frame
    the producer began writing through a `DirectSlot`."""


def chunk_frame(data: bytes) -> bytes:
    """`data` framed as one HTTP/1.1 chunk (what the shell writes for a yielded chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass(slots=True)
class DirectSlot:
    """Lets a producer write to a stream's socket itself, from any task, without waking the
    task that streams the response (fan-out: one loop writes one record to N sockets).

    While the body streams chunked and the streaming task is waiting for the next chunk
    (nothing else is being written), the producer may `os.write(fd, chunk_frame(data))`; the
    shell sets `fd` (else -1).  A write that took only part of a frame must be finished by
    yielding the rest as a `RawChunk` before anything else.
    """

    fd: int = -1


@dataclass(slots=True)
class StreamResponse:
    """A long-lived chunked response: each chunk is written and flushed when produced.

    When the client goes away (or the server shuts down) the shell closes `chunks`
    (calls its `aclose()` if it has one), so an async generator's `finally` runs.
    A `RawChunk` is written without framing; `direct`, if given, is filled in (see
    `DirectSlot`).
    """

    status: int
    headers: list[tuple[str, str]]
    chunks: AsyncIterator[bytes]
    direct: DirectSlot | None = None


class ConnectionClosed(Exception):
    """The WebSocket is closed (by the peer, by us, or because the TCP connection broke)."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class WebSocket(Protocol):
    """What a WebSocket handler gets once the shell has completed the upgrade."""

    async def send_text(self, message: str) -> None: ...

    async def receive_text(self) -> str: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@dataclass(slots=True)
class WebSocketResponse:
    """Returned by a handler to accept a WebSocket upgrade and run `handler` on it."""

    handler: Callable[[WebSocket], Awaitable[None]]
    subprotocol: str | None = None


AnyResponse = Response | StreamResponse | WebSocketResponse
Handler = Callable[[Request], Awaitable[AnyResponse]]
