"""HTTP/1.1 + WebSocket shell for the agent's API (h11 + wsproto on trio).

`types` holds the request/response shapes, `routing` the path/method table, `server` the
connection loop and listener, `websocket` upgraded sessions.
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
