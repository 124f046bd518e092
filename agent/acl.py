"""ACLs in Consul's model, held by each agent: rules, tokens and the authorizer.

Owns the rule language (HCL, parsed with python-hcl2, or JSON; Consul's names), the rule
precedence (an exact rule beats any prefix rule, the longest prefix wins, and among rules for
the same name `deny` beats `write` beats `read`), the agent-configured tokens
(`acl.tokens.initial_management`, `agent`, `agent_recovery`, `default`, plus `acl.token_list`
of SecretIDs with rules) and `ACLs.resolve`, which turns a request's SecretID into an
`Authorizer`.  Denials are domain errors (`PermissionDenied`, `ACLNotFound`) whose text is
Consul's; only `agent.api` maps them to HTTP 403.

Resources: `agent`, `event`, `node`, `service` (each with a `_prefix` form) and the single
rules `keyring` and `operator`.  Policies: `read`, `write` (implies read), `deny`.  A request
that no rule of its token covers gets `acl.default_policy` ("allow" or "deny").
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
NAMED_RESOURCES = ("agent", "event", "node", "service")
SINGLE_RESOURCES = ("keyring", "operator")
POLICIES = ("deny", "read", "write")
_RANK = {"read": 1, "write": 2, "deny": 3}  # which of two rules for one name wins
MAX_SECRET = 256
TOKEN_KEYS = ("SecretID", "AccessorID", "Description", "Rules")



def _parse_hcl(text: str) -> object:
    # imported here: lark's grammar costs ~50 ms, which CLI client commands need not pay
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(with_comments=False, explicit_blocks=False,
                                   preserve_heredocs=False, strip_string_quotes=False)
    return hcl2.loads(text, serialization_options=options)


class ACLError(ValueError):
    """Bad ACL configuration or rules; the message starts with the field at fault."""


class PermissionDenied(Exception):
    """The token lacks a permission.  str() is Consul's text."""

    def __init__(self, accessor: str, resource: str, access: str, name: str | None) -> None:
        who = f"token with AccessorID '{accessor}'" if accessor else "provided token"
        text = f"Permission denied: {who} lacks permission '{resource}:{access}'"
        if name is not None:
            text += f" on {json.dumps(name, ensure_ascii=False)}"
        super().__init__(text)


class ACLNotFound(Exception):
    """A token was given that this agent does not know (Consul: 403 "ACL not found")."""

    def __init__(self) -> None:
        super().__init__("ACL not found")


# ---------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rules:
    """Parsed rules of one token: exact names, prefixes (longest first), single rules."""

    exact: Mapping[tuple[str, str], str] = field(default_factory=dict)
    prefixes: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    single: Mapping[str, str] = field(default_factory=dict)

    def policy(self, resource: str, name: str | None) -> str | None:
        """The policy that governs `name` (None for keyring/operator), or None if no rule."""
        if name is None:
            return self.single.get(resource)
        found = self.exact.get((resource, name))
        if found is not None:
            return found
        for prefix, policy in self.prefixes.get(resource, ()):
            if name.startswith(prefix):
                return policy
        return None


def _merge(table: dict[Any, str], key: Any, policy: str) -> None:
    old = table.get(key)
    if old is None or _RANK[policy] > _RANK[old]:
        table[key] = policy


def _text(value: object, where: str, hcl: bool) -> str:
    """A string from the parsed rules: HCL keeps the quotes (so bare words are refused)."""
    if not isinstance(value, str):
        raise ACLError(f"{where}: must be a string, got {json.dumps(value, default=str)}")
    if not hcl:
        return value
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ACLError(f"{where}: must be a quoted string, got {value}")
    if "${" in value:
        raise ACLError(f"{where}: interpolation is not allowed in rules, got {value}")
    try:
        text = json.loads(value)
    except ValueError:
        raise ACLError(f"{where}: bad string {value}") from None
    if not isinstance(text, str):
        raise ACLError(f"{where}: bad string {value}")
    return text


def _policy(value: object, where: str, hcl: bool) -> str:
    policy = _text(value, where, hcl)
    if policy not in POLICIES:
        raise ACLError(f"{where}: invalid policy {policy!r} (read, write or deny)")
    return policy


def _blocks(kind: str, value: object, where: str) -> list[tuple[object, object]]:
    """(label, body) pairs of `kind "label" { ... }` in either JSON or python-hcl2 shape."""
    items = value if isinstance(value, list) else [value]
    pairs: list[tuple[object, object]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ACLError(f"{where}: {kind} rules must be blocks like "
                           f'{kind} "name" {{ policy = "read" }}')
        for label, body in item.items():
            if not isinstance(body, dict):
                raise ACLError(f"{where}: {kind} needs a name: "
                               f'{kind} "name" {{ policy = "read" }}')
            pairs.append((label, body))
    return pairs


def parse_rules(source: str | Mapping[str, Any], where: str = "rules") -> Rules:
    """Rules from HCL or JSON text, or an already decoded JSON object.  ACLError names the
    field (`where`) and what is wrong: syntax, an unknown rule kind or field, a bad policy."""
    hcl = False
    if isinstance(source, str):
        text = source.strip()
        if text.startswith("{"):
            try:
                data: object = json.loads(text)
            except ValueError as exc:
                raise ACLError(f"{where}: invalid JSON rules: {exc}") from None
        else:
            hcl = True
            try:
                data = _parse_hcl(text)
            except Exception as exc:  # lark raises several types; all mean a syntax error
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise ACLError(f"{where}: invalid HCL rules: {type(exc).__name__}: "
                               f"{first[:200]}") from None
    else:
        data = source
    if not isinstance(data, Mapping):
        raise ACLError(f"{where}: rules must be an object")
    exact: dict[tuple[str, str], str] = {}
    prefixes: dict[str, dict[str, str]] = {}
    single: dict[str, str] = {}
    for kind, value in data.items():
        resource, _, suffix = kind.partition("_")
        if kind in SINGLE_RESOURCES:
            _merge(single, kind, _policy(value, f"{where}: {kind}", hcl))
            continue
        if resource not in NAMED_RESOURCES or suffix not in ("", "prefix"):
            raise ACLError(f"{where}: unknown rule kind {kind!r} (rumor knows "
                           f"{', '.join(k + s for k in NAMED_RESOURCES for s in ('', '_prefix'))}"
                           f", {', '.join(SINGLE_RESOURCES)})")
        for label, body in _blocks(kind, value, where):
            name = _text(label, f"{where}: {kind} name", hcl)
            assert isinstance(body, dict)
            unknown = sorted(set(body) - {"policy"})
            if unknown:
                raise ACLError(f"{where}: {kind} {name!r}: unknown field {unknown[0]!r}")
            if "policy" not in body:
                raise ACLError(f"{where}: {kind} {name!r}: missing policy")
            policy = _policy(body["policy"], f"{where}: {kind} {name!r} policy", hcl)
            if suffix:
                _merge(prefixes.setdefault(resource, {}), name, policy)
            else:
                _merge(exact, (resource, name), policy)
    ordered = {r: tuple(sorted(p.items(), key=lambda kv: len(kv[0]), reverse=True))
               for r, p in prefixes.items()}
    return Rules(exact, ordered, single)


# ---------------------------------------------------------------- authorizer


class Authorizer:
    """What one token may do.  The boolean methods answer; `require` raises PermissionDenied.

    `manage` (ACLs off, or the initial management token) allows everything."""

    def __init__(self, rules: Rules | None, default_allow: bool, *, accessor: str = "",
                 manage: bool = False) -> None:
        self.rules = rules or Rules()
        self.default_allow = default_allow
        self.accessor = accessor
        self.manage = manage

    def allowed(self, resource: str, name: str | None, access: str) -> bool:
        if self.manage:
            return True
        policy = self.rules.policy(resource, name)
        if policy is None:
            return self.default_allow
        return policy == "write" or (policy == "read" and access == "read")

    def require(self, resource: str, name: str | None, access: str) -> None:
        if not self.allowed(resource, name, access):
            raise PermissionDenied(self.accessor, resource, access, name)

    def event_read(self, name: str) -> bool:
        return self.allowed("event", name, "read")

    def event_write(self, name: str) -> bool:
        return self.allowed("event", name, "write")

    def agent_read(self, node: str) -> bool:
        return self.allowed("agent", node, "read")

    def agent_write(self, node: str) -> bool:
        return self.allowed("agent", node, "write")

    def node_read(self, name: str) -> bool:
        return self.allowed("node", name, "read")

    def node_write(self, name: str) -> bool:
        return self.allowed("node", name, "write")

    def service_read(self, name: str) -> bool:
        return self.allowed("service", name, "read")

    def service_write(self, name: str) -> bool:
        return self.allowed("service", name, "write")

    def keyring_read(self) -> bool:
        return self.allowed("keyring", None, "read")

    def keyring_write(self) -> bool:
        return self.allowed("keyring", None, "write")

    def operator_read(self) -> bool:
        return self.allowed("operator", None, "read")

    def operator_write(self) -> bool:
        return self.allowed("operator", None, "write")


ALLOW_ALL = Authorizer(None, True, manage=True)


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    secret: str
    accessor: str
    description: str
    rules: Rules


def _secret(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ACLError(f"{where}: must be a non-empty string")
    if len(value) > MAX_SECRET or not value.isprintable() or any(c.isspace() for c in value):
        raise ACLError(f"{where}: must be at most {MAX_SECRET} printable characters "
                       "without spaces")
    return value


def parse_token_list(items: object, where: str = "acl.token_list") -> tuple[Token, ...]:
    """`[{"SecretID", "AccessorID"?, "Description"?, "Rules"}]` (Rules: HCL/JSON text or a
    JSON object)."""
    if not isinstance(items, list):
        raise ACLError(f"{where}: must be a list of token objects")
    tokens: list[Token] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ACLError(f"{at}: must be an object with SecretID and Rules")
        unknown = sorted(set(item) - set(TOKEN_KEYS))
        if unknown:
            raise ACLError(f"{at}: unknown key {unknown[0]!r} (allowed: {', '.join(TOKEN_KEYS)})")
        secret = _secret(item.get("SecretID"), f"{at}.SecretID")
        if secret in seen:
            raise ACLError(f"{at}.SecretID: duplicate SecretID")
        seen.add(secret)
        for key in ("AccessorID", "Description"):
            if not isinstance(item.get(key, ""), str):
                raise ACLError(f"{at}.{key}: must be a string")
        rules = item.get("Rules", "")
        if not isinstance(rules, str | dict):
            raise ACLError(f"{at}.Rules: must be HCL or JSON text, or a JSON object")
        tokens.append(Token(secret, item.get("AccessorID", ""), item.get("Description", ""),
                            parse_rules(rules, f"{at}.Rules")))
    return tuple(tokens)


def _same(secret: str, known: str | None) -> bool:
    """Constant-time comparison with a configured secret (any characters)."""
    return known is not None and hmac.compare_digest(secret.encode(), known.encode())


class ACLs:
    """The agent's ACL state: built from configuration, replaced whole on reload."""

    def __init__(self, *, enabled: bool = False, default_policy: str = "allow",
                 token_list: Sequence[Token] = (), initial_management: str | None = None,
                 agent: str | None = None, agent_recovery: str | None = None,
                 default: str | None = None, node_name: str = "") -> None:
        if default_policy not in ("allow", "deny"):
            raise ACLError(f"acl.default_policy: must be allow or deny, got {default_policy!r}")
        self.enabled = enabled
        self.default_allow = default_policy == "allow"
        self.tokens = {t.secret: t for t in token_list}
        self.management = (_secret(initial_management, "acl.tokens.initial_management")
                           if initial_management else None)
        self.recovery = (_secret(agent_recovery, "acl.tokens.agent_recovery")
                         if agent_recovery else None)
        if self.management is not None and self.management in self.tokens:
            raise ACLError("acl.tokens.initial_management: also listed in acl.token_list")
        for key, secret in (("agent", agent), ("default", default)):
            if secret and secret not in self.tokens and secret != self.management:
                raise ACLError(f"acl.tokens.{key}: no token with this SecretID in "
                               "acl.token_list (nor the initial_management token)")
        self.agent_token = agent or None
        self.default_token = default or None
        # Consul's agent recovery token: this agent's agent endpoints and reading nodes
        self._recovery = Authorizer(Rules({("agent", node_name): "write"},
                                          {"node": (("", "read"),)}), False)

    def resolve(self, secret: str | None) -> Authorizer:
        """The authorizer for a request's SecretID (None or "": the default token, else the
        anonymous token).  ACLNotFound for a SecretID this agent does not know."""
        if not self.enabled:
            return ALLOW_ALL
        if not secret:
            if self.default_token is None:
                return Authorizer(None, self.default_allow, accessor=ANONYMOUS_ACCESSOR)
            secret = self.default_token
        if _same(secret, self.management):
            return ALLOW_ALL
        if _same(secret, self.recovery):
            return self._recovery
        token = self.tokens.get(secret)
        if token is None:
            raise ACLNotFound()
        return Authorizer(token.rules, self.default_allow, accessor=token.accessor)
