"""``/v1/event/fire/:name`` and ``/v1/event/list``: Consul's user-event endpoints.

Shapes, parameters and error texts follow Consul (agent/event_endpoint.go), except where
rumor answers bad input with a 4xx instead of Consul's 500 (bad filter regexes, unknown
datacenter, oversize payload: 413).
"""

from __future__ import annotations

import functools

from agent.agent import Agent, FireError
from agent.api.auth import authorize
from agent.duration import parse_go_duration
from agent.events import UserEvent, effective_wait
from agent.http.types import HTTPError, Request, Response, go_json

MAX_UINT64 = (1 << 64) - 1


def pretty(req: Request) -> bool:
    return req.has_arg("pretty")


async def fire(agent: Agent, req: Request) -> Response:
    name = req.params.get("name", "")
    if name:  # a denied fire broadcasts nothing
        authorize(agent, req).require("event", name, "write")
    limit = agent.config.event_size_limit
    if len(req.body) > limit:
        raise HTTPError(413, f"Payload too large: {len(req.body)} bytes, the event size limit "
                             f"is {limit} bytes")
    try:
        ev = agent.fire(name, req.body or None, node=req.arg("node") or "",
                        service=req.arg("service") or "", tag=req.arg("tag") or "",
                        dc=req.arg("dc"))
        await agent.persist(ev)  # 200 only once the event is on disk (fsync, group commit)
    except FireError as exc:
        raise HTTPError(exc.status, exc.message) from None
    return Response.json(ev.to_json(), pretty=pretty(req))


def parse_index(req: Request) -> int:
    text = req.arg("index")
    if text is None or text == "":
        return 0
    # ASCII only: str.isdigit() also accepts "٣" or "²", which Go's ParseUint refuses
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_UINT64:
        raise HTTPError(400, "Invalid index")
    return int(text)


def parse_wait(req: Request) -> float | None:
    text = req.arg("wait")
    if text is None or text == "":
        return None
    try:
        return parse_go_duration(text)
    except ValueError:
        raise HTTPError(400, "Invalid wait time") from None


async def list_events(agent: Agent, req: Request) -> Response:
    index = parse_index(req)
    wait = parse_wait(req)
    name = req.arg("name") or None
    authz = authorize(agent, req)
    if index > 0:
        new_index, events = await agent.store.wait_list(name, index, effective_wait(wait))
    else:
        new_index, events = agent.store.list(name)
    if not authz.manage:  # Consul filters the list by event:read
        events = [e for e in events if authz.event_read(e.name)]
    headers = [("X-Consul-Index", str(new_index))]
    if pretty(req):
        return Response.json([e.to_json() for e in events], headers=headers, pretty=True)
    body = b"[" + b",".join(_event_json(e) for e in events) + b"]"
    return Response(200, body, [("Content-Type", "application/json"), *headers])


@functools.lru_cache(maxsize=4096)
def _event_json(ev: UserEvent) -> bytes:
    """Events never change: render each once (a woken long-poll re-lists up to 256 of them)."""
    return go_json(ev.to_json())
