"""Webhook sinks (Nomad's event sinks): bus records POSTed to an HTTP address, durably.

Owns the sink definitions (``PUT /v1/event/sink/:id`` bodies: ``Type`` "webhook",
``Topics`` ``{"Topic": ["key or glob", ...]}``, ``Address`` ``http://host[:port]/path``),
their validation (``SinkError``), their persistence with each sink's position in
``<data_dir>/sinks.json``, and delivery: one task per sink reads a *durable* bus subscription
(it never goes live, so it is never closed as slow and never slows anyone) and POSTs each
record as Nomad's NDJSON line ``{"Index":N,"Events":[...]}``.  At least once, in order: a
record is retried with exponential backoff (0.5 s doubling to 30 s) until the webhook answers
2xx; only then does the position advance and get saved, so a restarted agent resumes there.
A sink that fell behind the buffer gets a ``Stream``/``Gap`` record, like a stream.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import trio

from agent.bus import MAX_INDEX, Bus, Record
from agent.datadir import replace_file
from agent.topics import TopicError, parse_topics

log = logging.getLogger("rumor.sinks")

POST_TIMEOUT = 10.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
MAX_SINKS = 64
_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_KNOWN = {"ID", "Type", "Topics", "Address", "LatestIndex", "CreateIndex", "ModifyIndex"}


class SinkError(ValueError):
    """A sink definition that is refused; the message says why."""


@dataclass
class Sink:
    id: str
    topics: dict[str, list[str]]
    address: str
    latest_index: int = 0
    last_error: str = ""
    last_error_time: float = 0.0
    delivered: int = 0
    scope: trio.CancelScope | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.id, "Type": "webhook", "Topics": self.topics,
                "Address": self.address, "LatestIndex": self.latest_index,
                "LastError": self.last_error,
                "LastErrorTime": _rfc3339(self.last_error_time) if self.last_error_time
                else None}


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def validate_id(sink_id: str) -> str:
    if not _ID_RE.fullmatch(sink_id):
        raise SinkError(f"Invalid sink ID {sink_id[:40]!r}: use 1-128 of A-Z a-z 0-9 _ . -")
    return sink_id


def parse_sink(sink_id: str, body: bytes) -> tuple[dict[str, list[str]], str, int]:
    """(Topics, Address, LatestIndex) of a PUT body; SinkError naming the field at fault."""
    validate_id(sink_id)
    try:
        obj = json.loads(body or b"null")
    except ValueError as exc:
        raise SinkError(f"Request decode failed: {exc}") from None
    if not isinstance(obj, dict):
        raise SinkError("Request decode failed: the body must be a JSON object")
    unknown = sorted(set(obj) - _KNOWN)
    if unknown:
        raise SinkError(f"Unknown field(s) {', '.join(unknown)}; a sink has ID, Type, Topics, "
                        "Address")
    if obj.get("ID") not in (None, "", sink_id):
        raise SinkError(f"ID {obj.get('ID')!r} in the body does not match {sink_id!r} in the "
                        "path")
    if obj.get("Type") != "webhook":
        raise SinkError(f"Type must be \"webhook\", got {obj.get('Type')!r}")
    topics = obj.get("Topics")
    if not isinstance(topics, dict) or not topics:
        raise SinkError("Topics must be an object of topic -> list of keys, e.g. "
                        '{"Event": ["deploy-*"], "Node": ["*"]}')
    specs = []
    for topic, keys in topics.items():
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise SinkError(f"Topics[{topic!r}] must be a non-empty list of strings")
        specs += [f"{topic}:{k}" for k in keys]
    try:
        parse_topics(specs)
    except TopicError as exc:
        raise SinkError(f"Invalid Topics: {exc}") from None
    address = obj.get("Address")
    if not isinstance(address, str):
        raise SinkError("Address must be a string URL (http://host:port/path)")
    _check_address(address)
    latest = obj.get("LatestIndex", 0)
    if type(latest) is not int or not 0 <= latest <= MAX_INDEX:
        raise SinkError(f"LatestIndex must be an integer 0-{MAX_INDEX}")
    return {t: list(k) for t, k in topics.items()}, address, latest


def _check_address(address: str) -> urllib.parse.SplitResult:
    if len(address) > 2048:
        raise SinkError("Address is longer than 2048 characters")
    try:
        parts = urllib.parse.urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise SinkError(f"Invalid Address {address!r}: {exc}") from None
    if parts.scheme != "http":
        raise SinkError(f"Invalid Address {address!r}: only http:// webhooks are supported")
    if not parts.hostname or port == 0 or any(c.isspace() for c in address):
        raise SinkError(f"Invalid Address {address!r}: needs http://host[:port][/path]")
    return parts


class SinkManager:
    def __init__(self, bus: Bus, path: Path | None) -> None:
        self.bus = bus
        self.path = path
        self.sinks: dict[str, Sink] = {}
        self._nursery: trio.Nursery | None = None
        if path is not None:
            self._load(path)

    # --- definitions ----------------------------------------------------------------------

    def put(self, sink_id: str, body: bytes) -> Sink:
        topics, address, latest = parse_sink(sink_id, body)
        old = self.sinks.get(sink_id)
        if old is None and len(self.sinks) >= MAX_SINKS:
            raise SinkError(f"At most {MAX_SINKS} sinks")
        if old is not None:
            if old.scope is not None:
                old.scope.cancel()
            start = latest or old.latest_index
        else:
            start = latest or self.bus.last_index
        sink = Sink(sink_id, topics, address, start)
        self.sinks[sink_id] = sink
        self._save()
        self._start(sink)
        return sink

    def delete(self, sink_id: str) -> bool:
        sink = self.sinks.pop(sink_id, None)
        if sink is None:
            return False
        if sink.scope is not None:
            sink.scope.cancel()
        self._save()
        return True

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"Sinks": [{"ID": s.id, "Type": "webhook", "Topics": s.topics,
                          "Address": s.address, "LatestIndex": s.latest_index}
                         for s in self.sinks.values()]}
        try:
            replace_file(self.path, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
        except OSError as exc:
            log.error("sinks: cannot save %s: %s", self.path, exc)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_bytes())
            if not isinstance(doc, dict) or not isinstance(doc.get("Sinks"), list):
                raise SinkError("no Sinks list")
            for item in doc["Sinks"]:
                if not isinstance(item, dict) or not isinstance(item.get("ID"), str):
                    raise SinkError("a sink without an ID")
                topics, address, latest = parse_sink(item["ID"], json.dumps(item).encode())
                self.sinks[item["ID"]] = Sink(item["ID"], topics, address, latest)
        except FileNotFoundError:
            return
        except (ValueError, OSError) as exc:  # SinkError is a ValueError
            bad = path.with_name(path.name + ".corrupt")
            log.error("sinks: %s is unreadable (%s); moved it to %s and started without sinks",
                      path, exc, bad)
            self.sinks.clear()
            try:
                os.replace(path, bad)
            except OSError:
                pass
            return
        log.info("sinks: loaded %d sink(s) from %s", len(self.sinks), path)

    # --- delivery -------------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for sink in self.sinks.values():
                self._start(sink)
            await trio.sleep_forever()

    def _start(self, sink: Sink) -> None:
        if self._nursery is None:
            return
        sink.scope = trio.CancelScope()
        self._nursery.start_soon(self._deliver, sink, sink.scope)

    async def _deliver(self, sink: Sink, scope: trio.CancelScope) -> None:
        specs = [f"{t}:{k}" for t, keys in sink.topics.items() for k in keys]
        sub = self.bus.subscribe(parse_topics(specs), after=sink.latest_index, durable=True)
        with scope:
            try:
                while True:
                    record = await sub.next()
                    if record is None:
                        return
                    await self._post_until_ok(sink, record)
                    sink.latest_index = max(sub.cursor, 0)
                    sink.delivered += 1
                    self._save()
            finally:
                self.bus.unsubscribe(sub)

    async def _post_until_ok(self, sink: Sink, record: Record) -> None:
        delay = BACKOFF_FIRST
        body = record.ndjson()
        while True:
            try:
                status = await post(sink.address, body, POST_TIMEOUT)
                if 200 <= status < 300:
                    return
                error = f"webhook answered {status}"
            except (OSError, trio.TooSlowError, h11.ProtocolError, SinkError) as exc:
                error = f"POST failed: {exc or type(exc).__name__}"
            sink.last_error, sink.last_error_time = error, time.time()
            log.warning("sinks: %s: record %d: %s; retrying in %.1fs", sink.id, record.index,
                        error, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


async def post(address: str, body: bytes, timeout: float) -> int:
    """POST ``body`` as application/json; the response status (the body is not read)."""
    parts = _check_address(address)
    host, port = parts.hostname or "", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = h11.Connection(h11.CLIENT)
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            data = conn.send(h11.Request(method="POST", target=target, headers=[
                ("Host", parts.netloc), ("User-Agent", "rumor"),
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Connection", "close")]))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    return int(event.status_code)
                elif isinstance(event, h11.ConnectionClosed):
                    raise OSError("connection closed before a response")
