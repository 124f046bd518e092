"""Where configuration values come from: the field table (one row per setting: its type, JSON
key, flag and help) and one layer per source: config files and directories (JSON, Consul's
key names), the environment (``RUMOR_<FIELD>``) and the command line (``AGENT_FLAGS``).
``agent.config`` merges the layers and validates the result.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.duration import parse_go_duration
from agent.errors import ConfigError
from agent.flags import FlagSpec, ParsedFlags, parse_bool
from gossip import USER_EVENT_SIZE_HARD_LIMIT


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # str | int | bool | list | duration | meta
    file_key: str | None  # dotted path in the JSON file
    flag: str | None
    help: str


FIELDS: tuple[Field, ...] = (
    Field("node_name", "str", "node_name", "node", "Name of this node (default: hostname)."),
    Field("datacenter", "str", "datacenter", "datacenter", "Datacenter of the agent."),
    Field("bind_addr", "str", "bind_addr", "bind", "Address to bind gossip to."),
    Field("advertise_addr", "str", "advertise_addr", "advertise",
           "Address to advertise to other nodes."),
    Field("serf_lan_port", "int", "ports.serf_lan", "serf-lan-port", "Gossip (Serf LAN) port."),
    Field("client_addr", "str", "client_addr", "client", "Address to bind the HTTP API to."),
    Field("http_port", "int", "ports.http", "http-port", "HTTP API port."),
    Field("start_join", "list", "start_join", "join", "Address to join at start (repeatable)."),
    Field("retry_join", "list", "retry_join", "retry-join",
           "Address to join, retrying until it works (repeatable)."),
    Field("retry_interval", "duration", "retry_interval", "retry-interval",
           "Time to wait between join attempts (Go duration, e.g. 30s)."),
    Field("retry_max", "int", "retry_max", "retry-max", "Maximum join attempts (0 = forever)."),
    Field("data_dir", "str", "data_dir", "data-dir", "Directory for agent state."),
    Field("encrypt", "str", "encrypt", "encrypt", "Base64 gossip encryption key."),
    Field("node_meta", "meta", "node_meta", "node-meta", "Node metadata key:value (repeatable)."),
    Field("dev", "bool", None, "dev", "Development mode: 127.0.0.1, no data dir, DEBUG logs."),
    Field("log_level", "str", "log_level", "log-level", "TRACE, DEBUG, INFO, WARN or ERR."),
    Field("event_size_limit", "int", "event_size_limit", "event-size-limit",
           f"Maximum user event size in bytes (name + payload, 1-{USER_EVENT_SIZE_HARD_LIMIT})."),
    Field("event_buffer", "int", "event_buffer", "event-buffer",
           "Number of recent events kept for /v1/event/list."),
    Field("stream_buffer", "int", "stream_buffer", "stream-buffer",
           "Number of bus records kept for /v1/event/stream resumption (and on disk)."),
    Field("gossip_profile", "str", "gossip_profile", "gossip-profile",
           "Gossip timing profile: lan, wan or local."),
    Field("leave_on_terminate", "bool", "leave_on_terminate", None,
           "Leave gracefully on SIGTERM."),
    Field("https_port", "int", "ports.https", "https-port", "HTTPS API port (-1 = off)."),
    Field("acl_enabled", "bool", "acl.enabled", None, "Enforce ACLs."),
    Field("acl_default_policy", "str", "acl.default_policy", None, "allow or deny."),
    Field("acl_initial_management_token", "str", "acl.tokens.initial_management", None,
           "SecretID with full rights."),
    Field("acl_agent_token", "str", "acl.tokens.agent", None, "The agent's own token."),
    Field("acl_agent_recovery_token", "str", "acl.tokens.agent_recovery", None,
           "SecretID for this agent's agent endpoints."),
    Field("acl_default_token", "str", "acl.tokens.default", None,
           "Token for requests without one."),
    Field("acl_token_list", "object", "acl.token_list", None, "Tokens with their rules."),
    Field("tls_ca_file", "str", "tls.defaults.ca_file", None, "CA bundle (PEM)."),
    Field("tls_cert_file", "str", "tls.defaults.cert_file", None, "Agent certificate (PEM)."),
    Field("tls_key_file", "str", "tls.defaults.key_file", None, "Agent private key (PEM)."),
    Field("tls_verify_incoming", "bool", "tls.defaults.verify_incoming", None,
           "Require HTTPS clients to present a certificate signed by the CA."),
    Field("rejoin_after_leave", "bool", "rejoin_after_leave", "rejoin",
           "Rejoin the members in the data dir's snapshot even after a graceful leave."),
    Field("http_max_conns_per_client", "int", "limits.http_max_conns_per_client", None,
           "Open HTTP connections allowed per client IP (0 = no limit)."),
    Field("ui", "bool", "ui_config.enabled", "ui", "Serve the web UI at /ui/ (default true)."),
)
BY_NAME = {f.name: f for f in FIELDS}
_BY_FILE_KEY = {f.file_key: f for f in FIELDS if f.file_key}
# Consul's older top-level TLS keys, and tls.https (rumor serves HTTPS only) mean the same
for _key in ("ca_file", "cert_file", "key_file", "verify_incoming"):
    _BY_FILE_KEY[_key] = _BY_FILE_KEY[f"tls.https.{_key}"] = _BY_FILE_KEY[f"tls.defaults.{_key}"]
# ... and the pre-1.11 names of two ACL tokens
_BY_FILE_KEY["acl.tokens.master"] = _BY_FILE_KEY["acl.tokens.initial_management"]
_BY_FILE_KEY["acl.tokens.agent_master"] = _BY_FILE_KEY["acl.tokens.agent_recovery"]
_BY_FILE_KEY["ui"] = BY_NAME["ui"]  # Consul's older top-level key for ui_config.enabled
_NESTED = ("ports", "limits", "ui_config", "acl", "acl.tokens", "tls", "tls.defaults", "tls.https")

_FLAG_KIND = {"list": "list", "meta": "list", "bool": "bool"}
AGENT_FLAGS: tuple[FlagSpec, ...] = (
    *(FlagSpec(f.flag, _FLAG_KIND.get(f.kind, "str"), f.help)
      for f in FIELDS if f.flag is not None),
    FlagSpec("config-file", "list", "JSON config file to load (repeatable).", "PATH"),
    FlagSpec("config-dir", "list", "Directory of *.json config files (repeatable).", "PATH"),
)


def _env_name(f: Field) -> str:
    return "RUMOR_" + f.name.upper()


def _split_meta(item: str, where: str) -> tuple[str, str]:
    key, sep, value = item.partition(":")
    if not sep:
        raise ConfigError(f"{where}: node meta must be key:value, got {item!r}")
    return key, value


def _from_text(f: Field, raw: str, where: str) -> Any:
    """Convert one env-var or flag string to the field's type."""
    try:
        if f.kind == "int":
            if not re.fullmatch(r"-?[0-9]+", raw.strip()):
                raise ValueError("must be an integer")
            return int(raw)
        if f.kind == "bool":
            return parse_bool(raw.strip())
        if f.kind == "duration":
            return parse_go_duration(raw)
    except ValueError as e:
        raise ConfigError(f"{where}: invalid value {raw!r}: {e}") from None
    return raw


def _from_json(f: Field, value: object, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: must be {expected}, got {json.dumps(value)}")

    if f.kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if f.kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if f.kind == "duration":
        if not isinstance(value, str):
            raise bad('a duration string like "30s"')
        try:
            return parse_go_duration(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    if f.kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    if f.kind == "object":
        return value  # checked as a whole in _build
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad("an object of string values")
    return dict(value)


Layer = list[tuple[str, Any, str]]  # (field name, typed value, origin)


def file_layer(path: str) -> Layer:
    where = f"config file {path}"
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: line {e.lineno}: {e.msg} (column {e.colno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a JSON object")
    layer: Layer = []

    def walk(obj: dict[str, Any], prefix: str) -> None:
        for key, value in obj.items():
            dotted = prefix + key
            if dotted in _NESTED:
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: {dotted}: must be an object")
                walk(value, dotted + ".")
                continue
            f = _BY_FILE_KEY.get(dotted)
            if f is None:
                raise ConfigError(f"{where}: unknown key {dotted!r}")
            layer.append((f.name, _from_json(f, value, f"{where}: {dotted}"), where))

    walk(data, "")
    return layer


def dir_layers(path: str) -> list[Layer]:
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(".json"))
    except OSError as e:
        raise ConfigError(f"config dir {path}: cannot read: {e}") from None
    return [file_layer(os.path.join(path, n)) for n in names]


def env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = []
    for f in FIELDS:
        name = _env_name(f)
        raw = env.get(name, "")
        if raw == "":
            continue
        if f.kind == "list":
            value: Any = [p.strip() for p in raw.split(",") if p.strip()]
        elif f.kind == "meta":
            value = dict(_split_meta(p.strip(), name) for p in raw.split(",") if p.strip())
        elif f.kind == "object":
            try:
                value = json.loads(raw)
            except ValueError as e:
                raise ConfigError(f"{name}: invalid JSON: {e}") from None
        else:
            value = _from_text(f, raw, name)
        layer.append((f.name, value, f"environment {name}"))
    return layer


def flag_layer(flags: ParsedFlags) -> Layer:
    layer: Layer = []
    for f in FIELDS:
        if not f.flag or not flags.has(f.flag):
            continue
        where = f"-{f.flag}"
        if f.kind == "list":
            value: Any = flags.get_list(f.flag)
        elif f.kind == "meta":
            value = dict(_split_meta(item, where) for item in flags.get_list(f.flag))
        elif f.kind == "bool":
            value = flags.get_bool(f.flag)
        else:
            value = _from_text(f, flags.get_str(f.flag) or "", where)
        layer.append((f.name, value, f"flag {where}"))
    return layer
