"""``/v1/event/sink/:id`` (PUT, GET, DELETE) and ``/v1/event/sinks``: webhook sinks.

A sink's JSON is Nomad's (``ID``, ``Type``, ``Topics``, ``Address``, ``LatestIndex``) plus
``LastError`` and ``LastErrorTime`` (the latest failed delivery attempt, kept after a later
success so an operator can see a flapping webhook).  Bad bodies get 400 and change nothing.
"""

from __future__ import annotations

from agent.agent import Agent
from agent.api.event import pretty
from agent.http.types import HTTPError, Request, Response
from agent.sinks import SinkError, validate_id


def _id(req: Request) -> str:
    sink_id = req.params.get("id", "")
    try:
        return validate_id(sink_id)
    except SinkError as exc:
        raise HTTPError(400, str(exc)) from None


async def put_sink(agent: Agent, req: Request) -> Response:
    try:
        sink = agent.sinks.put(_id(req), req.body)
    except SinkError as exc:
        raise HTTPError(400, str(exc)) from None
    return Response.json(sink.to_json(), pretty=pretty(req))


async def get_sink(agent: Agent, req: Request) -> Response:
    sink_id = _id(req)
    sink = agent.sinks.sinks.get(sink_id)
    if sink is None:
        raise HTTPError(404, f"Sink {sink_id!r} not found")
    return Response.json(sink.to_json(), pretty=pretty(req))


async def delete_sink(agent: Agent, req: Request) -> Response:
    sink_id = _id(req)
    if not agent.sinks.delete(sink_id):
        raise HTTPError(404, f"Sink {sink_id!r} not found")
    return Response()


async def list_sinks(agent: Agent, req: Request) -> Response:
    sinks = sorted(agent.sinks.sinks.values(), key=lambda s: s.id)
    return Response.json([s.to_json() for s in sinks], pretty=pretty(req))
