"""``rumor members``, ``join``, ``leave``, ``force-leave``, ``reload`` and ``monitor``: the
cluster's members and the agent's own life, as Consul's commands print them."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from agent.flags import FlagError, ParsedFlags
from agent.tools.common import Env, client_for, err, json_body, sigterm_interrupts, status_text

_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


_ROLE = {"consul": "server", "server": "server", "node": "client", "client": "client"}


def _status_name(member: Mapping[str, Any]) -> str:
    status = member.get("Status")
    return _STATUS.get(status, "unknown") if isinstance(status, int) else "unknown"


def _address(member: Mapping[str, Any]) -> str:
    addr = str(member.get("Addr", ""))
    return f"[{addr}]:{member.get('Port', 0)}" if ":" in addr else f"{addr}:{member.get('Port', 0)}"


def columnize(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces (the format `consul members` prints)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def cmd_members(f: ParsedFlags, env: Env) -> int:
    try:
        status_re = re.compile(f.get_str("status") or ".*")
    except re.error as e:
        raise FlagError(f"Failed to compile status regexp: {e}") from None
    if f.args:
        raise FlagError("Too many command line arguments.")
    resp = client_for(f, env).get("/v1/agent/members")
    data = json_body(resp) if resp.status == 200 else None
    if not isinstance(data, list):
        err(f"Error retrieving members: {status_text(resp)}")
        return 1
    members = [m for m in data if isinstance(m, dict) and status_re.search(_status_name(m))]
    if not members:
        return 2

    def tags(m: Mapping[str, Any]) -> dict[str, str]:
        t = m.get("Tags")
        return {str(k): str(v) for k, v in t.items()} if isinstance(t, dict) else {}

    def sort_key(m: Mapping[str, Any]) -> tuple[bool, bool, str, str, str]:
        t = tags(m)
        part = t.get("ap") or "default"
        return (_ROLE.get(t.get("role", "")) != "server", part != "default",
                t.get("segment", ""), part, str(m.get("Name", "")))

    members.sort(key=sort_key)
    if f.get_bool("detailed"):
        rows = [["Node", "Address", "Status", "Tags"]]
        for m in members:
            tag_text = ",".join(f"{k}={v}" for k, v in sorted(tags(m).items()))
            rows.append([str(m.get("Name", "")), _address(m), _status_name(m), tag_text])
    else:
        rows = [["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition",
                 "Segment"]]
        for m in members:
            t = tags(m)
            role = t.get("role", "")
            kind = _ROLE.get(role, role or "unknown")
            segment = t.get("segment") or ("<all>" if kind == "server" else "<default>")
            rows.append([str(m.get("Name", "")), _address(m), _status_name(m), kind,
                         t.get("build", "").partition(":")[0], t.get("vsn", ""),
                         t.get("dc", ""), t.get("ap") or "default", segment])
    print(columnize(rows))
    return 0


def cmd_join(f: ParsedFlags, env: Env) -> int:
    if not f.args:
        raise FlagError("At least one address to join must be specified.")
    client, joined = client_for(f, env), 0
    for addr in f.args:
        resp = client.put("/v1/agent/join/" + urllib.parse.quote(addr, safe=":[]"))
        if resp.status == 200:
            joined += 1
        else:
            err(f"Error joining address '{addr}': {status_text(resp)}")
    if joined == 0:
        err("Failed to join any nodes.")
        return 1
    print(f"Successfully joined cluster by contacting {joined} nodes.")
    return 0


def cmd_leave(f: ParsedFlags, env: Env) -> int:
    if f.args:
        raise FlagError("Error, leave does not take positional arguments")
    resp = client_for(f, env).put("/v1/agent/leave")
    if resp.status != 200:
        err(f"Error leaving: {status_text(resp)}")
        return 1
    print("Graceful leave complete")
    return 0


def cmd_force_leave(f: ParsedFlags, env: Env) -> int:
    if len(f.args) != 1:
        raise FlagError("A single node name must be specified to force leave.")
    params = [("prune", "1" if f.get_bool("prune") else None)]
    resp = client_for(f, env).put("/v1/agent/force-leave/" + urllib.parse.quote(f.args[0], safe=""),
                               params)
    if resp.status != 200:
        err(f"Error force leaving: {status_text(resp)}")
        return 1
    return 0


def cmd_reload(f: ParsedFlags, env: Env) -> int:
    if f.args:
        raise FlagError("Too many command line arguments.")
    resp = client_for(f, env, timeout=30.0).put("/v1/agent/reload")
    if resp.status != 200:
        err(f"Error reloading: {status_text(resp)}")
        return 1
    print("Configuration reload triggered")
    return 0


def cmd_monitor(f: ParsedFlags, env: Env) -> int:
    level = f.get_str("log-level") or "INFO"
    with sigterm_interrupts():
        try:
            for line in client_for(f, env).stream("/v1/agent/monitor", {"loglevel": level}):
                print(line, flush=True)
        except KeyboardInterrupt:
            return 0
    err("Remote side ended the monitor! This usually means that the\n"
         "remote side has exited or crashed.")
    return 1
