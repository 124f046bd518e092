"""``rumor event``, ``rumor watch`` and ``rumor stream``: fire events and follow them."""

from __future__ import annotations

import os
import sys
import urllib.parse

from agent.flags import FlagError, ParsedFlags
from agent.tools.common import Env, client_for, err, json_body, sigterm_interrupts, status_text


def cmd_event(f: ParsedFlags, env: Env) -> int:
    from agent.filters import FilterError, compile_filter  # RE2: only this command needs it

    name = f.get_str("name") or ""
    if not name:
        raise FlagError("Event name must be specified")
    filters = {k: f.get_str(k) or "" for k in ("node", "service", "tag")}
    for key, pattern in filters.items():
        try:
            compile_filter(pattern)
        except FilterError as e:
            raise FlagError(f"Failed to compile {key} filter regexp: {e}") from None
    if filters["tag"] and not filters["service"]:
        raise FlagError("Cannot provide tag filter without service filter.")
    if len(f.args) > 1:
        raise FlagError("Too many command line arguments.")
    payload = b""
    if f.args:
        payload = sys.stdin.buffer.read() if f.args[0] == "-" else os.fsencode(f.args[0])
    params = [("dc", f.get_str("datacenter") or None)]
    params += [(k, v or None) for k, v in filters.items()]
    resp = client_for(f, env).put("/v1/event/fire/" + urllib.parse.quote(name, safe=""),
                               params, payload, content_type="application/octet-stream")
    if resp.status != 200:
        err(f"Error firing event: {status_text(resp)}")
        return 1
    data = json_body(resp)
    print(f"Event ID: {data.get('ID', '') if isinstance(data, dict) else ''}")
    return 0


def cmd_watch(f: ParsedFlags, env: Env) -> int:
    from agent.duration import parse_go_duration
    from agent.watch import EventWatch, WatchOptions

    kind = f.get_str("type") or ""
    if not kind:
        raise FlagError("Watch type must be specified")
    if kind != "event":
        raise FlagError(f"Unsupported watch type: {kind} (rumor watches -type=event only)")

    def duration(flag: str, default: float | None) -> float | None:
        raw = f.get_str(flag)
        if raw is None:
            return default
        try:
            value = parse_go_duration(raw)
        except ValueError as e:
            raise FlagError(f"-{flag}: {e}") from None
        if value <= 0:
            raise FlagError(f"-{flag}: must be positive, got {raw!r}")
        return value

    max_events = None
    if f.has("max-events"):
        raw = f.get_str("max-events") or ""
        if not raw.isdigit() or int(raw) < 1:
            raise FlagError(f"-max-events: must be a positive integer, got {raw!r}")
        max_events = int(raw)
    wait = duration("wait", 300.0) or 300.0
    if wait > 600:
        raise FlagError("-wait: must be at most 10m")
    opts = WatchOptions(name=f.get_str("name") or None, handler=tuple(f.args),
                        shell=f.get_bool("shell", True), since_now=f.get_bool("since-now"),
                        state_file=f.get_str("state-file") or None, max_events=max_events,
                        timeout=duration("timeout", None), wait=wait)
    with sigterm_interrupts():
        try:
            return EventWatch(client_for(f, env), opts).run()
        except KeyboardInterrupt:
            return 0


def cmd_stream(f: ParsedFlags, env: Env) -> int:
    from agent.streamcli import follow

    fmt = f.get_str("format") or "json"
    if fmt not in ("json", "pretty"):
        raise FlagError(f"-format must be json or pretty, got {fmt!r}")
    index = None
    if f.has("index"):
        raw = f.get_str("index") or ""
        if not (raw.isascii() and raw.isdigit()) or int(raw) > (1 << 63) - 1:
            raise FlagError(f"-index must be an integer 0-{(1 << 63) - 1}, got {raw!r}")
        index = int(raw)
    topics = f.get_list("topic")
    if f.args:
        raise FlagError("Too many command line arguments.")
    with sigterm_interrupts():
        try:
            return follow(client_for(f, env), topics, index, fmt)
        except KeyboardInterrupt:
            return 0
