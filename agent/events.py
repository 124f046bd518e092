"""Consul user events on the agent: the record, its wire codec, and the newest-256 store.

Owns (protocol.md §4.1, §4.3-4.5):

* ``UserEvent``: Consul's event record, with ``to_json`` in the exact ``/v1/event/*`` shape.
* The Consul wire body: ``encode_consul_event`` / ``decode_consul_event`` (the msgpack blob a
  Consul agent fires as the payload of the Serf event ``"consul:event:" + name``), and
  ``from_serf_event`` for plain Serf events (``serf event foo bar``), which carry no ID: rumor
  derives one deterministically so every agent assigns the same ID and dedup works cluster-wide.
* ``id_to_index``: Consul's ``uuidToUint64`` (the ``X-Consul-Index`` of an event list).
* ``EventStore``: the newest ``capacity`` events in arrival order, deduped by ID, each with a
  per-agent arrival ``seq`` for resumable streams, Consul's blocking-list semantics
  (``wait_list``), and optional JSON-lines persistence so a restarted agent keeps its list.

No sockets, no HTTP; trio is used only to park waiters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack
import trio

from agent.datadir import DataFileError, fsync_dir, read_data_file, replace_file

__all__ = [
    "CONSUL_EVENT_PREFIX",
    "MAX_QUERY_TIME",
    "EventDecodeError",
    "EventStore",
    "UserEvent",
    "decode_consul_event",
    "effective_wait",
    "encode_consul_event",
    "event_from_serf",
    "from_serf_event",
    "id_to_index",
    "is_event_id",
    "make_event",
    "new_event_id",
    "serf_event_name",
]

log = logging.getLogger(__name__)

CONSUL_EVENT_PREFIX = "consul:event:"
CONSUL_INTERNAL_PREFIX = "consul:"
USER_EVENT_VERSION = 1
MAX_QUERY_TIME = 600.0  # Consul's maxQueryTime for the event-list blocking query (no jitter)
_U64 = 1 << 64
_I64 = 1 << 63
# A persisted Lamport time at or past 2**63 cannot come from honest use (a billion events a
# second for 292 years); restoring it would leave the clock next to the uint64 edge.
_PLAUSIBLE_LTIME = 1 << 63
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


SeqEvents = list[tuple[int, "UserEvent"]]  # (arrival seq, event), oldest first
EventList = list["UserEvent"]


class EventDecodeError(ValueError):
    """A user-event body (msgpack from the wire, or a persisted JSON record) is malformed."""


@dataclass(frozen=True)
class UserEvent:
    """A Consul user event. An empty payload is normalised to ``None`` (Consul's ``null``)."""

    id: str
    name: str
    payload: bytes | None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = USER_EVENT_VERSION
    ltime: int = 0

    def __post_init__(self) -> None:
        if not self.payload:
            object.__setattr__(self, "payload", None)
        elif not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))

    def to_json(self) -> dict[str, Any]:
        """Consul's JSON shape and key order; Payload is standard base64 or ``None``."""
        return {
            "ID": self.id,
            "Name": self.name,
            "Payload": base64.b64encode(self.payload).decode("ascii") if self.payload else None,
            "NodeFilter": self.node_filter,
            "ServiceFilter": self.service_filter,
            "TagFilter": self.tag_filter,
            "Version": self.version,
            "LTime": self.ltime,
        }

    @classmethod
    def from_json(cls, obj: Any) -> UserEvent:
        """Inverse of ``to_json``; raises ``EventDecodeError`` on anything malformed."""
        if not isinstance(obj, dict):
            raise EventDecodeError("event record is not an object")
        strs: dict[str, str] = {}
        for key in ("ID", "Name", "NodeFilter", "ServiceFilter", "TagFilter"):
            value = obj.get(key, "")
            if not isinstance(value, str):
                raise EventDecodeError(f"event field {key} is not a string")
            strs[key] = value
        if not is_event_id(strs["ID"]):
            raise EventDecodeError(f"event ID {strs['ID']!r} is not UUID-shaped")
        raw_payload = obj.get("Payload")
        payload: bytes | None = None
        if raw_payload is not None:
            if not isinstance(raw_payload, str):
                raise EventDecodeError("event Payload is not base64 text")
            try:
                payload = base64.b64decode(raw_payload, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise EventDecodeError(f"event Payload is not base64: {exc}") from None
        version = obj.get("Version", USER_EVENT_VERSION)
        ltime = obj.get("LTime", 0)
        if type(version) is not int or not -_I64 <= version < _I64:
            raise EventDecodeError("event Version is not a 64-bit integer")
        if type(ltime) is not int or not 0 <= ltime < _U64:
            raise EventDecodeError("event LTime is not an unsigned 64-bit integer")
        return cls(
            id=strs["ID"],
            name=strs["Name"],
            payload=payload,
            node_filter=strs["NodeFilter"],
            service_filter=strs["ServiceFilter"],
            tag_filter=strs["TagFilter"],
            version=version,
            ltime=ltime,
        )


# -- IDs and the index -------------------------------------------------------------------------


def is_event_id(value: str) -> bool:
    """True for a UUID-shaped string (8-4-4-4-12 hex digits, either case)."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def new_event_id(rng: random.Random | bytes | None = None) -> str:
    """A fresh UUID v4 string; ``rng`` (a ``random.Random`` or 16 raw bytes) makes it reproducible.

    (Consul uses go-uuid, 128 random bits without version bits; any UUID-shaped ID interoperates.)
    """
    if rng is None:
        return str(uuid.uuid4())
    raw = bytes(rng) if isinstance(rng, (bytes, bytearray)) else rng.randbytes(16)
    if len(raw) != 16:
        raise ValueError("an event ID needs exactly 16 random bytes")
    return str(uuid.UUID(bytes=raw, version=4))


def id_to_index(event_id: str) -> int:
    """Consul's ``uuidToUint64``: XOR of the first and last 16 hex digits of the UUID."""
    if not is_event_id(event_id):
        raise ValueError(f"event ID {event_id!r} is not UUID-shaped")
    low = int(event_id[0:8] + event_id[9:13] + event_id[14:18], 16)
    high = int(event_id[19:23] + event_id[24:36], 16)
    return low ^ high


def effective_wait(wait: float | None) -> float:
    """The timeout of a blocking list with ``index > 0`` (Consul ``EventList``).

    No ``wait`` (or ``0``) means the 600 s maximum; longer waits are capped at 600 s; a negative
    wait (Go accepts ``-5s``) times out at once. No jitter is added for this endpoint.
    """
    if wait is None or wait == 0:
        return MAX_QUERY_TIME
    return min(max(wait, 0.0), MAX_QUERY_TIME)


# -- the Consul wire body --------------------------------------------------------------------


def make_event(
    name: str,
    payload: bytes | None = None,
    *,
    node_filter: str = "",
    service_filter: str = "",
    tag_filter: str = "",
    rng: random.Random | bytes | None = None,
) -> UserEvent:
    """A new event as ``PUT /v1/event/fire`` builds it (fresh ID, Version 1, LTime 0).

    Validates the filters (``agent.filters.FilterError``); the name rules belong to the caller.
    """
    from agent.filters import validate_filters

    validate_filters(node_filter, service_filter, tag_filter)
    return UserEvent(
        id=new_event_id(rng),
        name=name,
        payload=payload,
        node_filter=node_filter,
        service_filter=service_filter,
        tag_filter=tag_filter,
    )


def serf_event_name(ev: UserEvent) -> str:
    """The Serf event name a Consul agent fires ``ev`` under."""
    return CONSUL_EVENT_PREFIX + ev.name


def encode_consul_event(ev: UserEvent) -> bytes:
    """The msgpack body exactly as Consul encodes its ``UserEvent`` struct.

    Consul's struct tags (agent/user_event.go) give keys in declaration order: ``ID``, ``n``,
    ``p``/``nf``/``sf``/``tf`` (``omitempty``), ``v``; ``LTime`` is ``codec:"-"``. Its handle sets
    ``WriteExt: true`` (the new msgpack spec), so strings of 32-255 bytes use str8 and the payload
    is bin, which is what ``msgpack.packb(use_bin_type=True)`` writes.
    """
    body: dict[str, Any] = {"ID": ev.id, "n": ev.name}
    if ev.payload:
        body["p"] = ev.payload
    if ev.node_filter:
        body["nf"] = ev.node_filter
    if ev.service_filter:
        body["sf"] = ev.service_filter
    if ev.tag_filter:
        body["tf"] = ev.tag_filter
    body["v"] = ev.version
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def _text(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, bytes):
        raise EventDecodeError(f"field {key!r} is not a string")
    # Go strings may hold any bytes; Go's JSON encoder shows invalid UTF-8 as U+FFFD, so do we.
    return value.decode("utf-8", "replace")


def _check_ltime(ltime: int) -> None:
    if type(ltime) is not int or not 0 <= ltime < _U64:
        raise EventDecodeError(f"LTime {ltime!r} is not an unsigned 64-bit integer")


def decode_consul_event(blob: bytes | bytearray | memoryview, ltime: int) -> UserEvent:
    """Decode a Consul event body (str or bin accepted for every field), stamping ``ltime``.

    Raises ``EventDecodeError`` (and nothing else) on malformed input, trailing bytes, or an ID
    that is not UUID-shaped (Consul would panic computing the index of such an event).
    Unknown keys are ignored, as Go's decoder does.
    """
    _check_ltime(ltime)
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise EventDecodeError("event body is not bytes")
    try:
        obj = msgpack.unpackb(bytes(blob), raw=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types; the contract is one
        raise EventDecodeError(f"invalid msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise EventDecodeError("event body is not a msgpack map")
    fields = {k.decode("utf-8", "replace"): v for k, v in obj.items() if isinstance(k, bytes)}
    event_id = _text(fields, "ID")
    if not is_event_id(event_id):
        raise EventDecodeError(f"event ID {event_id!r} is not UUID-shaped")
    payload = fields.get("p")
    if payload is not None and not isinstance(payload, bytes):
        raise EventDecodeError("field 'p' is not bytes")
    version = fields.get("v")
    if version is None:
        version = 0
    if type(version) is not int or not -_I64 <= version < _I64:
        raise EventDecodeError("field 'v' is not a 64-bit integer")
    return UserEvent(
        id=event_id,
        name=_text(fields, "n"),
        payload=payload,
        node_filter=_text(fields, "nf"),
        service_filter=_text(fields, "sf"),
        tag_filter=_text(fields, "tf"),
        version=version,
        ltime=ltime,
    )


def from_serf_event(name: str, payload: bytes, ltime: int) -> UserEvent:
    """A plain Serf user event as a ``UserEvent`` with a deterministic, name-based UUID.

    The ID is the first 16 bytes of SHA-256 over (ltime, name, payload), with the version nibble
    set to 5 and the RFC 4122 variant, so every agent derives the same ID for the same Serf event
    (Serf itself treats equal LTime + name + payload as one event).
    """
    _check_ltime(ltime)
    name_bytes = name.encode("utf-8", "surrogateescape")
    digest = hashlib.sha256()
    digest.update(b"rumor serf event v1\x00")
    digest.update(ltime.to_bytes(8, "big"))
    digest.update(len(name_bytes).to_bytes(4, "big"))
    digest.update(name_bytes)
    digest.update(bytes(payload))
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    return UserEvent(id=str(uuid.UUID(bytes=bytes(raw))), name=name, payload=payload, ltime=ltime)


def event_from_serf(serf_name: str, payload: bytes, ltime: int) -> UserEvent | None:
    """Route a received Serf user event: Consul event, Consul-internal (``None``), or plain Serf.

    Raises ``EventDecodeError`` when a ``consul:event:`` body is malformed.
    """
    if serf_name.startswith(CONSUL_EVENT_PREFIX):
        return decode_consul_event(payload, ltime)
    if serf_name.startswith(CONSUL_INTERNAL_PREFIX):
        return None
    return from_serf_event(serf_name, payload, ltime)


# -- the store -------------------------------------------------------------------------------


class EventStore:
    """The newest ``capacity`` events in arrival order, with Consul's blocking list.

    Each stored event gets ``seq`` (1, 2, ...; never reused, survives eviction and restarts).
    Waking uses one shared ``trio.Event`` replaced on every add, so N parked waiters cost one
    event. Metrics: ``stored``, ``deduped``, ``evicted`` (counters for this process), ``parked``
    (waiters now), ``loaded`` (events restored from disk), ``persist_errors``, ``fsyncs``.

    Persistence: every add appends one JSON line; ``sync()`` makes everything appended so far
    durable (fsync, shared by concurrent callers: group commit). Loading never crashes: a bad
    line is skipped with a warning naming file and line; an unusable file raises
    ``DataFileError``.
    """

    def __init__(self, capacity: int = 256, path: Path | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._events: deque[tuple[int, UserEvent, int]] = deque()  # (seq, event, index)
        self._ids: set[str] = set()
        self._next_seq = 1
        self.max_ltime = 0
        self.stored = 0
        self.deduped = 0
        self.evicted = 0
        self.parked = 0
        self.loaded = 0
        self.persist_errors = 0
        self._changed = trio.Event()
        self.on_add: list[Callable[[], None]] = []  # called synchronously after each add
        self._path = path
        self._fh: IO[str] | None = None
        self._lines = 0
        self._appended = 0  # records written since start (or the last compaction)
        self._synced = 0  # of those, how many are known durable
        self._sync_running = False
        self._sync_done = trio.Event()
        self.fsyncs = 0
        if path is not None:
            self._load(path)

    # adding and reading

    def add(self, ev: UserEvent) -> bool:
        """Store ``ev``; False (and no change) when an event with this ID is already held."""
        if not is_event_id(ev.id):
            raise ValueError(f"event ID {ev.id!r} is not UUID-shaped")
        if ev.id in self._ids:
            self.deduped += 1
            return False
        seq = self._insert(self._next_seq, ev)
        self.stored += 1
        self._append_record(seq, ev)
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        for callback in self.on_add:
            callback()
        return True

    def _insert(self, seq: int, ev: UserEvent) -> int:
        self._events.append((seq, ev, id_to_index(ev.id)))
        self._ids.add(ev.id)
        self._next_seq = seq + 1
        self.max_ltime = max(self.max_ltime, ev.ltime)
        while len(self._events) > self.capacity:
            _, old, _ = self._events.popleft()
            self._ids.discard(old.id)
            self.evicted += 1
        return seq

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __iter__(self) -> Iterator[UserEvent]:
        return iter([ev for _, ev, _ in self._events])

    @property
    def last_seq(self) -> int:
        """The seq of the newest event ever stored (0 before the first)."""
        return self._next_seq - 1

    @property
    def first_seq(self) -> int:
        """The seq of the oldest event still held (``last_seq + 1`` when empty).

        A stream resuming from ``s < first_seq - 1`` has missed evicted events.
        """
        return self._events[0][0] if self._events else self._next_seq

    def index(self, name: str | None = None) -> int:
        """The ``X-Consul-Index`` of ``list(name)`` without building the list."""
        for _, ev, idx in reversed(self._events):
            if not name or ev.name == name:
                return idx
        return 1

    def list(self, name: str | None = None) -> tuple[int, EventList]:
        """(index, events oldest to newest), exact ``name`` filter; index 1 when empty."""
        rows = [(ev, idx) for _, ev, idx in self._events if not name or ev.name == name]
        return (rows[-1][1] if rows else 1), [ev for ev, _ in rows]

    def since(self, seq: int, name: str | None = None) -> SeqEvents:
        """Held events with arrival seq greater than ``seq``, oldest first."""
        out: SeqEvents = []
        for s, ev, _ in reversed(self._events):
            if s <= seq:
                break
            if not name or ev.name == name:
                out.append((s, ev))
        out.reverse()
        return out

    # blocking

    async def _park(self) -> None:
        changed = self._changed
        self.parked += 1
        try:
            await changed.wait()
        finally:
            self.parked -= 1

    async def wait_list(
        self, name: str | None, index: int, timeout: float
    ) -> tuple[int, EventList]:
        """Consul's blocking ``/v1/event/list`` (protocol.md §4.5).

        ``index`` 0 returns at once. Otherwise park only while the current index for ``name``
        equals ``index`` (a bigger or smaller one returns at once); every add wakes the waiter,
        which re-checks; after ``timeout`` seconds return the (unchanged) result.
        Pass ``effective_wait(wait)`` as the timeout for Consul's defaults and cap.
        """
        if index == 0 or self.index(name) != index:
            await trio.lowlevel.checkpoint()
        else:
            with trio.move_on_after(max(timeout, 0.0)):
                while self.index(name) == index:
                    await self._park()
        return self.list(name)

    async def wait_seq(
        self, seq: int, timeout: float, name: str | None = None
    ) -> SeqEvents:
        """Events after ``seq`` (see ``since``), waiting up to ``timeout`` s for the first one.

        Returns ``[]`` on timeout.
        """
        found = self.since(seq, name)
        if found:
            await trio.lowlevel.checkpoint()
            return found
        with trio.move_on_after(max(timeout, 0.0)):
            while not found:
                await self._park()
                found = self.since(seq, name)
        return found

    # persistence

    def close(self) -> None:
        """Close the persistence file (the store stays usable in memory)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _record(seq: int, ev: UserEvent) -> str:
        return json.dumps({"seq": seq, **ev.to_json()}, separators=(",", ":")) + "\n"

    def _append_record(self, seq: int, ev: UserEvent) -> None:
        if self._path is None:
            return
        try:
            if self._lines + 1 > 4 * self.capacity:
                self._compact(self._path)  # already holds the new event
                return
            if self._fh is None:
                created = not self._path.exists()
                self._fh = open(self._path, "a", encoding="utf-8", newline="\n")
                if created:
                    fsync_dir(self._path.parent)
            self._fh.write(self._record(seq, ev))
            self._fh.flush()
            self._lines += 1
            self._appended += 1
        except OSError as exc:
            self.persist_errors += 1
            log.error("cannot persist event %s to %s: %s", ev.id, self._path, exc)

    async def sync(self) -> None:
        """Return once every event added so far is on disk (fsync in a worker thread).

        Group commit: callers arriving while an fsync runs wait for the next one, which covers
        all of them. Raises ``OSError`` when the log cannot be made durable (nothing to do
        without a data dir)."""
        if self._path is None:
            await trio.lowlevel.checkpoint()
            return
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
                log.error("cannot sync event log %s: %s", self._path, exc)
                raise
            finally:
                self._sync_running = False
                self._sync_done = trio.Event()
                done.set()
        await trio.lowlevel.checkpoint()

    def _compact(self, path: Path) -> None:
        self.close()
        meta = {"meta": {"next_seq": self._next_seq, "max_ltime": self.max_ltime}}
        lines = [json.dumps(meta, separators=(",", ":")) + "\n"]
        lines += [self._record(seq, ev) for seq, ev, _ in self._events]
        replace_file(path, "".join(lines).encode("utf-8"))
        self._lines = 1 + len(self._events)
        self._synced = self._appended  # the new file holds (and has synced) everything

    def _load(self, path: Path) -> None:
        data = read_data_file(path)
        if data is None:
            return
        lines = data.split(b"\n")
        dirty = bool(lines[-1])  # a torn last line (no newline)
        if not lines[-1]:
            lines.pop()
        next_seq, max_ltime = 1, 0
        for lineno, raw in enumerate(lines, 1):
            try:
                rec = json.loads(raw)
                if isinstance(rec, dict) and isinstance(rec.get("meta"), dict):
                    m = rec["meta"]
                    next_seq = max(next_seq, _counter(m, "next_seq", 1, _I64))
                    max_ltime = max(max_ltime, _counter(m, "max_ltime", 0, _PLAUSIBLE_LTIME))
                    continue
                seq = rec.get("seq") if isinstance(rec, dict) else None
                if type(seq) is not int or not self._next_seq <= seq < _I64:
                    raise EventDecodeError(f"bad or out-of-order seq {_short(seq)}")
                ev = UserEvent.from_json({k: v for k, v in rec.items() if k != "seq"})
                if ev.ltime >= _PLAUSIBLE_LTIME:
                    raise EventDecodeError(f"LTime {ev.ltime} is past 2**63, not a plausible "
                                           "Lamport time")
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                # RecursionError: a deeply nested line; ValueError covers bad JSON and UTF-8
                log.warning("skipping corrupt line %d of %s: %s", lineno, path,
                            _short(str(exc) or type(exc).__name__))
                dirty = True
                continue
            if ev.id in self._ids:
                log.warning("skipping duplicate event %s on line %d of %s", ev.id, lineno, path)
                dirty = True
                continue
            self._insert(seq, ev)
        self.evicted = 0  # eviction while loading is not a runtime event
        self._next_seq = max(self._next_seq, next_seq)
        self.max_ltime = max(self.max_ltime, max_ltime)
        self.loaded = len(self._events)
        self._lines = len(lines)
        if dirty or self._lines > 4 * self.capacity:
            try:
                self._compact(path)
            except OSError as exc:
                raise DataFileError(f"cannot rewrite {path}: {exc.strerror or exc}") from None


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
