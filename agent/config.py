"""Agent configuration: one frozen dataclass built from defaults, files, environment and flags.

Owns `AgentConfig`, `load_config` and the checks every value passes.  The field table and the
sources (files, environment, flags) are in `agent.config_sources`; the Go-`flag`-style parser
shared by every `rumor` sub-command is `agent.flags`.

Precedence for single values: defaults < config files (JSON, Consul key names, in the order
given) < environment `RUMOR_<FIELD>` < command-line flags. Lists (`start_join`, `retry_join`)
are appended across all sources and de-duplicated, and `node_meta` maps are merged, as Consul
does. Every problem raises `ConfigError` whose message starts with the field, flag, variable
or file it concerns; nothing is half-applied.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.acl import ACLError, ACLs, Token, parse_token_list
from agent.config_sources import (
    AGENT_FLAGS,
    BY_NAME,
    FIELDS,
    Layer,
    dir_layers,
    env_layer,
    file_layer,
    flag_layer,
)
from agent.errors import ConfigError
from agent.flags import (
    FlagError,
    FlagSpec,
    HelpRequested,
    ParsedFlags,
    flags_usage,
    parse_flags,
)
from agent.meta import (
    KEY_MAX,
    MAX_PAIRS,
    NODE_META_WIRE_MAX,
    VALUE_MAX,
    meta_problem,
    node_tags,
    tags_wire_size,
)
from gossip import KEY_SIZES, USER_EVENT_SIZE_HARD_LIMIT, decode_b64_key, parse_join_address

__all__ = [  # the flag parser's names are re-exported: every sub-command reads them here
    "AGENT_FLAGS",
    "AgentConfig",
    "ConfigError",
    "FlagError",
    "FlagSpec",
    "HelpRequested",
    "ParsedFlags",
    "flags_usage",
    "load_config",
    "parse_flags",
]

# What `reload` (SIGHUP, PUT /v1/agent/reload) changes without a restart
RELOADABLE = ("log_level", "acl_enabled", "acl_default_policy", "acl_initial_management_token",
              "acl_agent_token", "acl_agent_recovery_token", "acl_default_token",
              "acl_token_list", "tls_ca_file", "tls_cert_file", "tls_key_file",
              "tls_verify_incoming")

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERR")
_LOG_ALIASES = {"WARNING": "WARN", "ERROR": "ERR"}
GOSSIP_PROFILES = ("lan", "wan", "local")
_DC_RE = re.compile(r"^[a-z0-9_-]+$")


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
        return None if self.encrypt is None else decode_b64_key(self.encrypt)

    def acls(self) -> ACLs:
        """The ACL state this configuration describes (validated when it was loaded)."""
        return ACLs(enabled=self.acl_enabled, default_policy=self.acl_default_policy,
                    token_list=self.acl_token_list,
                    initial_management=self.acl_initial_management_token,
                    agent=self.acl_agent_token, agent_recovery=self.acl_agent_recovery_token,
                    default=self.acl_default_token, node_name=self.node_name)


def load_config(argv: Sequence[str], env: Mapping[str, str], *,
                allow_paths: bool = False) -> AgentConfig:
    """Build the agent configuration from `rumor agent` flags and the environment.

    With allow_paths (used by `rumor validate`), positional arguments name config files or
    directories, loaded after any `-config-file`/`-config-dir` flags."""
    flags = parse_flags(AGENT_FLAGS, argv)
    if flags.args and not allow_paths:
        raise FlagError(f"unexpected argument: {flags.args[0]!r}")
    layers: list[Layer] = []
    for name, path in flags.order:
        if name == "config-file" and isinstance(path, str):
            layers.append(file_layer(path))
        elif name == "config-dir" and isinstance(path, str):
            layers.extend(dir_layers(path))
    if allow_paths:
        for path in flags.args:
            layers.extend(dir_layers(path) if os.path.isdir(path) else [file_layer(path)])
    layers.append(env_layer(env))
    layers.append(flag_layer(flags))

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer in layers:
        for name, value, where in layer:
            kind = BY_NAME[name].kind
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
    for f in FIELDS:
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
            key = decode_b64_key(out["encrypt"])
        except ValueError:
            raise err("encrypt", "key is not valid base64") from None
        if len(key) not in KEY_SIZES:
            raise err("encrypt", "key must be 16, 24 or 32 bytes after base64 decoding")

    _check_meta(out.get("datacenter", "dc1"), out.get("node_meta", {}),
                lambda msg: err("node_meta", msg))

    level = str(out.get("log_level", "INFO")).upper()
    level = _LOG_ALIASES.get(level, level)
    if level not in LOG_LEVELS:
        raise err("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    out["log_level"] = level

    size = out.get("event_size_limit", 512)
    if not 1 <= size <= USER_EVENT_SIZE_HARD_LIMIT:
        raise err("event_size_limit", f"must be 1-{USER_EVENT_SIZE_HARD_LIMIT}, got {size}")
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
        raise err(str(e), *(f.name for f in FIELDS if f.name.startswith("acl_"))) from None
    if out.get("https_port", -1) == -1:
        return
    from agent.tls import TLSConfigError, server_context  # cryptography: only when needed

    try:
        server_context(out.get("tls_ca_file"), out.get("tls_cert_file"),
                       out.get("tls_key_file"), bool(out.get("tls_verify_incoming")))
    except TLSConfigError as e:
        raise err(str(e), "https_port",
                  *(f.name for f in FIELDS if f.name.startswith("tls_"))) from None


def _check_join_addr(addr: str, err: Any) -> None:
    try:
        parse_join_address(addr, 0)
    except ValueError as exc:
        raise err(str(exc)) from None


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
