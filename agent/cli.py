"""The `rumor` command line: `agent`, `validate` and the client commands, with Consul's flags.

Flags parse like Go's `flag` package (`agent.flags`: `-name=x`, `-name x`, `--name x`, `-dev`,
`-dev=false`; parsing stops at the first positional argument).  This module holds the command
table, the dispatch and the daemon's start (`agent`, `validate`: the runtime, and trio, are
imported only then); the client commands live in `agent.tools` and talk to the agent through
`agent.client` (stdlib only, so they start fast).
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.client import ClientError
from agent.config import AGENT_FLAGS, ConfigError, load_config
from agent.flags import (
    FlagError,
    FlagSpec,
    HelpRequested,
    ParsedFlags,
    flags_usage,
    parse_flags,
)
from agent.tools.common import HTTP_FLAGS, Env, err
from agent.tools.events import cmd_event, cmd_stream, cmd_watch
from agent.tools.keyring import cmd_keyring
from agent.tools.members import (
    cmd_force_leave,
    cmd_join,
    cmd_leave,
    cmd_members,
    cmd_monitor,
    cmd_reload,
)
from agent.version import VERSION


def cmd_tls(f: ParsedFlags, env: Env) -> int:
    from agent.tlsgen import run_tls_command

    return run_tls_command(f.args)


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
        print(command_help("validate" if validate else "agent"))
        return 0
    except ConfigError as e:
        err(f"Config validation failed: {e}" if validate else f"==> Error: {e}")
        return 1
    if validate:
        print("Configuration is valid!")
        return 0
    from agent.runtime import run_agent  # the heavy (trio) import happens only here

    return run_agent(config, lambda: load_config(argv, env))


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


def command_help(name: str) -> str:
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
        err(usage())
        return 1
    name, rest = args[0], args[1:]
    if name in ("-h", "-help", "--help", "help"):
        print(usage())
        return 0
    if name in ("-v", "-version", "--version"):
        name = "version"
    cmd = COMMANDS.get(name)
    if cmd is None:
        err(f"Unknown command: {name!r}\n\n{usage()}")
        return 1
    if cmd.run is None:
        return cmd_agent(rest, env, validate=name == "validate")
    try:
        flags = parse_flags(cmd.flags, rest)
        return cmd.run(flags, env)
    except HelpRequested:
        print(command_help(name))
        return 0
    except FlagError as e:
        err(f"{e}\n\n{command_help(name)}")
        return 1
    except ClientError as e:
        err(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
