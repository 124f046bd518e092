"""``rumor keyring``: install, use, remove and list gossip keys through the agent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.flags import FlagError, ParsedFlags
from agent.tools.common import Env, client_for, err, json_body, status_text


def _keyring_pool(resp: Mapping[str, Any], keys: Any) -> str:
    """Consul's ``formatResponse``: the pool, member messages, then each key's count."""
    pool = "WAN" if resp.get("WAN") else f"{resp.get('Datacenter', '')} (LAN)"
    if resp.get("Segment"):
        pool += f" [{resp['Segment']}]"
    lines = ["", pool + ":"]
    messages = resp.get("Messages")
    for node, msg in (messages.items() if isinstance(messages, dict) else ()):
        lines.append(f"  ===> {node}: {msg}")
    for key, num in (keys.items() if isinstance(keys, dict) else ()):
        lines.append(f"  {key} [{num}/{resp.get('NumNodes', 0)}]")
    return "\n".join(lines)


def cmd_keyring(f: ParsedFlags, env: Env) -> int:
    actions = [name for name in ("list", "list-primary") if f.get_bool(name)]
    actions += [name for name in ("install", "use", "remove") if f.get_str(name)]
    if f.args:
        raise FlagError("Too many command line arguments.")
    if not actions:
        from agent.cli import command_help  # the command table is the caller's

        err(command_help("keyring"))
        return 1
    if len(actions) > 1:
        err("Only a single action is allowed")
        return 1
    relay = f.get_str("relay-factor") or "0"
    if not relay.isdigit() or int(relay) > 5:
        err("Error parsing relay factor: Relay factor must be in range: [0, 5]")
        return 1
    params: list[tuple[str, str | None]] = [("relay-factor", relay if relay != "0" else None)]
    action = actions[0]
    client = client_for(f, env, timeout=60.0)
    if action in ("list", "list-primary"):
        print("==> Gathering installed " + ("primary " if action == "list-primary" else "")
              + "encryption keys...", flush=True)
        if f.get_bool("local-only"):
            params.append(("local-only", "true"))
        resp = client.get("/v1/operator/keyring", params)
        data = json_body(resp) if resp.status == 200 else None
        if not isinstance(data, list):
            err(f"error: Unexpected response code: {status_text(resp)}")
            return 1
        for pool in data:
            if isinstance(pool, dict):
                print(_keyring_pool(pool, pool.get("Keys" if action == "list"
                                                   else "PrimaryKeys")))
        return 0
    if f.get_bool("local-only"):
        err("Error validating local-only: local-only can only be set for list requests")
        return 1
    method, text = {"install": ("POST", "Installing new gossip encryption key..."),
                    "use": ("PUT", "Changing primary gossip encryption key..."),
                    "remove": ("DELETE", "Removing gossip encryption key...")}[action]
    print("==> " + text, flush=True)
    body = json.dumps({"Key": f.get_str(action)}).encode()
    resp = client.request(method, "/v1/operator/keyring", params, body,
                          {"Content-Type": "application/json"})
    if resp.status != 200:
        err(f"error: Unexpected response code: {status_text(resp)}")
        return 1
    return 0
