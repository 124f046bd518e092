"""HTTP/1.1 + WebSocket shell for the agent's API (h11 + wsproto on trio).

`types` holds the request/response shapes, `routing` the path/method table, `limits` the
limits and timeouts, `connection` one connection's request loop, `responses` how answers are
written, `server` the listener (accept, caps, reaper, shutdown), `admission` who gets a
connection, `fanout` parked long-polls, `websocket` upgraded sessions.
"""

from .routing import Router
from .server import Limits, handle_connection, serve_http
from .types import (
    ConnectionClosed,
    Handler,
    HTTPError,
    Request,
    Response,
    StreamResponse,
    WebSocket,
    WebSocketResponse,
)

__all__ = [
    "ConnectionClosed",
    "HTTPError",
    "Handler",
    "Limits",
    "Request",
    "Response",
    "Router",
    "StreamResponse",
    "WebSocket",
    "WebSocketResponse",
    "handle_connection",
    "serve_http",
]
