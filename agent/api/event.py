"""``/v1/event/fire/:name`` and ``/v1/event/list``: Consul's user-event endpoints.

Shapes, parameters and error texts follow Consul (agent/event_endpoint.go), except where
rumor answers bad input with a 4xx instead of Consul's 500 (bad filter regexes, unknown
datacenter, oversize payload: 413).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from dataclasses import dataclass

from agent.acl import Authorizer
from agent.agent import Agent
from agent.api.auth import authorize
from agent.duration import parse_go_duration
from agent.events import Event, effective_wait
from agent.http.fanout import LongPolls
from agent.http.types import HTTPError, LongPoll, Request, Response, go_json

MAX_UINT64 = (1 << 64) - 1


def pretty(req: Request) -> bool:
    return req.has_arg("pretty")


async def fire(agent: Agent, req: Request) -> Response:
    name = req.params.get("name", "")
    if name:  # a denied fire broadcasts nothing
        authorize(agent, req).require("event", name, "write")
    # refusals (agent.errors) are answered by the router with their status (agent.api.STATUS);
    # the size limit is checked once, by the agent, on the event as it would travel
    ev = agent.fire(name, req.body or None, node=req.arg("node") or "",
                    service=req.arg("service") or "", tag=req.arg("tag") or "",
                    dc=req.arg("dc"))
    await agent.persist(ev)  # 200 only once the event is on disk (fsync, group commit)
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


@dataclass(frozen=True, slots=True)
class ListKey:
    """What a parked ``/v1/event/list`` waits on and is answered with: equal keys share one
    rendering."""

    name: str | None
    index: int
    pretty: bool
    reader: Authorizer | None  # None: may read every event


def list_polls(agent: Agent) -> LongPolls:
    """The agent's parked ``/v1/event/list`` queries, keyed by (name, index, pretty, the reader's
    authorizer or None when it may read everything), answered
    when an event changes their index; counted in the store's ``parked`` gauge."""
    store = agent.store

    def changed(key: Hashable) -> bool:
        assert isinstance(key, ListKey)  # LongPolls keeps keys untyped; ours are all ListKeys
        return store.index(key.name) != key.index

    def render(key: Hashable) -> Response:
        assert isinstance(key, ListKey)
        return _list_response(agent, key.name, key.pretty, key.reader)

    def count(delta: int) -> None:
        store.parked += delta

    polls = LongPolls(changed, render, count)
    store.on_add.append(polls.notify)
    return polls


async def list_events(agent: Agent, req: Request, polls: LongPolls | None = None
                      ) -> Response | LongPoll:
    """Consul's blocking list: with ``index`` > 0, park while the index for ``name`` equals
    it (protocol.md §4.5); parked queries are answered by ``polls`` in one broadcast."""
    index = parse_index(req)
    wait = parse_wait(req)
    name = req.arg("name") or None
    authz = authorize(agent, req)
    # Consul filters the list by event:read; a token that may not read everything gets its
    # own rendering (keyed by its authorizer), all others share one per (name, index, pretty)
    reader = None if authz.manage else authz
    if index > 0 and agent.store.index(name) == index:
        timeout = effective_wait(wait)
        if polls is not None:
            return LongPoll(polls, ListKey(name, index, pretty(req), reader), timeout)
        await agent.store.wait_list(name, index, timeout)
    return _list_response(agent, name, pretty(req), reader)


def _list_response(agent: Agent, name: str | None, is_pretty: bool,
                   reader: Authorizer | None = None) -> Response:
    new_index, events = agent.store.list(name)
    if reader is not None:
        events = [e for e in events if reader.event_read(e.name)]
    headers = [("X-Consul-Index", str(new_index))]
    if is_pretty:
        return Response.json([e.to_json() for e in events], headers=headers, pretty=True)
    body = b"[" + b",".join(_event_json(e) for e in events) + b"]"
    return Response(200, body, [("Content-Type", "application/json"), *headers])


@functools.lru_cache(maxsize=4096)
def _event_json(ev: Event) -> bytes:
    """Events never change: render each once (a woken long-poll re-lists up to 256 of them)."""
    return go_json(ev.to_json())
