"""``/v1/event/stream`` (Nomad's NDJSON, or Server-Sent Events) and Vault's WebSocket path.

* ``GET /v1/event/stream`` (also POST, whose form body adds parameters: the seed's
  ``curl --data-urlencode topic=...`` line sends one): ``?index=N`` resumes after Index N
  (0 or absent: the whole buffer), repeated ``?topic=Topic:Key``; one
  ``{"Index":N,"Events":[...]}`` line per record,
  ``{}`` heartbeats every 10 s.  With ``Accept: text/event-stream`` the same records as SSE
  frames (``id:`` Index, ``event:`` Topic, ``data:`` the event), ``: heartbeat`` comments,
  ``Last-Event-ID`` (which wins over ``?index=``, as a reconnecting EventSource keeps its URL).
* ``GET /v1/sys/events/subscribe/{type}?json=true``: a WebSocket, one CloudEvents 1.0 JSON
  document per message, ``{type}`` with ``*`` wildcards; only new records unless ``?index=``.

Every subscriber reads through ``agent.bus.access(token)`` (the ACL hook), with the token from
``X-Consul-Token``, ``Authorization: Bearer`` or ``?token=`` (an EventSource cannot set
headers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote

from agent.agent import Agent
from agent.bus import HEARTBEAT, MAX_INDEX, RAW, MayRead, Record
from agent.cloudevents import TypePattern, cloudevent
from agent.http.types import (
    DirectSlot,
    HTTPError,
    RawChunk,
    Request,
    StreamResponse,
    WebSocket,
    WebSocketResponse,
    chunk_frame,
)
from agent.topics import MAX_TOPICS, STREAM_TOPIC, TopicError, parse_topics

CHUNK = 64 * 1024  # records ready at once are written together, up to this many bytes
WS_SEND_TIMEOUT = 30.0
NDJSON_HEARTBEAT = b"{}\n"
# no blank line after the comment: a blank line ends an SSE block, and lax clients dispatch
# an empty message for a block without data
SSE_HEARTBEAT = b": heartbeat\n"


def token_of(req: Request) -> str | None:
    token = req.header("x-consul-token")
    if token:
        return token
    auth = req.header("authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return req.arg("token") or None


def reader(agent: Agent, req: Request) -> MayRead:
    return agent.bus.access(token_of(req))


def parse_index(text: str | None, what: str) -> int | None:
    """An Index from a request (None if absent or empty); 400 unless 0 <= N <= 2**63-1."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_INDEX:
        raise HTTPError(400, f"Unable to parse {what}: {text[:40]!r} is not an integer "
                             f"0-{MAX_INDEX}")
    return int(text)


def _form_params(req: Request) -> None:
    """Merge a form body into the query (``curl --data-urlencode topic=...`` POSTs one)."""
    ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
    if req.body and ctype == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(req.body.decode("utf-8"), keep_blank_values=True,
                            strict_parsing=False, max_num_fields=MAX_TOPICS + 8)
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPError(400, f"Invalid form body: {exc}") from None
        for key, values in form.items():
            req.query.setdefault(key, []).extend(values)


async def stream(agent: Agent, req: Request) -> StreamResponse:
    _form_params(req)
    try:
        topics = parse_topics(req.query.get("topic", []))
    except TopicError as exc:
        raise HTTPError(400, f"Invalid topic query: {exc}") from None
    sse = "text/event-stream" in (req.header("accept") or "")
    after = parse_index(req.arg("index"), "index")
    if sse:
        last_id = parse_index(req.header("last-event-id"), "Last-Event-ID")
        if last_id is not None:
            after = last_id
    may_read = reader(agent, req)
    bus = agent.bus
    slot = DirectSlot()

    async def chunks() -> AsyncIterator[bytes]:
        # subscribe on the first read: a stream closed unread never runs this body
        sub = bus.subscribe(topics, may_read, after or 0)
        sub.direct, sub.frame = slot, _sse_frame if sse else _ndjson_frame
        heartbeat = SSE_HEARTBEAT if sse else NDJSON_HEARTBEAT
        try:
            if sse:
                yield b"retry: 2000\n"  # part of the first frame's block
            while True:
                record = await sub.next()
                if record is None:
                    return
                if record is RAW:
                    yield RawChunk(sub.take_raw())
                    continue
                if record is HEARTBEAT:
                    yield heartbeat
                    continue
                chunk = record.sse() if sse else record.ndjson()
                more = sub.poll()
                if more is not None:  # a backlog: write what is ready in one go
                    parts = [chunk]
                    size = len(chunk)
                    while more is not None and more is not HEARTBEAT and more is not RAW \
                            and size < CHUNK:
                        parts.append(more.sse() if sse else more.ndjson())
                        size += len(parts[-1])
                        more = sub.poll() if size < CHUNK else None
                    chunk = b"".join(parts)
                    if more is not None and more is not HEARTBEAT and more is not RAW:
                        sub.queue.appendleft(more)
                yield chunk
        finally:
            bus.unsubscribe(sub)

    if sse:
        headers = [("Content-Type", "text/event-stream; charset=utf-8"),
                   ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
    else:
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-cache")]
    return StreamResponse(200, headers, chunks(), direct=slot)


_NDJSON_HEARTBEAT_FRAME = chunk_frame(NDJSON_HEARTBEAT)
_SSE_HEARTBEAT_FRAME = chunk_frame(SSE_HEARTBEAT)


def _ndjson_frame(r: Record) -> bytes:
    """A record (or the heartbeat) as a chunk-framed NDJSON line, for direct writes."""
    if r is HEARTBEAT:
        return _NDJSON_HEARTBEAT_FRAME
    return r.cached("ndjson.chunk", lambda rec: chunk_frame(rec.ndjson()))


def _sse_frame(r: Record) -> bytes:
    if r is HEARTBEAT:
        return _SSE_HEARTBEAT_FRAME
    return r.cached("sse.chunk", lambda rec: chunk_frame(rec.sse()))


async def subscribe_ws(agent: Agent, req: Request) -> WebSocketResponse:
    pattern = req.params.get("type", "")
    if not pattern:
        raise HTTPError(400, "Missing event type: use /v1/sys/events/subscribe/<type> "
                             "(* wildcards allowed)")
    if len(pattern) > 256:
        raise HTTPError(400, "Event type pattern longer than 256 characters")
    if req.arg("json") != "true":
        raise HTTPError(400, "Add ?json=true: rumor sends event notifications as CloudEvents "
                             "JSON only (Vault's protobuf format is not supported)")
    if (req.header("upgrade") or "").lower() != "websocket":
        raise HTTPError(400, "This endpoint needs a WebSocket upgrade "
                             "(Connection: Upgrade, Upgrade: websocket)")
    after = parse_index(req.arg("index"), "index")
    match = TypePattern(pattern)
    may_read = reader(agent, req)
    bus = agent.bus
    source = "rumor://" + quote(agent.node_name, safe="")  # a URI-reference, as CE requires

    async def session(ws: WebSocket) -> None:
        sub = bus.subscribe(match, may_read, after)
        try:
            while True:
                record = await sub.next()
                if record is None:
                    return
                if record is HEARTBEAT:
                    continue
                await ws.send_text(cloudevent(record, source).decode("utf-8"))
                if record.topic == STREAM_TOPIC and record.type == "Closed":
                    await ws.close(1013, "subscriber too slow; resume with ?index=")
                    return
        finally:
            bus.unsubscribe(sub)

    return WebSocketResponse(session)
