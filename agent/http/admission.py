"""Who gets a connection: the per-client cap, the total cap, and running out of descriptors.

Owns the policy the accept loop applies before a connection is served:

* **Per client IP** at most `Limits.max_conns_per_client` open connections (Consul's
  `limits.http_max_conns_per_client`, default 200, 0 = no limit; Consul applies it through
  go-connlimit). The next one is answered at once with Consul's 429 and closed; it was never
  counted.
* **Total**: at `Limits.max_connections` open connections a newcomer is still accepted and
  served: the keep-alive connection idle longest is closed to make room, else the oldest
  parked long-poll is answered at once (as things stand, with `Connection: close`; a blocking
  query may always return early and Consul clients simply ask again). Parked queries, capped
  on their own by `Limits.max_parked` (see `fanout.py`), therefore never hold the slot a new
  request needs. Only when every connection is busy in a handler does the newcomer get 503.
* **Out of file descriptors** (EMFILE/ENFILE on accept): logged (at most once per second,
  with a count); room is made as above and the accept retried. If there is nothing to close,
  a spare descriptor kept for this moment is released so the client waiting in the kernel's
  queue is accepted, answered 503 and closed (then the spare is re-taken); without a spare
  the loop backs off 0.1 s. The agent never hangs or crashes on it.
"""

from __future__ import annotations

import errno
import logging
import os
import time

import trio

__all__ = ["FD_ERRNOS", "ClientCounts", "OutOfFiles", "refusal"]

log = logging.getLogger("rumor.http")

FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
REFUSE_WRITE_SECONDS = 0.05  # Consul gives a refused client 10 ms; be a bit kinder
REFUSE_LINGER_SECONDS = 0.5  # read what the client sent, so closing does not reset it


def refusal(status: int, text: str) -> bytes:
    """A complete `Connection: close` response written before any request was read."""
    reason = {429: "Too Many Requests", 503: "Service Unavailable"}[status]
    body = text.encode("utf-8")
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (status, reason.encode("ascii"), len(body), body)
    )


# Consul's exact answer (go-connlimit's tooManyRequestsResponse)
TOO_MANY_PER_CLIENT = refusal(
    429, "Your IP is issuing too many concurrent connections, please rate limit your calls\n"
)


def too_many_connections(limit: int) -> bytes:
    return refusal(503, f"Too many open connections (the limit is {limit}); retry later\n")


OUT_OF_FILES = refusal(503, "The agent is out of file descriptors; retry later\n")


async def refuse(stream: trio.SocketStream, answer: bytes, linger: bool = True) -> None:
    """Write `answer`, half-close, drain (briefly if `linger`, else what is there), close."""
    try:
        with trio.move_on_after(REFUSE_WRITE_SECONDS):
            await stream.send_all(answer)
        await stream.send_eof()
        if linger:
            with trio.move_on_after(REFUSE_LINGER_SECONDS):
                while await stream.receive_some(65536):
                    pass
        else:  # just what already arrived, so that closing sends FIN rather than RST
            fd = stream.socket.fileno()
            while os.read(fd, 65536):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # BlockingIOError included: nothing more to drain
    finally:
        await trio.aclose_forcefully(stream)


class ClientCounts:
    """Open connections per client IP, against Consul's per-client cap (0 = no cap)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}
        self.refused = 0

    def admit(self, ip: str) -> bool:
        n = self.open.get(ip, 0)
        if self.limit and n >= self.limit:
            self.refused += 1
            return False
        self.open[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        n = self.open.get(ip, 0) - 1
        if n > 0:
            self.open[ip] = n
        else:
            self.open.pop(ip, None)


class OutOfFiles:
    """The accept loop's answer to EMFILE/ENFILE: log, free, accept with the spare, 503."""

    def __init__(self) -> None:
        self.spare = self._take()
        self.events = 0  # accept failures for lack of descriptors
        self._unlogged = 0
        self._logged_at = -1e9

    @staticmethod
    def _take() -> int:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1

    def close(self) -> None:
        if self.spare >= 0:
            os.close(self.spare)
            self.spare = -1

    def note(self, exc: OSError) -> None:
        self.events += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            log.error(
                "accept failed %d time(s): %s; answering 503 and closing idle connections",
                self._unlogged,
                exc.strerror or exc,
            )
            self._unlogged, self._logged_at = 0, now

    async def answer_one(self, listener: trio.SocketListener) -> None:
        """Release the spare descriptor, accept one waiting client, answer it 503, re-take
        the spare. Without a spare (or if the accept still fails) just back off 0.1 s."""
        if self.spare < 0:
            self.spare = self._take()
            await trio.sleep(0.1)
            return
        os.close(self.spare)
        self.spare = -1
        stream: trio.SocketStream | None = None
        try:
            with trio.move_on_after(0.1):
                stream = await listener.accept()
        except OSError:
            await trio.sleep(0.1)
        if stream is not None:
            await refuse(stream, OUT_OF_FILES, linger=False)
        self.spare = self._take()
