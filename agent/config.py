"""Agent configuration: one frozen dataclass built from defaults, files, environment and flags.

Owns `AgentConfig`, `load_config`, and the Go-`flag`-style command-line parser shared by
every `rumor` sub-command (`FlagSpec`, `parse_flags`).

Precedence for single values: defaults < config files (JSON, Consul key names, in the order
given) < environment `RUMOR_<FIELD>` < command-line flags. Lists (`start_join`, `retry_join`)
are appended across all sources and de-duplicated, and `node_meta` maps are merged, as Consul
does. Every problem raises `ConfigError` whose message starts with the field, flag, variable
or file it concerns; nothing is half-applied.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.acl import ACLError, ACLs, Token, parse_token_list
from agent.duration import parse_go_duration
from agent.meta import (
    KEY_MAX,
    MAX_PAIRS,
    NODE_META_WIRE_MAX,
    VALUE_MAX,
    meta_problem,
    node_tags,
    tags_wire_size,
)

SERF_EVENT_SIZE_HARD_CAP = 9216
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERR")
_LOG_ALIASES = {"WARNING": "WARN", "ERROR": "ERR"}
GOSSIP_PROFILES = ("lan", "wan", "local")
_DC_RE = re.compile(r"^[a-z0-9_-]+$")


class ConfigError(ValueError):
    """Bad configuration. The message starts with the field, flag, variable or file at fault."""


class FlagError(ConfigError):
    """A command line that does not parse."""


class HelpRequested(Exception):
    """`-h`, `-help` or `--help` was given."""


@dataclass(frozen=True)
class AgentConfig:
    node_name: str = ""
    datacenter: str = "dc1"
    bind_addr: str = "0.0.0.0"
    advertise_addr: str | None = None
    serf_lan_port: int = 8301
    client_addr: str = "127.0.0.1"
    http_port: int = 8500
    start_join: tuple[str, ...] = ()
    retry_join: tuple[str, ...] = ()
    retry_interval: float = 30.0
    retry_max: int = 0
    data_dir: str | None = None
    encrypt: str | None = None
    node_meta: dict[str, str] = field(default_factory=dict)
    dev: bool = False
    log_level: str = "INFO"
    event_size_limit: int = 512
    event_buffer: int = 256
    stream_buffer: int = 10_000
    gossip_profile: str = "lan"
    leave_on_terminate: bool = True
    https_port: int = -1
    acl_enabled: bool = False
    acl_default_policy: str = "allow"
    acl_initial_management_token: str | None = None
    acl_agent_token: str | None = None
    acl_agent_recovery_token: str | None = None
    acl_default_token: str | None = None
    acl_token_list: tuple[Token, ...] = ()
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify_incoming: bool = False
    rejoin_after_leave: bool = False
    http_max_conns_per_client: int = 200
    ui: bool = True

    def encrypt_key(self) -> bytes | None:
        """The decoded gossip key, or None when encryption is off."""
        return None if self.encrypt is None else base64.b64decode(self.encrypt)

    def acls(self) -> ACLs:
        """The ACL state this configuration describes (validated when it was loaded)."""
        return ACLs(enabled=self.acl_enabled, default_policy=self.acl_default_policy,
                    token_list=self.acl_token_list,
                    initial_management=self.acl_initial_management_token,
                    agent=self.acl_agent_token, agent_recovery=self.acl_agent_recovery_token,
                    default=self.acl_default_token, node_name=self.node_name)


# ---------------------------------------------------------------- Go-style flags


@dataclass(frozen=True)
class FlagSpec:
    """One command-line flag. kind: "str" (takes a value), "bool", or "list" (repeatable)."""

    name: str
    kind: str
    help: str
    metavar: str = "VALUE"


@dataclass
class ParsedFlags:
    """Flag values as given (strings, bools, lists of strings) plus the positional args."""

    values: dict[str, str | bool | list[str]]
    args: list[str]
    order: list[tuple[str, str | bool]] = field(default_factory=list)  # every flag, as given

    def has(self, name: str) -> bool:
        return name in self.values

    def get_str(self, name: str, default: str | None = None) -> str | None:
        v = self.values.get(name)
        return v if isinstance(v, str) else default

    def get_bool(self, name: str, default: bool = False) -> bool:
        v = self.values.get(name)
        return v if isinstance(v, bool) else default

    def get_list(self, name: str) -> list[str]:
        v = self.values.get(name)
        return list(v) if isinstance(v, list) else []


_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}")


def parse_flags(specs: Sequence[FlagSpec], argv: Sequence[str]) -> ParsedFlags:
    """Parse like Go's `flag` package: `-f=v`, `-f v`, `--f v`, `--f=v`; bools as `-b` or
    `-b=false`; parsing stops at the first non-flag argument or after `--`."""
    by_name = {s.name: s for s in specs}
    values: dict[str, str | bool | list[str]] = {}
    order: list[tuple[str, str | bool]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or arg[0] != "-":
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        name, eq, inline = body.partition("=")
        if name in ("h", "help"):
            raise HelpRequested()
        spec = by_name.get(name)
        if spec is None:
            raise FlagError(f"flag provided but not defined: -{name}")
        i += 1
        if spec.kind == "bool":
            try:
                flag = parse_bool(inline) if eq else True
            except ValueError:
                raise FlagError(f"-{name}: invalid boolean value {inline!r}") from None
            values[name] = flag
            order.append((name, flag))
            continue
        if not eq:
            if i >= len(argv):
                raise FlagError(f"flag needs an argument: -{name}")
            inline = argv[i]
            i += 1
        if spec.kind == "list":
            prev = values.get(name)
            values[name] = [*(prev if isinstance(prev, list) else []), inline]
        else:
            values[name] = inline
        order.append((name, inline))
    return ParsedFlags(values, list(argv[i:]), order)


def flags_usage(specs: Sequence[FlagSpec]) -> str:
    lines = []
    for s in specs:
        head = f"  -{s.name}" if s.kind == "bool" else f"  -{s.name}=<{s.metavar}>"
        lines.append(f"{head}\n      {s.help}")
    return "\n".join(lines)


# ---------------------------------------------------------------- field table


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # str | int | bool | list | duration | meta
    file_key: str | None  # dotted path in the JSON file
    flag: str | None
    help: str


_FIELDS: tuple[_Field, ...] = (
    _Field("node_name", "str", "node_name", "node", "Name of this node (default: hostname)."),
    _Field("datacenter", "str", "datacenter", "datacenter", "Datacenter of the agent."),
    _Field("bind_addr", "str", "bind_addr", "bind", "Address to bind gossip to."),
    _Field("advertise_addr", "str", "advertise_addr", "advertise",
           "Address to advertise to other nodes."),
    _Field("serf_lan_port", "int", "ports.serf_lan", "serf-lan-port", "Gossip (Serf LAN) port."),
    _Field("client_addr", "str", "client_addr", "client", "Address to bind the HTTP API to."),
    _Field("http_port", "int", "ports.http", "http-port", "HTTP API port."),
    _Field("start_join", "list", "start_join", "join", "Address to join at start (repeatable)."),
    _Field("retry_join", "list", "retry_join", "retry-join",
           "Address to join, retrying until it works (repeatable)."),
    _Field("retry_interval", "duration", "retry_interval", "retry-interval",
           "Time to wait between join attempts (Go duration, e.g. 30s)."),
    _Field("retry_max", "int", "retry_max", "retry-max", "Maximum join attempts (0 = forever)."),
    _Field("data_dir", "str", "data_dir", "data-dir", "Directory for agent state."),
    _Field("encrypt", "str", "encrypt", "encrypt", "Base64 gossip encryption key."),
    _Field("node_meta", "meta", "node_meta", "node-meta", "Node metadata key:value (repeatable)."),
    _Field("dev", "bool", None, "dev", "Development mode: 127.0.0.1, no data dir, DEBUG logs."),
    _Field("log_level", "str", "log_level", "log-level", "TRACE, DEBUG, INFO, WARN or ERR."),
    _Field("event_size_limit", "int", "event_size_limit", "event-size-limit",
           "Maximum user event size in bytes (name + payload, 1-9216)."),
    _Field("event_buffer", "int", "event_buffer", "event-buffer",
           "Number of recent events kept for /v1/event/list."),
    _Field("stream_buffer", "int", "stream_buffer", "stream-buffer",
           "Number of bus records kept for /v1/event/stream resumption (and on disk)."),
    _Field("gossip_profile", "str", "gossip_profile", "gossip-profile",
           "Gossip timing profile: lan, wan or local."),
    _Field("leave_on_terminate", "bool", "leave_on_terminate", None,
           "Leave gracefully on SIGTERM."),
    _Field("https_port", "int", "ports.https", "https-port", "HTTPS API port (-1 = off)."),
    _Field("acl_enabled", "bool", "acl.enabled", None, "Enforce ACLs."),
    _Field("acl_default_policy", "str", "acl.default_policy", None, "allow or deny."),
    _Field("acl_initial_management_token", "str", "acl.tokens.initial_management", None,
           "SecretID with full rights."),
    _Field("acl_agent_token", "str", "acl.tokens.agent", None, "The agent's own token."),
    _Field("acl_agent_recovery_token", "str", "acl.tokens.agent_recovery", None,
           "SecretID for this agent's agent endpoints."),
    _Field("acl_default_token", "str", "acl.tokens.default", None,
           "Token for requests without one."),
    _Field("acl_token_list", "object", "acl.token_list", None, "Tokens with their rules."),
    _Field("tls_ca_file", "str", "tls.defaults.ca_file", None, "CA bundle (PEM)."),
    _Field("tls_cert_file", "str", "tls.defaults.cert_file", None, "Agent certificate (PEM)."),
    _Field("tls_key_file", "str", "tls.defaults.key_file", None, "Agent private key (PEM)."),
    _Field("tls_verify_incoming", "bool", "tls.defaults.verify_incoming", None,
           "Require HTTPS clients to present a certificate signed by the CA."),
    _Field("rejoin_after_leave", "bool", "rejoin_after_leave", "rejoin",
           "Rejoin the members in the data dir's snapshot even after a graceful leave."),
    _Field("http_max_conns_per_client", "int", "limits.http_max_conns_per_client", None,
           "Open HTTP connections allowed per client IP (0 = no limit)."),
    _Field("ui", "bool", "ui_config.enabled", "ui", "Serve the web UI at /ui/ (default true)."),
)
_BY_NAME = {f.name: f for f in _FIELDS}
_BY_FILE_KEY = {f.file_key: f for f in _FIELDS if f.file_key}
# Consul's older top-level TLS keys, and tls.https (rumor serves HTTPS only) mean the same
for _key in ("ca_file", "cert_file", "key_file", "verify_incoming"):
    _BY_FILE_KEY[_key] = _BY_FILE_KEY[f"tls.https.{_key}"] = _BY_FILE_KEY[f"tls.defaults.{_key}"]
# ... and the pre-1.11 names of two ACL tokens
_BY_FILE_KEY["acl.tokens.master"] = _BY_FILE_KEY["acl.tokens.initial_management"]
_BY_FILE_KEY["acl.tokens.agent_master"] = _BY_FILE_KEY["acl.tokens.agent_recovery"]
_BY_FILE_KEY["ui"] = _BY_NAME["ui"]  # Consul's older top-level key for ui_config.enabled
_NESTED = ("ports", "limits", "ui_config", "acl", "acl.tokens", "tls", "tls.defaults", "tls.https")

_FLAG_KIND = {"list": "list", "meta": "list", "bool": "bool"}
AGENT_FLAGS: tuple[FlagSpec, ...] = (
    *(FlagSpec(f.flag, _FLAG_KIND.get(f.kind, "str"), f.help)
      for f in _FIELDS if f.flag is not None),
    FlagSpec("config-file", "list", "JSON config file to load (repeatable).", "PATH"),
    FlagSpec("config-dir", "list", "Directory of *.json config files (repeatable).", "PATH"),
)


def _env_name(f: _Field) -> str:
    return "RUMOR_" + f.name.upper()


def _split_meta(item: str, where: str) -> tuple[str, str]:
    key, sep, value = item.partition(":")
    if not sep:
        raise ConfigError(f"{where}: node meta must be key:value, got {item!r}")
    return key, value


def _from_text(f: _Field, raw: str, where: str) -> Any:
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


def _from_json(f: _Field, value: object, where: str) -> Any:
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


_Layer = list[tuple[str, Any, str]]  # (field name, typed value, origin)


def _file_layer(path: str) -> _Layer:
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
    layer: _Layer = []

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


def _dir_layers(path: str) -> list[_Layer]:
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(".json"))
    except OSError as e:
        raise ConfigError(f"config dir {path}: cannot read: {e}") from None
    return [_file_layer(os.path.join(path, n)) for n in names]


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = []
    for f in _FIELDS:
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


def _flag_layer(flags: ParsedFlags) -> _Layer:
    layer: _Layer = []
    for f in _FIELDS:
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


def load_config(argv: Sequence[str], env: Mapping[str, str], *,
                allow_paths: bool = False) -> AgentConfig:
    """Build the agent configuration from `rumor agent` flags and the environment.

    With allow_paths (used by `rumor validate`), positional arguments name config files or
    directories, loaded after any `-config-file`/`-config-dir` flags."""
    flags = parse_flags(AGENT_FLAGS, argv)
    if flags.args and not allow_paths:
        raise FlagError(f"unexpected argument: {flags.args[0]!r}")
    layers: list[_Layer] = []
    for name, path in flags.order:
        if name == "config-file" and isinstance(path, str):
            layers.append(_file_layer(path))
        elif name == "config-dir" and isinstance(path, str):
            layers.extend(_dir_layers(path))
    if allow_paths:
        for path in flags.args:
            layers.extend(_dir_layers(path) if os.path.isdir(path) else [_file_layer(path)])
    layers.append(_env_layer(env))
    layers.append(_flag_layer(flags))

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer in layers:
        for name, value, where in layer:
            kind = _BY_NAME[name].kind
            if kind == "list":
                merged = list(values.get(name, []))
                for item in value:
                    if item not in merged:
                        merged.append(item)
                value = merged
            elif kind == "meta":
                value = {**values.get(name, {}), **value}
            values[name] = value
            origin[name] = where
    return _build(values, origin)


def _build(values: dict[str, Any], origin: dict[str, str]) -> AgentConfig:
    def err(name: str, msg: str) -> ConfigError:
        src = origin.get(name)
        return ConfigError(f"{name}: {msg}" + (f" (from {src})" if src else ""))

    dev = bool(values.get("dev", False))
    if dev:
        values.setdefault("node_name", "dev")
        values.setdefault("bind_addr", "127.0.0.1")
        values.setdefault("log_level", "DEBUG")
        values["data_dir"] = None
    out: dict[str, Any] = {}
    for f in _FIELDS:
        if f.name in values:
            out[f.name] = values[f.name]

    node = out.get("node_name") or ""
    if "node_name" not in out:
        node = socket.gethostname()
        if not node:
            raise err("node_name", "cannot determine the hostname; set -node")
    if not node.strip() or any(ord(c) < 32 for c in node):
        raise err("node_name", f"must be non-empty without control characters, got {node!r}")
    out["node_name"] = node

    dc = str(out.get("datacenter", "dc1")).lower()
    if not _DC_RE.match(dc):
        raise err("datacenter", f"may only contain a-z, 0-9, '-' and '_', got {dc!r}")
    out["datacenter"] = dc

    for name in ("bind_addr", "client_addr", "advertise_addr"):
        if out.get(name) is None:
            continue
        try:
            ip = ipaddress.ip_address(out[name])
        except ValueError:
            raise err(name, f"must be an IP address, got {out[name]!r}") from None
        if name == "advertise_addr" and ip.is_unspecified:
            raise err(name, f"cannot be the unspecified address {out[name]}")
        out[name] = str(ip)

    for name in ("serf_lan_port", "http_port", "https_port"):
        off = name != "serf_lan_port" and out.get(name) == -1  # Consul: -1 turns it off
        if name in out and not off and not 1 <= out[name] <= 65535:
            raise err(name, f"must be 1-65535, got {out[name]}")
    if out.get("http_port") == -1 and out.get("https_port", -1) == -1:
        raise err("http_port", "-1 turns plain HTTP off, but https_port is not set either")

    for name in ("start_join", "retry_join"):
        for addr in out.get(name, []):
            _check_join_addr(addr, lambda msg, n=name: err(n, msg))
        if name in out:
            out[name] = tuple(out[name])

    if out.get("retry_interval", 30.0) <= 0:
        raise err("retry_interval", f"must be positive, got {out['retry_interval']}s")
    if out.get("retry_max", 0) < 0:
        raise err("retry_max", f"must be >= 0, got {out['retry_max']}")

    if "data_dir" in out and out["data_dir"] is not None:
        d = out["data_dir"]
        if not d:
            raise err("data_dir", "must not be empty")
        if os.path.exists(d) and not os.path.isdir(d):
            raise err("data_dir", f"{d} exists and is not a directory")

    if out.get("encrypt") is not None:
        try:
            key = base64.b64decode(out["encrypt"], validate=True)
        except (binascii.Error, ValueError):
            raise err("encrypt", "key is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise err("encrypt", "key must be 16, 24 or 32 bytes after base64 decoding")

    _check_meta(out.get("datacenter", "dc1"), out.get("node_meta", {}),
                lambda msg: err("node_meta", msg))

    level = str(out.get("log_level", "INFO")).upper()
    level = _LOG_ALIASES.get(level, level)
    if level not in LOG_LEVELS:
        raise err("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    out["log_level"] = level

    size = out.get("event_size_limit", 512)
    if not 1 <= size <= SERF_EVENT_SIZE_HARD_CAP:
        raise err("event_size_limit", f"must be 1-{SERF_EVENT_SIZE_HARD_CAP}, got {size}")
    buf = out.get("event_buffer", 256)
    if not 1 <= buf <= 65536:
        raise err("event_buffer", f"must be 1-65536, got {buf}")
    sbuf = out.get("stream_buffer", 10_000)
    if not 1 <= sbuf <= 1_000_000:
        raise err("stream_buffer", f"must be 1-1000000, got {sbuf}")
    conns = out.get("http_max_conns_per_client", 200)
    if not 0 <= conns <= 1_000_000:
        raise err("http_max_conns_per_client", f"must be 0-1000000, got {conns}")
    profile = str(out.get("gossip_profile", "lan")).lower()
    if profile not in GOSSIP_PROFILES:
        raise err("gossip_profile", f"must be one of lan, wan, local, got {profile!r}")
    out["gossip_profile"] = profile
    _check_trust(out, origin)
    return AgentConfig(**out)


def _check_trust(out: dict[str, Any], origin: dict[str, str]) -> None:
    """ACLs and TLS: parse the token list, check the tokens refer to it, load the certificate
    files once (unreadable or mismatched files stop the agent here, naming the field)."""
    def err(text: str, *fields: str) -> ConfigError:
        src = sorted({origin[f] for f in fields if f in origin})
        return ConfigError(text + (f" (from {', '.join(src)})" if src else ""))

    out["acl_default_policy"] = str(out.get("acl_default_policy", "allow")).lower()
    try:
        if "acl_token_list" in out:
            out["acl_token_list"] = parse_token_list(out["acl_token_list"])
        AgentConfig(**out).acls()
    except ACLError as e:
        raise err(str(e), *(f.name for f in _FIELDS if f.name.startswith("acl_"))) from None
    if out.get("https_port", -1) == -1:
        return
    from agent.tls import TLSConfigError, server_context  # cryptography: only when needed

    try:
        server_context(out.get("tls_ca_file"), out.get("tls_cert_file"),
                       out.get("tls_key_file"), bool(out.get("tls_verify_incoming")))
    except TLSConfigError as e:
        raise err(str(e), "https_port",
                  *(f.name for f in _FIELDS if f.name.startswith("tls_"))) from None


def _check_join_addr(addr: str, err: Any) -> None:
    if not addr or any(c.isspace() for c in addr):
        raise err(f"invalid address {addr!r}")
    port = None
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise err(f"invalid address {addr!r}")
        port = rest[1:] if rest else None
    elif addr.count(":") == 1:
        port = addr.partition(":")[2]
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise err(f"invalid port in address {addr!r}")


def _check_meta(datacenter: str, meta: Mapping[str, str], err: Any) -> None:
    problem = meta_problem(meta, allow_reserved=True)
    if problem is not None:
        key, kind = problem.key, problem.kind
        raise err({
            "too_many": f"at most {MAX_PAIRS} pairs allowed, got {len(meta)}",
            "empty_key": "key must not be empty",
            "key_chars": f"key {key!r} may only contain A-Z, a-z, 0-9, '-' and '_'",
            "key_long": f"key {key[:20]!r}... longer than {KEY_MAX} characters",
            "value_long": f"value for key {key!r} longer than {VALUE_MAX} characters",
        }[kind])
    size = tags_wire_size(node_tags(datacenter, meta))
    if size > NODE_META_WIRE_MAX:
        raise err(f"tags encode to {size} bytes; gossip allows {NODE_META_WIRE_MAX} in all "
                  "(including the agent's own tags: role, dc, build)")
