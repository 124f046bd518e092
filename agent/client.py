"""A small synchronous HTTP client for the rumor agent's API, used by the CLI.

Only the standard library (`http.client`), so client commands start fast. One fresh TCP
connection per request: nothing stale to retry, and a long-poll never shares a socket.
Connection failures raise `ClientError` with the text the CLI prints; HTTP error statuses
are returned to the caller, which knows how to word them.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

DEFAULT_ADDR = "127.0.0.1:8500"
DEFAULT_TIMEOUT = 10.0

Params = Mapping[str, str | None] | Sequence[tuple[str, str | None]] | None


class ClientError(Exception):
    """The agent could not be reached or spoke nonsense. str() is the user-facing message."""


class StatusError(ClientError):
    """The agent answered a stream request with a non-200 status (``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace").strip()


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup on any mapping."""
    low = name.lower()
    for key, value in headers.items():
        if key.lower() == low:
            return value
    return None


def parse_addr(addr: str) -> tuple[str, str, int]:
    """`host:port`, `http://host:port`, `https://host`, `[::1]:8500` -> (scheme, host, port)."""
    text = addr.strip()
    scheme = "http"
    if "://" in text:
        scheme, _, text = text.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise ClientError(f"Unsupported scheme in HTTP address {addr!r}: {scheme}")
        text = text.rstrip("/")
    default_port = 443 if scheme == "https" else 8500
    try:
        parts = urllib.parse.urlsplit("//" + text)
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ClientError(f"Invalid HTTP address {addr!r}: {e}") from None
    if not host or parts.path or parts.query:
        raise ClientError(f"Invalid HTTP address {addr!r}")
    return scheme, host, port if port is not None else default_port


def _query(params: Params) -> str:
    if not params:
        return ""
    items = params.items() if isinstance(params, Mapping) else params
    pairs = [(k, v) for k, v in items if v is not None]
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


class Client:
    """`Client("127.0.0.1:8500", token=None)`: get/put return `Response(status, headers, body)`."""

    def __init__(self, addr: str = DEFAULT_ADDR, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.scheme, self.host, self.port = parse_addr(addr)
        self.token = token or None
        self.timeout = timeout
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.display = f"{host}:{self.port}"

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=timeout)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._error(e) from None
        return conn

    def _error(self, e: BaseException) -> ClientError:
        if isinstance(e, socket.timeout | TimeoutError):
            reason = "timed out"
        elif isinstance(e, OSError) and e.strerror:
            reason = e.strerror
        else:
            reason = str(e) or type(e).__name__
        return ClientError(f"Error connecting to rumor agent at {self.display}: {reason}")

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        h = {"User-Agent": "rumor-cli", "Accept": "application/json"}
        if self.token:
            h["X-Consul-Token"] = self.token
        h.update(extra or {})
        return h

    def request(self, method: str, path: str, params: Params = None, body: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Response:
        conn = self._connect(timeout if timeout is not None else self.timeout)
        try:
            conn.request(method, path + _query(params), body=body,
                         headers=self._headers(headers))
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, dict(resp.getheaders()), data)
        except (OSError, http.client.HTTPException) as e:
            raise self._error(e) from None
        finally:
            conn.close()

    def get(self, path: str, params: Params = None, timeout: float | None = None) -> Response:
        return self.request("GET", path, params, timeout=timeout)

    def put(self, path: str, params: Params = None, body: bytes | None = None,
            content_type: str | None = None, timeout: float | None = None) -> Response:
        extra = {"Content-Type": content_type} if content_type else None
        return self.request("PUT", path, params, body=b"" if body is None else body,
                            headers=extra, timeout=timeout)

    def stream(self, path: str, params: Params = None,
               idle_timeout: float | None = None) -> Iterator[str]:
        """GET a streaming endpoint and yield its lines (without the newline) as they arrive.

        Raises ClientError if the agent is unreachable or silent for ``idle_timeout`` s,
        StatusError if it answers with a non-200 status."""
        conn = self._connect(self.timeout)
        try:
            conn.request("GET", path + _query(params), headers=self._headers())
            resp = conn.getresponse()
            if resp.status != 200:
                body = resp.read().decode("utf-8", "replace").strip()
                raise StatusError(resp.status,
                                  f"Unexpected response code: {resp.status} ({body})")
            if conn.sock is not None:
                conn.sock.settimeout(idle_timeout)  # None: a quiet log stream is not an error
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line.decode("utf-8", "replace").rstrip("\r\n")
        except (OSError, http.client.HTTPException) as e:
            raise self._error(e) from None
        finally:
            conn.close()
