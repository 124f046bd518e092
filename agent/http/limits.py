"""The HTTP shell's limits and timeouts (``Limits``), its I/O sizes, and the phases a
connection goes through (each phase has its own deadline)."""

from __future__ import annotations

from dataclasses import dataclass

RECEIVE_BYTES = 65536
LINGER_BYTES = 256 * 1024  # after an error response, read (and drop) this much before closing
LINGER_SECONDS = 1.0
ACLOSE_SECONDS = 1.0  # how long a stream's aclose() may take

IDLE, HEAD, BODY, HANDLER, WRITE = "idle", "head", "body", "handler", "write"


@dataclass(frozen=True)
class Limits:
    """Per-connection limits and timeouts (seconds)."""

    max_header_bytes: int = 16 * 1024  # request head larger than this -> 431
    max_body_bytes: int = 1 * 1024 * 1024  # request body (or WS message) larger -> 413
    header_timeout: float = 10.0  # complete request head within this -> else 408 + close
    idle_timeout: float = 60.0  # keep-alive wait for the next request -> silent close
    body_timeout: float = 30.0  # complete request body within this -> else 408 + close
    max_connections: int = 20_000  # at the cap one idle or parked connection makes room
    max_parked: int = 16_384  # parked long-polls; more get 503
    max_conns_per_client: int = 200  # per client IP, 0 = no cap; more get 429 (Consul's)
    write_timeout: float = 30.0  # one write of a response (or chunk) -> else close
    shutdown_grace: float = 5.0  # on shutdown, in-progress writes may finish within this
