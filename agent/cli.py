"""The `rumor` command line: `agent`, `validate` and the client commands, with Consul's flags.

Flags parse like Go's `flag` package (`-name=x`, `-name x`, `--name x`, `-dev`, `-dev=false`;
parsing stops at the first positional argument). Client commands talk to the agent through
`agent.client` (stdlib only, so they start fast); `agent` imports the runtime lazily.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agent.client import DEFAULT_ADDR, Client, ClientError, Response
from agent.config import (
    AGENT_FLAGS,
    ConfigError,
    FlagError,
    FlagSpec,
    HelpRequested,
    ParsedFlags,
    flags_usage,
    load_config,
    parse_flags,
)
from agent.version import VERSION

Env = Mapping[str, str]

HTTP_FLAGS = (
    FlagSpec("http-addr", "str", "Address of the rumor agent's HTTP API, host:port or "
             "http://host:port. Default: $RUMOR_HTTP_ADDR, $CONSUL_HTTP_ADDR or "
             f"{DEFAULT_ADDR}.", "ADDR"),
    FlagSpec("token", "str", "ACL token sent as X-Consul-Token. Default: $RUMOR_HTTP_TOKEN "
             "or $CONSUL_HTTP_TOKEN.", "TOKEN"),
    FlagSpec("token-file", "str", "File holding the ACL token (used when -token is not "
             "given). Default: $RUMOR_HTTP_TOKEN_FILE or $CONSUL_HTTP_TOKEN_FILE.", "PATH"),
    FlagSpec("ca-file", "str", "CA file to verify the agent's HTTPS certificate. Default: "
             "$RUMOR_CACERT or $CONSUL_CACERT, else the system CAs.", "PATH"),
    FlagSpec("client-cert", "str", "Client certificate for HTTPS (with -client-key). Default: "
             "$RUMOR_CLIENT_CERT or $CONSUL_CLIENT_CERT.", "PATH"),
    FlagSpec("client-key", "str", "Client key for HTTPS. Default: $RUMOR_CLIENT_KEY or "
             "$CONSUL_CLIENT_KEY.", "PATH"),
)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _setting(flags: ParsedFlags, env: Env, flag: str, var: str) -> str | None:
    """A client setting: the flag, else $RUMOR_<var>, else $CONSUL_<var>."""
    return flags.get_str(flag) or env.get("RUMOR_" + var) or env.get("CONSUL_" + var) or None


def _client(flags: ParsedFlags, env: Env, timeout: float = 10.0) -> Client:
    addr = _setting(flags, env, "http-addr", "HTTP_ADDR") or DEFAULT_ADDR
    # flags before the environment; within each, the token before the token file
    token, token_file = flags.get_str("token") or None, None
    if token is None:
        token_file = flags.get_str("token-file") or None
    if token is None and token_file is None:
        token = env.get("RUMOR_HTTP_TOKEN") or env.get("CONSUL_HTTP_TOKEN") or None
        if token is None:
            token_file = (env.get("RUMOR_HTTP_TOKEN_FILE") or env.get("CONSUL_HTTP_TOKEN_FILE")
                          or None)
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip() or None
        except (OSError, UnicodeDecodeError) as e:
            raise ClientError(f"Error reading token file {token_file}: {e}") from None
    ssl_on = (env.get("RUMOR_HTTP_SSL") or env.get("CONSUL_HTTP_SSL") or "").lower()
    if "://" not in addr and ssl_on in ("1", "t", "true"):  # Consul's CONSUL_HTTP_SSL
        addr = "https://" + addr
    context = None
    if addr.lower().startswith("https://"):
        from agent.tls import TLSConfigError, client_context

        verify = (env.get("RUMOR_HTTP_SSL_VERIFY") or env.get("CONSUL_HTTP_SSL_VERIFY")
                  or "true").lower() not in ("0", "f", "false")
        try:
            context = client_context(_setting(flags, env, "ca-file", "CACERT"),
                                     _setting(flags, env, "client-cert", "CLIENT_CERT"),
                                     _setting(flags, env, "client-key", "CLIENT_KEY"), verify)
        except TLSConfigError as e:
            raise ClientError(f"Error setting up TLS: {e}") from None
    return Client(addr, token, timeout, tls=context)


def _status(resp: Response) -> str:
    return f"{resp.status} ({resp.text()})"


def _json(resp: Response) -> Any:
    try:
        return json.loads(resp.body)
    except ValueError as e:
        raise ClientError(f"invalid JSON from agent: {e}") from None


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while a long-running client command runs."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- commands


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
    resp = _client(f, env).put("/v1/event/fire/" + urllib.parse.quote(name, safe=""),
                               params, payload, content_type="application/octet-stream")
    if resp.status != 200:
        _err(f"Error firing event: {_status(resp)}")
        return 1
    data = _json(resp)
    print(f"Event ID: {data.get('ID', '') if isinstance(data, dict) else ''}")
    return 0


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
    resp = _client(f, env).get("/v1/agent/members")
    data = _json(resp) if resp.status == 200 else None
    if not isinstance(data, list):
        _err(f"Error retrieving members: {_status(resp)}")
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
    client, joined = _client(f, env), 0
    for addr in f.args:
        resp = client.put("/v1/agent/join/" + urllib.parse.quote(addr, safe=":[]"))
        if resp.status == 200:
            joined += 1
        else:
            _err(f"Error joining address '{addr}': {_status(resp)}")
    if joined == 0:
        _err("Failed to join any nodes.")
        return 1
    print(f"Successfully joined cluster by contacting {joined} nodes.")
    return 0


def cmd_leave(f: ParsedFlags, env: Env) -> int:
    if f.args:
        raise FlagError("Error, leave does not take positional arguments")
    resp = _client(f, env).put("/v1/agent/leave")
    if resp.status != 200:
        _err(f"Error leaving: {_status(resp)}")
        return 1
    print("Graceful leave complete")
    return 0


def cmd_force_leave(f: ParsedFlags, env: Env) -> int:
    if len(f.args) != 1:
        raise FlagError("A single node name must be specified to force leave.")
    params = [("prune", "1" if f.get_bool("prune") else None)]
    resp = _client(f, env).put("/v1/agent/force-leave/" + urllib.parse.quote(f.args[0], safe=""),
                               params)
    if resp.status != 200:
        _err(f"Error force leaving: {_status(resp)}")
        return 1
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
    with _sigterm_interrupts():
        try:
            return EventWatch(_client(f, env), opts).run()
        except KeyboardInterrupt:
            return 0


def cmd_monitor(f: ParsedFlags, env: Env) -> int:
    level = f.get_str("log-level") or "INFO"
    with _sigterm_interrupts():
        try:
            for line in _client(f, env).stream("/v1/agent/monitor", {"loglevel": level}):
                print(line, flush=True)
        except KeyboardInterrupt:
            return 0
    _err("Remote side ended the monitor! This usually means that the\n"
         "remote side has exited or crashed.")
    return 1


def cmd_reload(f: ParsedFlags, env: Env) -> int:
    if f.args:
        raise FlagError("Too many command line arguments.")
    resp = _client(f, env, timeout=30.0).put("/v1/agent/reload")
    if resp.status != 200:
        _err(f"Error reloading: {_status(resp)}")
        return 1
    print("Configuration reload triggered")
    return 0


def cmd_tls(f: ParsedFlags, env: Env) -> int:
    from agent.tlsgen import run_tls_command

    return run_tls_command(f.args)


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
        _err(_help("keyring"))
        return 1
    if len(actions) > 1:
        _err("Only a single action is allowed")
        return 1
    relay = f.get_str("relay-factor") or "0"
    if not relay.isdigit() or int(relay) > 5:
        _err("Error parsing relay factor: Relay factor must be in range: [0, 5]")
        return 1
    params: list[tuple[str, str | None]] = [("relay-factor", relay if relay != "0" else None)]
    action = actions[0]
    client = _client(f, env, timeout=60.0)
    if action in ("list", "list-primary"):
        print("==> Gathering installed " + ("primary " if action == "list-primary" else "")
              + "encryption keys...", flush=True)
        if f.get_bool("local-only"):
            params.append(("local-only", "true"))
        resp = client.get("/v1/operator/keyring", params)
        data = _json(resp) if resp.status == 200 else None
        if not isinstance(data, list):
            _err(f"error: Unexpected response code: {_status(resp)}")
            return 1
        for pool in data:
            if isinstance(pool, dict):
                print(_keyring_pool(pool, pool.get("Keys" if action == "list"
                                                   else "PrimaryKeys")))
        return 0
    if f.get_bool("local-only"):
        _err("Error validating local-only: local-only can only be set for list requests")
        return 1
    method, text = {"install": ("POST", "Installing new gossip encryption key..."),
                    "use": ("PUT", "Changing primary gossip encryption key..."),
                    "remove": ("DELETE", "Removing gossip encryption key...")}[action]
    print("==> " + text, flush=True)
    body = json.dumps({"Key": f.get_str(action)}).encode()
    resp = client.request(method, "/v1/operator/keyring", params, body,
                          {"Content-Type": "application/json"})
    if resp.status != 200:
        _err(f"error: Unexpected response code: {_status(resp)}")
        return 1
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
    with _sigterm_interrupts():
        try:
            return follow(_client(f, env), topics, index, fmt)
        except KeyboardInterrupt:
            return 0




def cmd_keygen(f: ParsedFlags, env: Env) -> int:
    print(base64.b64encode(os.urandom(32)).decode())
    return 0


def cmd_version(f: ParsedFlags, env: Env) -> int:
    print(f"rumor v{VERSION}")
    print("Protocol: memberlist 2-5 / Serf 2-5 (wire-compatible with serf 0.9.4)")
    return 0


def cmd_agent(argv: Sequence[str], env: Env, *, validate: bool) -> int:
    try:
        config = load_config(argv, env, allow_paths=validate)
    except HelpRequested:
        print(_help("validate" if validate else "agent"))
        return 0
    except ConfigError as e:
        _err(f"Config validation failed: {e}" if validate else f"==> Error: {e}")
        return 1
    if validate:
        print("Configuration is valid!")
        return 0
    from agent.runtime import run_agent  # the heavy (trio) import happens only here

    return run_agent(config, lambda: load_config(argv, env))


# ---------------------------------------------------------------- table and dispatch


@dataclass(frozen=True)
class Command:
    synopsis: str
    usage: str
    flags: tuple[FlagSpec, ...]
    run: Callable[[ParsedFlags, Env], int] | None = None  # None: agent/validate


def _b(name: str, help: str) -> FlagSpec:
    return FlagSpec(name, "bool", help)


def _s(name: str, help: str, metavar: str = "VALUE") -> FlagSpec:
    return FlagSpec(name, "str", help, metavar)


COMMANDS: dict[str, Command] = {
    "agent": Command("Runs a rumor agent", "rumor agent [options]\n\n  Starts the rumor agent "
                     "and runs until an interrupt is received.", AGENT_FLAGS),
    "event": Command("Fire a new event", "rumor event [options] [payload]\n\n  Dispatches a "
                     "user event across the cluster. A payload of '-' is read from stdin.",
                     (_s("name", "Name of the event."), _s("node", "Node name regexp."),
                      _s("service", "Service regexp."), _s("tag", "Tag regexp (needs -service)."),
                      _s("datacenter", "Datacenter to fire in."), *HTTP_FLAGS), cmd_event),
    "force-leave": Command("Forces a member of the cluster to enter the \"left\" state",
                           "rumor force-leave [options] name", (_b(
                               "prune", "Remove the node from the member list entirely."),
                               *HTTP_FLAGS), cmd_force_leave),
    "join": Command("Tell the rumor agent to join a cluster",
                    "rumor join [options] address ...", HTTP_FLAGS, cmd_join),
    "keygen": Command("Generates a new encryption key", "rumor keygen", (), cmd_keygen),
    "keyring": Command("Manages gossip layer encryption keys", "rumor keyring [options]\n\n"
                       "  Installs, uses, removes or lists the gossip encryption keys of every "
                       "member\n  (rumor and serf agents alike). Exits 0 if all members "
                       "replied without error.",
                       (_s("install", "Install a new encryption key on every member.", "KEY"),
                        _s("use", "Make an installed key the primary key.", "KEY"),
                        _s("remove", "Remove a key (not the primary) from every member.",
                           "KEY"),
                        _b("list", "List the keys in use in the cluster."),
                        _b("list-primary", "List the primary keys in use in the cluster."),
                        _s("relay-factor", "Members relay their answers through this many others "
                           "(0-5).", "N"),
                        _b("local-only", "Accepted for Consul compatibility (list only)."),
                        *HTTP_FLAGS), cmd_keyring),
    "leave": Command("Gracefully leaves the cluster and shuts down", "rumor leave [options]",
                     HTTP_FLAGS, cmd_leave),
    "members": Command("Lists the members of the cluster", "rumor members [options]",
                       (_b("detailed", "Show all tags."),
                        _s("status", "Only members whose status matches this regexp."),
                        *HTTP_FLAGS), cmd_members),
    "monitor": Command("Stream logs from a rumor agent", "rumor monitor [options]",
                       (_s("log-level", "Log level to stream (default INFO)."), *HTTP_FLAGS),
                       cmd_monitor),
    "reload": Command("Triggers the agent to reload configuration files (ACLs, log level, TLS)",
                      "rumor reload [options]", HTTP_FLAGS, cmd_reload),
    "tls": Command("Builtin helpers for creating CAs and certificates",
                   "rumor tls ca create [options] | rumor tls cert create -server|-client|-cli "
                   "[options]\n\n  Run 'rumor tls ca create -h' or 'rumor tls cert create -h' "
                   "for the options.", (), cmd_tls),
    "stream": Command("Stream events and member changes", "rumor stream [options]\n\n"
                      "  Follows /v1/event/stream, one line per record; reconnects and resumes\n"
                      "  by itself after the agent restarts. Starts with new records unless\n"
                      "  -index is given.",
                      (FlagSpec("topic", "list", "Topic:Key filter, key may be a glob "
                                "(repeatable; default all).", "T:K"),
                       _s("index", "Start after this Index (0: everything buffered).", "N"),
                       _s("format", "json (one line per record) or pretty (Salt-style).",
                          "FORMAT"), *HTTP_FLAGS), cmd_stream),
    "validate": Command("Validate config files/directories", "rumor validate [options] "
                        "[FILE_OR_DIRECTORY...]\n\n  Checks a configuration (the same flags "
                        "as 'rumor agent') and exits 0 if it is valid.", AGENT_FLAGS),
    "version": Command("Prints the rumor version", "rumor version", (), cmd_version),
    "watch": Command("Watch for events", "rumor watch -type=event [options] [handler ...]\n\n"
                     "  Without a handler, prints the events as JSON and exits. With one, runs "
                     "it\n  (via /bin/sh -c) once per batch of new events, JSON on stdin and\n"
                     "  CONSUL_INDEX set. An event is never handed over twice.",
                     (_s("type", "Watch type: event."), _s("name", "Event name to watch."),
                      _b("shell", "Run the handler through /bin/sh -c (default true)."),
                      _b("since-now", "Skip events already buffered when the watch starts."),
                      _s("state-file", "File remembering delivered event IDs.", "PATH"),
                      _s("max-events", "Exit 0 after delivering this many events.", "N"),
                      _s("timeout", "Exit after this long (exit 2 if -max-events is unmet; "
                         "a handler still running is killed, exit 1).", "DURATION"),
                      _s("wait", "Blocking query wait per poll (default 5m).", "DURATION"),
                      *HTTP_FLAGS), cmd_watch),
}


def _help(name: str) -> str:
    cmd = COMMANDS[name]
    text = f"Usage: {cmd.usage}\n"
    return text + (f"\nOptions:\n\n{flags_usage(cmd.flags)}\n" if cmd.flags else "")


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"    {n.ljust(width)}    {c.synopsis}" for n, c in COMMANDS.items()]
    return ("Usage: rumor [--version] [--help] <command> [<args>]\n\n"
            "Available commands are:\n" + "\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rumor` console script; returns the exit status."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), os.environ)
    except BrokenPipeError:  # `rumor members | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(args: list[str], env: Env) -> int:
    if not args:
        _err(usage())
        return 1
    name, rest = args[0], args[1:]
    if name in ("-h", "-help", "--help", "help"):
        print(usage())
        return 0
    if name in ("-v", "-version", "--version"):
        name = "version"
    cmd = COMMANDS.get(name)
    if cmd is None:
        _err(f"Unknown command: {name!r}\n\n{usage()}")
        return 1
    if cmd.run is None:
        return cmd_agent(rest, env, validate=name == "validate")
    try:
        flags = parse_flags(cmd.flags, rest)
        return cmd.run(flags, env)
    except HelpRequested:
        print(_help(name))
        return 0
    except FlagError as e:
        _err(f"{e}\n\n{_help(name)}")
        return 1
    except ClientError as e:
        _err(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
