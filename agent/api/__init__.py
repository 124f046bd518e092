"""The HTTP API: one module per resource, wired into a router here."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from agent.acl import ACLNotFound, PermissionDenied
from agent.agent import Agent
from agent.api import agent as agent_api
from agent.api import event as event_api
from agent.api import operator as operator_api
from agent.api import sink as sink_api
from agent.api import stream as stream_api
from agent.api import ui as ui_api
from agent.errors import (
    AgentError,
    EventClockExhausted,
    EventTooLarge,
    InvalidEvent,
    JoinError,
    NotDurable,
    ReloadError,
)
from agent.http.routing import Router
from agent.http.types import HTTPError, Request
from agent.logs import MonitorHub

Endpoint = Callable[[Agent, Request], Awaitable[Any]]
log = logging.getLogger("rumor.agent")

# The one place a domain error (agent.errors) becomes an HTTP status; the text is the error's
STATUS: dict[type[AgentError], int] = {
    InvalidEvent: 400,
    EventTooLarge: 413,
    NotDurable: 500,
    EventClockExhausted: 503,
    JoinError: 500,
}


def build_router(agent: Agent, hub: MonitorHub | None = None) -> Router:
    router = Router()

    def bind(fn: Endpoint) -> Callable[[Request], Awaitable[Any]]:
        async def handler(req: Request) -> Any:
            try:
                return await fn(agent, req)
            except (PermissionDenied, ACLNotFound) as exc:  # Consul: 403 with the error text
                agent.metrics.acl_denied += 1
                log.debug("api: %s %s refused: %s", req.method, req.path, exc)
                raise HTTPError(403, str(exc)) from None
            except ReloadError as exc:
                raise HTTPError(500, f"Failed to reload configs: {exc}") from None
            except AgentError as exc:
                raise HTTPError(STATUS[type(exc)], str(exc)) from None
        return handler

    polls = event_api.list_polls(agent)
    routes: list[tuple[str, str, Endpoint]] = [
        ("PUT", "/v1/event/fire/{name...}", event_api.fire),
        ("GET", "/v1/event/list", partial(event_api.list_events, polls=polls)),
        ("GET", "/v1/event/stream", stream_api.stream),
        ("POST", "/v1/event/stream", stream_api.stream),
        ("GET", "/v1/sys/events/subscribe/{type...}", stream_api.subscribe_ws),
        ("PUT", "/v1/event/sink/{id...}", sink_api.put_sink),
        ("GET", "/v1/event/sink/{id...}", sink_api.get_sink),
        ("DELETE", "/v1/event/sink/{id...}", sink_api.delete_sink),
        ("GET", "/v1/event/sinks", sink_api.list_sinks),
        ("GET", "/v1/agent/members", agent_api.members),
        ("GET", "/v1/agent/self", agent_api.self_info),
        ("PUT", "/v1/agent/join/{address...}", agent_api.join),
        ("PUT", "/v1/agent/leave", agent_api.leave),
        ("PUT", "/v1/agent/force-leave/{node...}", agent_api.force_leave),
        ("GET", "/v1/agent/services", agent_api.services),
        ("PUT", "/v1/agent/service/register", agent_api.register_service),
        ("PUT", "/v1/agent/service/deregister/{id...}", agent_api.deregister_service),
        ("GET", "/v1/agent/metrics", partial(agent_api.metrics, polls=polls)),
        ("PUT", "/v1/agent/reload", agent_api.reload),
        ("GET", "/v1/operator/keyring", operator_api.list_keys),
        ("POST", "/v1/operator/keyring", operator_api.install_key),
        ("PUT", "/v1/operator/keyring", operator_api.use_key),
        ("DELETE", "/v1/operator/keyring", operator_api.remove_key),
    ]
    if hub is not None:
        routes.append(("GET", "/v1/agent/monitor", agent_api.monitor(hub)))
    for method, pattern, fn in routes:
        router.add(method, pattern, bind(fn))
    ui_api.add_routes(router, agent.config.ui)
    return router
