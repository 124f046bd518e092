"""The request's token → an `Authorizer`: the one helper every API handler uses.

Where a token may come from, first found wins: `?token=`, the `X-Consul-Token` header,
`X-Nomad-Token` and `X-Vault-Token` (for the Nomad- and Vault-shaped endpoints), then
`Authorization: Bearer <token>`.  No token means the agent's default token (or anonymous).
An unknown token raises `ACLNotFound` and a missing right `PermissionDenied`; `agent.api`
answers both with 403 and Consul's text.
"""

from __future__ import annotations

from agent.acl import Authorizer
from agent.agent import Agent
from agent.http.types import Request

TOKEN_HEADERS = ("X-Consul-Token", "X-Nomad-Token", "X-Vault-Token")


def request_token(req: Request) -> str | None:
    """The SecretID a request carries, or None."""
    token = req.arg("token")
    if token:
        return token
    for name in TOKEN_HEADERS:
        value = req.header(name)
        if value and value.strip():
            return value.strip()
    auth = req.header("Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def authorize(agent: Agent, req: Request) -> Authorizer:
    """The authorizer of the request's token under the agent's current ACLs."""
    return agent.acls.resolve(request_token(req))
