"""``/v1/agent/*``: members, self, join, leave, force-leave, reload, services, metrics, monitor.

Actions (join, leave, force-leave, reload, service register/deregister) answer an empty 200,
like Consul.  Rights, as Consul asks: members are filtered by node:read, services by
service:read; self, metrics and monitor need agent:read on this node; join, leave and reload
agent:write; force-leave operator:write; service register/deregister service:write.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from agent.agent import Agent
from agent.api.auth import authorize
from agent.api.event import pretty
from agent.catalog import CatalogError, parse_registration
from agent.http.fanout import LongPolls
from agent.http.types import HTTPError, Request, Response, StreamResponse
from agent.logs import MonitorHub, level_number


async def members(agent: Agent, req: Request) -> Response:
    authz = authorize(agent, req)
    shown = [m for m in agent.members_json() if authz.node_read(m["Name"])]
    return Response.json(shown, pretty=pretty(req))


def _agent_right(agent: Agent, req: Request, access: str) -> None:
    authorize(agent, req).require("agent", agent.node_name, access)


async def self_info(agent: Agent, req: Request) -> Response:
    _agent_right(agent, req, "read")
    return Response.json(agent.self_json(), pretty=pretty(req))


async def reload(agent: Agent, req: Request) -> Response:
    _agent_right(agent, req, "write")
    agent.reload()  # ReloadError: 500 (agent.api.STATUS)
    return Response()


async def join(agent: Agent, req: Request) -> Response:
    _agent_right(agent, req, "write")
    address = req.params.get("address", "")
    if not address:
        raise HTTPError(400, "Missing address to join")
    await agent.join([address], ignore_old=False)  # JoinError: 500 (agent.api.STATUS)
    return Response()


async def leave(agent: Agent, req: Request) -> Response:
    _agent_right(agent, req, "write")
    await agent.leave()
    agent.shutdown.set()
    return Response()


async def force_leave(agent: Agent, req: Request) -> Response:
    authorize(agent, req).require("operator", None, "write")
    node = req.params.get("node", "")
    if not node:
        raise HTTPError(400, "Missing node name")
    if not agent.node.force_leave(node, prune=req.has_arg("prune")):
        raise HTTPError(404, f"agent: No node found with name '{node}'")
    return Response()


async def services(agent: Agent, req: Request) -> Response:
    authz = authorize(agent, req)
    body = agent.catalog.to_json(agent.config.datacenter)
    shown = {sid: s for sid, s in body.items() if authz.service_read(s["Service"])}
    return Response.json(shown, pretty=pretty(req))


async def register_service(agent: Agent, req: Request) -> Response:
    authz = authorize(agent, req)
    try:
        obj = json.loads(req.body or b"null")
    except ValueError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    try:
        entry = parse_registration(obj)
    except CatalogError as exc:
        raise HTTPError(400, f"Invalid Service: {exc}") from None
    authz.require("service", entry.name, "write")
    old = agent.catalog.get(entry.id)  # replacing another service's ID needs its right too
    if old is not None and old.name != entry.name:
        authz.require("service", old.name, "write")
    agent.catalog.register(entry)
    return Response()


async def deregister_service(agent: Agent, req: Request) -> Response:
    sid = req.params.get("id", "")
    authz = authorize(agent, req)
    entry = agent.catalog.get(sid)
    if entry is not None:
        authz.require("service", entry.name, "write")
    if not agent.catalog.deregister(sid):
        raise HTTPError(404, f'Unknown service ID "{sid}". Ensure that the service ID is '
                             "passed, not the service name.")
    return Response()


def metric_values(agent: Agent) -> tuple[dict[str, float], dict[str, float]]:
    """(gauges, counters) with Prometheus-friendly names."""
    node = agent.node
    st = node.stats()
    am = agent.metrics
    status: dict[str, int] = {}
    for m in node.members():
        status[m.status.name.lower()] = status.get(m.status.name.lower(), 0) + 1
    gauges: dict[str, float] = {
        "rumor_members_alive": status.get("alive", 0),
        "rumor_members_failed": status.get("failed", 0),
        "rumor_members_left": status.get("left", 0),
        "rumor_events_buffered": len(agent.store),
        "rumor_blocking_queries_parked": agent.store.parked,
        "rumor_awareness_score": st.awareness_score,
        "rumor_broadcast_queue_depth": st.broadcast_queue_depth,
        "rumor_event_clock": st.event_clock,
        "rumor_member_clock": st.member_clock,
        "rumor_query_clock": st.query_clock,
        "rumor_bus_records": len(agent.bus),
        "rumor_bus_last_index": agent.bus.last_index,
        "rumor_stream_subscribers": agent.bus.subscribers,
        "rumor_members_unverified": st.members_unverified,
    }
    counters: dict[str, float] = {
        "rumor_packets_in_total": st.packets_in,
        "rumor_packets_out_total": st.packets_out,
        "rumor_bytes_in_total": st.bytes_in,
        "rumor_bytes_out_total": st.bytes_out,
        "rumor_decode_errors_total": st.decode_errors,
        "rumor_probes_total": st.probes,
        "rumor_probe_failures_total": st.probe_failures,
        "rumor_indirect_probes_total": st.indirect_probes,
        "rumor_tcp_pings_total": st.tcp_pings,
        "rumor_suspicions_total": st.suspicions,
        "rumor_refutes_total": st.refutes,
        "rumor_deaths_total": st.deaths,
        "rumor_push_pulls_total": st.push_pulls,
        "rumor_events_fired_total": am.events_fired,
        "rumor_events_received_total": am.events_received,
        "rumor_events_gossip_deduped_total": st.events_deduped,
        "rumor_events_too_old_total": st.events_too_old,
        "rumor_events_filtered_total": am.events_filtered,
        "rumor_events_stored_total": am.events_stored,
        "rumor_events_deduped_total": am.events_deduped,
        "rumor_events_undecodable_total": am.events_undecodable,
        "rumor_broadcasts_pruned_total": st.broadcasts_pruned,
        "rumor_acl_denied_total": am.acl_denied,
        "rumor_queries_received_total": st.queries_received,
        "rumor_queries_answered_total": st.queries_answered,
        "rumor_query_answers_relayed_total": st.query_answers_relayed,
        "rumor_keyring_changes_total": st.keyring_changes,
        "rumor_bus_published_total": agent.bus.published,
        "rumor_stream_slow_closed_total": agent.bus.slow_closed,
        "rumor_stream_direct_writes_total": agent.bus.direct_writes,
        # hostile input the gossip layer dropped (README "Hostile input")
        "rumor_ltime_jumps_dropped_total": st.ltime_jumps_dropped,
        "rumor_incarnation_jumps_dropped_total": st.incarnation_jumps_dropped,
        "rumor_members_refused_total": st.members_refused,
        "rumor_members_unanswered_total": st.members_unanswered,
        "rumor_gossip_streams_refused_total": st.streams_refused,
    }
    return gauges, counters


async def metrics(agent: Agent, req: Request, polls: LongPolls | None = None) -> Response:
    _agent_right(agent, req, "read")
    gauges, counters = metric_values(agent)
    if polls is not None:  # the last broadcast to parked blocking queries
        gauges["rumor_blocking_fanout_last_seconds"] = polls.last_fanout[0]
        gauges["rumor_blocking_fanout_last_answered"] = polls.last_fanout[1]
    if req.arg("format") == "prometheus":
        lines: list[str] = []
        for kind, values in (("gauge", gauges), ("counter", counters)):
            for name, v in values.items():
                lines.append(f"# TYPE {name} {kind}")
                lines.append(f"{name} {v:g}")
        body = ("\n".join(lines) + "\n").encode()
        return Response(200, body, [("Content-Type", "text/plain; version=0.0.4")])
    stamp = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime())
    doc: dict[str, Any] = {
        "Timestamp": stamp,
        "Gauges": [{"Name": k, "Value": v, "Labels": {}} for k, v in gauges.items()],
        "Points": [],
        "Counters": [{"Name": k, "Count": v, "Rate": 0, "Sum": v, "Min": 0, "Max": 0,
                      "Mean": 0, "Stddev": 0, "Labels": {}} for k, v in counters.items()],
        "Samples": [],
    }
    return Response.json(doc, pretty=pretty(req))


def monitor(hub: MonitorHub) -> Any:
    async def handler(agent: Agent, req: Request) -> StreamResponse:
        _agent_right(agent, req, "read")
        try:
            level = level_number(req.arg("loglevel") or "INFO")
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None

        async def lines() -> AsyncIterator[bytes]:
            # subscribe on the first read: a stream that is closed unread (HEAD, or a client
            # gone before the body) never runs this body, so could never unsubscribe
            recv = hub.subscribe(level)
            try:
                async for line in recv:
                    yield (line + "\n").encode()
            finally:
                hub.unsubscribe(recv)
        return StreamResponse(200, [("Content-Type", "text/plain; charset=utf-8")], lines())
    return handler
