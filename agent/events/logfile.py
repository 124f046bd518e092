"""The JSON-lines file behind an ``EventStore`` (``events.jsonl`` in the data dir).

One line per stored event (``{"seq": n, ...the /v1/event/list shape}``), appended and flushed
on every add; ``sync()`` makes all appended lines durable (one fsync shared by concurrent
callers: group commit).  Once the file holds four times the store's capacity it is rewritten
(atomically) with a ``{"meta": {...}}`` line and the events still held.  Loading never crashes:
a bad line is skipped with a warning naming file and line, and the file is then rewritten; an
unusable file raises ``DataFileError``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import trio

from agent.datadir import fsync_dir, read_data_file, replace_file
from agent.events.record import Event, EventDecodeError

log = logging.getLogger("agent.events")

_I64 = 1 << 63
# A persisted Lamport time at or past 2**63 cannot come from honest use (a billion events a
# second for 292 years); restoring it would leave the clock next to the uint64 edge.
_PLAUSIBLE_LTIME = 1 << 63

# What a rewrite needs from the store: (next seq, max LTime, the held (seq, event)s)
StoreState = tuple[int, int, Iterable[tuple[int, Event]]]


class EventLog:
    """Appends, syncs, compacts and loads one store's event file.  Metrics: ``fsyncs``,
    ``persist_errors`` (appends or syncs that failed; the event stays in memory)."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.max_lines = 4 * capacity  # rewrite once the file holds this many lines
        self._fh: IO[str] | None = None
        self._lines = 0
        self._appended = 0  # records written since start (or the last compaction)
        self._synced = 0  # of those, how many are known durable
        self._sync_running = False
        self._sync_done = trio.Event()
        self.fsyncs = 0
        self.persist_errors = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @staticmethod
    def _record(seq: int, ev: Event) -> str:
        return json.dumps({"seq": seq, **ev.to_json()}, separators=(",", ":")) + "\n"

    def append(self, seq: int, ev: Event, state: Callable[[], StoreState]) -> None:
        """Write ``ev``'s line, or rewrite the file from ``state()`` (which already holds
        ``ev``) when it is full.  An OSError is logged and counted, not raised."""
        try:
            if self._lines + 1 > self.max_lines:
                self.compact(*state())
                return
            if self._fh is None:
                created = not self.path.exists()
                self._fh = open(self.path, "a", encoding="utf-8", newline="\n")
                if created:
                    fsync_dir(self.path.parent)
            self._fh.write(self._record(seq, ev))
            self._fh.flush()
            self._lines += 1
            self._appended += 1
        except OSError as exc:
            self.persist_errors += 1
            log.error("cannot persist event %s to %s: %s", ev.id, self.path, exc)

    async def sync(self) -> None:
        """Return once every line appended so far is on disk (fsync in a worker thread).

        Group commit: callers arriving while an fsync runs wait for the next one, which covers
        all of them. Raises ``OSError`` when the log cannot be made durable."""
        target = self._appended
        while self._synced < target:
            if self._sync_running:
                await self._sync_done.wait()
                continue
            fh = self._fh
            if fh is None:  # compaction closed the file after writing (and syncing) it all
                self._synced = self._appended
                break
            self._sync_running = True
            done, upto = self._sync_done, self._appended
            try:
                fd = os.dup(fh.fileno())  # compaction may close fh while the thread runs
                try:
                    await trio.to_thread.run_sync(os.fsync, fd)
                finally:
                    os.close(fd)
                self.fsyncs += 1
                self._synced = max(self._synced, upto)
            except OSError as exc:
                self.persist_errors += 1
                log.error("cannot sync event log %s: %s", self.path, exc)
                raise
            finally:
                self._sync_running = False
                self._sync_done = trio.Event()
                done.set()
        await trio.lowlevel.checkpoint()

    def compact(self, next_seq: int, max_ltime: int,
                events: Iterable[tuple[int, Event]]) -> None:
        """Rewrite the file atomically: a meta line, then ``events`` (OSError if it cannot)."""
        self.close()
        meta = {"meta": {"next_seq": next_seq, "max_ltime": max_ltime}}
        lines = [json.dumps(meta, separators=(",", ":")) + "\n"]
        lines += [self._record(seq, ev) for seq, ev in events]
        replace_file(self.path, "".join(lines).encode("utf-8"))
        self._lines = len(lines)
        self._synced = self._appended  # the new file holds (and has synced) everything

    def load(self, holds: Callable[[str], bool],
             insert: Callable[[int, Event], object]) -> tuple[int, int, bool]:
        """Read the file, calling ``insert(seq, event)`` for each good, new record in order.

        Returns ``(next_seq, max_ltime, rewrite)``: the counters of the newest meta line and
        whether the file should be rewritten (bad lines skipped, or too long)."""
        data = read_data_file(self.path)
        if data is None:
            return 1, 0, False
        path = self.path
        lines = data.split(b"\n")
        dirty = bool(lines[-1])  # a torn last line (no newline)
        if not lines[-1]:
            lines.pop()
        next_seq, max_ltime = 1, 0
        expected = 1  # seqs strictly increase
        for lineno, raw in enumerate(lines, 1):
            try:
                rec = json.loads(raw)
                if isinstance(rec, dict) and isinstance(rec.get("meta"), dict):
                    m = rec["meta"]
                    next_seq = max(next_seq, _counter(m, "next_seq", 1, _I64))
                    max_ltime = max(max_ltime, _counter(m, "max_ltime", 0, _PLAUSIBLE_LTIME))
                    continue
                seq = rec.get("seq") if isinstance(rec, dict) else None
                if type(seq) is not int or not expected <= seq < _I64:
                    raise EventDecodeError(f"bad or out-of-order seq {_short(seq)}")
                ev = Event.from_json({k: v for k, v in rec.items() if k != "seq"})
                if ev.ltime >= _PLAUSIBLE_LTIME:
                    raise EventDecodeError(f"LTime {ev.ltime} is past 2**63, not a plausible "
                                           "Lamport time")
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                # RecursionError: a deeply nested line; ValueError covers bad JSON and UTF-8
                log.warning("skipping corrupt line %d of %s: %s", lineno, path,
                            _short(str(exc) or type(exc).__name__))
                dirty = True
                continue
            if holds(ev.id):
                log.warning("skipping duplicate event %s on line %d of %s", ev.id, lineno, path)
                dirty = True
                continue
            insert(seq, ev)
            expected = seq + 1
        self._lines = len(lines)
        return next_seq, max_ltime, dirty or self._lines > self.max_lines


def _counter(meta: dict[str, Any], key: str, default: int, bound: int) -> int:
    """A meta counter: an int in ``0 <= v < bound`` or the line is bad (EventDecodeError)."""
    value = meta.get(key, default)
    if type(value) is not int or not 0 <= value < bound:
        raise EventDecodeError(f"meta {key} {_short(value)} is not an integer in "
                               f"[0, {bound})")
    return value


def _short(value: object, limit: int = 80) -> str:
    if type(value) is int and value.bit_length() > 128:
        return f"<{value.bit_length()}-bit integer>"
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + "..."
