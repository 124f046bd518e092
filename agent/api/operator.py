"""``/v1/operator/keyring``: Consul's gossip keyring endpoint (list, install, use, remove).

Every operation is a Serf key query answered by every member (rumor agents and serf agents
alike).  Shapes and texts follow Consul (agent/operator_endpoint.go): GET answers a list
with one LAN pool; POST installs, PUT makes primary, DELETE removes the key in the body
``{"Key": "<base64>"}``; an operation some member failed or did not answer is a 500 whose
text lists each member's message.  A malformed body or key is a 400 and nothing is sent, and
so is removing this agent's primary key or making primary a key it lacks (Consul sends those
and lets every member fail; refusing up front keeps half the cluster from changing).
ACLs as Consul: listing needs ``keyring:read``, install/use/remove ``keyring:write``; the
check comes first, so a refused request learns nothing about its body.
"""

from __future__ import annotations

import json

from agent.agent import Agent
from agent.api.auth import authorize
from agent.api.event import pretty
from agent.flags import parse_bool
from agent.http.types import HTTPError, Request, Response
from agent.keyring import keyring_error_text, keyring_json, parse_key


def _check_params(req: Request) -> int:
    """The relay factor (0-5); 400 for a bad relay-factor or local-only."""
    n = 0
    raw = req.arg("relay-factor")
    if raw is not None:
        if not raw.strip().lstrip("-").isdigit() or len(raw) > 20:
            raise HTTPError(400, f"Error parsing relay factor: invalid syntax: {raw!r}")
        n = int(raw)
        if not 0 <= n <= 5:
            raise HTTPError(400, "Invalid relay-factor: Relay factor must be in range: [0, 5]")
    local = req.arg("local-only")
    if local is not None:
        try:
            flag = parse_bool(local)
        except ValueError:
            raise HTTPError(400, f"Error parsing local-only: invalid syntax: {local!r}") from None
        if flag and req.method != "GET":
            raise HTTPError(400, "Invalid use of local-only: local-only can only be set "
                                 "for list requests")
    return n


def _key(req: Request) -> bytes:
    try:
        body = json.loads(req.body or b"null")
    except ValueError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "Request decode failed: body must be a JSON object "
                             '{"Key": "<base64 key>"}')
    try:
        return parse_key(body.get("Key"))
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None


async def list_keys(agent: Agent, req: Request) -> Response:
    authorize(agent, req).require("keyring", None, "read")
    relay = _check_params(req)
    resp = await agent.keyring_operation("list", relay_factor=relay)
    err = keyring_error_text(resp, agent.config.datacenter)
    if err is not None:
        raise HTTPError(500, err)
    return Response.json([keyring_json(resp, agent.config.datacenter, True)], pretty=pretty(req))


async def _change(agent: Agent, req: Request, op: str) -> Response:
    authorize(agent, req).require("keyring", None, "write")
    relay = _check_params(req)
    key = _key(req)
    local = agent.node.keyring_keys()
    # refuse here what would fail on this agent, so no member changes half a rotation
    if local and op == "remove" and key == local[0]:
        raise HTTPError(400, "Removing the primary key is not allowed: make another key "
                             "primary first (PUT /v1/operator/keyring)")
    if local and op == "use" and key not in local:
        raise HTTPError(400, "Requested key is not in the keyring: install it first "
                             "(POST /v1/operator/keyring)")
    resp = await agent.keyring_operation(op, key, relay_factor=relay)
    err = keyring_error_text(resp, agent.config.datacenter)
    if err is not None:
        raise HTTPError(500, err)
    return Response()


async def install_key(agent: Agent, req: Request) -> Response:
    return await _change(agent, req, "install")


async def use_key(agent: Agent, req: Request) -> Response:
    return await _change(agent, req, "use")


async def remove_key(agent: Agent, req: Request) -> Response:
    return await _change(agent, req, "remove")
