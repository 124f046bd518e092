"""Parked long-polls, answered by one synchronous broadcast.

A handler that has to wait for a change returns `LongPoll(polls, key, timeout)`; the shell
then parks the connection in `polls` under `key`. A parked long-poll costs an entry in a dict
and its connection task asleep in one `wait_task_rescheduled` (no watcher task, no
`trio.Event`; the shell's epoll set notices a hang-up).

`LongPolls.notify()` is called synchronously by whoever changed the data. For each key that
has parked requests it asks `changed(key)`; for a changed key it renders the answer once
(`render(key)`), serializes the whole HTTP response once, and writes those same bytes to every
parked socket of that key with a non-blocking `os.write`, in one plain loop. Only then are the
parked tasks rescheduled; they do h11's bookkeeping and send whatever the kernel did not take
at once. This is what lets one agent answer 10,000 parked long-polls within ~0.1 s of an event
(waking 10,000 tasks, each rendering and writing its own answer, takes over a second).
The answered tasks are woken `WAKE_BATCH` at a time, one batch per scheduler round (a system
task wakes the rest): each still costs ~0.05-0.1 ms of bookkeeping, and 10,000 woken at once
would make every other task -- the fire that caused the broadcast waiting for its fsync, a
new client's request -- wait behind all of them (measured: the fire's reply 1-3 s late).
Requests the loop cannot answer with shared bytes (not a plain socket, HEAD, HTTP/1.0,
`Connection: close`, a server that is shutting down) get the same rendered `Response` through
the shell's normal path when they wake. A request whose `timeout` passes is answered with
`render(key)` as it stands then.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from http import HTTPStatus

import trio

from .types import Response

__all__ = ["Answer", "LongPolls", "http_date", "response_bytes"]

log = logging.getLogger("rumor.http")

WAKE_BATCH = 256  # answered tasks woken per scheduler round (the rest by a system task)

_REASONS = {int(s): s.phrase.encode("ascii") for s in HTTPStatus}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache: tuple[int, bytes] = (-1, b"")


def http_date() -> bytes:
    """Now as an HTTP date (RFC 9110 IMF-fixdate), computed once per second.

    (Written out here rather than taken from email.utils: that package costs ~2 MB of RSS.)"""
    global _date_cache
    now = int(time.time())
    if now != _date_cache[0]:
        t = time.gmtime(now)
        day, month = _DAYS[t.tm_wday], _MONTHS[t.tm_mon - 1]
        text = (f"{day}, {t.tm_mday:02d} {month} {t.tm_year:04d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
        _date_cache = (now, text.encode("ascii"))
    return _date_cache[1]


def response_bytes(resp: Response, date: bytes) -> bytes:
    """`resp` as one complete HTTP/1.1 message (Date, Content-Length, then its headers)."""
    parts = [
        b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\n"
        % (resp.status, _REASONS.get(resp.status, b""), date, len(resp.body))
    ]
    for name, value in resp.headers:
        parts.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
    parts.append(b"\r\n")
    parts.append(resp.body)
    return b"".join(parts)


@dataclass(slots=True, frozen=True)
class Answer:
    """What a parked request is woken with.

    `wire` is None when the shell must still send `response` itself; otherwise the first
    `sent` bytes of `wire` are already on the socket (`sent` -1: the socket is broken)."""

    response: Response
    wire: bytes | None = None
    sent: int = 0


class _Waiter:
    __slots__ = ("answer", "fd", "task")

    def __init__(self, task: trio.lowlevel.Task, fd: int) -> None:
        self.task, self.fd = task, fd
        self.answer: Answer | None = None


class LongPolls:
    """Parked requests grouped by key; `notify()` answers every changed key in one loop.

    `parked` is the number parked now; `on_count(delta)`, if given, is told of every change
    (the agent keeps its "blocking queries parked" gauge with it). `last_fanout` holds the
    seconds the last broadcast took and how many requests it answered."""

    def __init__(
        self,
        changed: Callable[[Hashable], bool],
        render: Callable[[Hashable], Response],
        on_count: Callable[[int], None] | None = None,
    ) -> None:
        self._changed, self._render, self._on_count = changed, render, on_count
        self._parked: dict[Hashable, dict[_Waiter, None]] = {}
        self.parked = 0
        self.last_fanout = (0.0, 0)

    def _count(self, delta: int) -> None:
        self.parked += delta
        if self._on_count is not None:
            self._on_count(delta)

    async def wait(
        self, key: Hashable, timeout: float, fd: int = -1, scope: trio.CancelScope | None = None
    ) -> Answer:
        """Park until `key` changes (then, if `fd` >= 0, the answer is written to it) or
        `timeout` seconds pass or `scope` is cancelled (then: answered as things stand);
        a cancellation from outside (the client hung up) just unparks."""
        if self._changed(key):
            await trio.lowlevel.checkpoint()
            return Answer(self._render(key))
        waiter = _Waiter(trio.lowlevel.current_task(), fd)
        group = self._parked.setdefault(key, {})
        group[waiter] = None
        self._count(1)

        def abort(_: object) -> trio.lowlevel.Abort:
            if waiter.answer is not None:  # answered, its wake-up is queued: let it come
                return trio.lowlevel.Abort.FAILED
            self._unpark(key, waiter)
            return trio.lowlevel.Abort.SUCCEEDED

        if scope is None:
            scope = trio.CancelScope()
        scope.deadline = min(scope.deadline, trio.current_time() + max(timeout, 0.0))
        with scope:
            await trio.lowlevel.wait_task_rescheduled(abort)
        if waiter.answer is None:  # timed out: answer with what there is now
            return Answer(self._render(key))
        return waiter.answer

    def _unpark(self, key: Hashable, waiter: _Waiter) -> None:
        group = self._parked.get(key)
        if group is not None and group.pop(waiter, 0) is None:
            self._count(-1)
            if not group:
                del self._parked[key]

    def notify(self) -> None:
        """The data changed: answer every parked request whose key `changed`.

        All writes happen first, in one loop; the tasks are rescheduled afterwards."""
        if not self._parked:
            return
        started, cpu = time.perf_counter(), time.thread_time()
        date = http_date()
        woken: list[_Waiter] = []
        write = os.write
        for key in [k for k in self._parked if self._changed(k)]:
            group = self._parked.pop(key)
            try:
                resp = self._render(key)
            except Exception:
                log.exception("rendering the answer to parked requests failed")
                resp = Response.text("Internal Server Error", 500)
            wire = response_bytes(resp, date)
            size = len(wire)
            plain, full = Answer(resp), Answer(resp, wire, size)
            for waiter in group:
                fd = waiter.fd
                if fd < 0:
                    waiter.answer = plain
                    continue
                try:
                    sent = write(fd, wire)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    sent = -1
                waiter.answer = full if sent == size else Answer(resp, wire, sent)
            woken.extend(group)
        written = time.perf_counter() - started
        reschedule = trio.lowlevel.reschedule
        for waiter in woken[:WAKE_BATCH]:
            reschedule(waiter.task)
        if len(woken) > WAKE_BATCH:
            trio.lowlevel.spawn_system_task(_wake_rest, woken[WAKE_BATCH:],
                                            name="rumor.http.fanout.wake")
        self._count(-len(woken))
        self.last_fanout = (written, len(woken))
        if len(woken) >= 1000:
            log.info("answered %d parked requests in %.0f ms (%.0f ms CPU)", len(woken),
                     written * 1000, (time.thread_time() - cpu) * 1000)


async def _wake_rest(waiters: list[_Waiter]) -> None:
    """Reschedule answered tasks `WAKE_BATCH` per scheduler round. Shielded: each of them
    waits for exactly this (their abort fails once answered), so it must always finish."""
    reschedule = trio.lowlevel.reschedule
    with trio.CancelScope(shield=True):
        for start in range(0, len(waiters), WAKE_BATCH):
            await trio.lowlevel.checkpoint()
            for waiter in waiters[start:start + WAKE_BATCH]:
                reschedule(waiter.task)
