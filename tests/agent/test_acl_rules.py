"""The ACL model (agent/acl.py): rule parsing (HCL and JSON), precedence, tokens, resolution;
and the request-token helper (agent/api/auth.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.acl import (
    ANONYMOUS_ACCESSOR,
    ACLError,
    ACLNotFound,
    ACLs,
    PermissionDenied,
    parse_rules,
    parse_token_list,
)
from agent.api.auth import request_token
from agent.config import load_config
from agent.http.types import make_request

RULES = """
# a comment
event_prefix "" { policy = "read" }
event_prefix "de" { policy = "deny" }
event_prefix "dep" { policy = "write" }
event "deploy-db" { policy = "read" }
event "x" { policy = "write" }
event "x" { policy = "deny" }
agent "n1" { policy = "write" }
node_prefix "web-" { policy = "read" }
service "api" { policy = "write" }
keyring = "read"
operator = "write"
"""


def test_hcl_rules_follow_consuls_precedence() -> None:
    rules = parse_rules(RULES)
    assert rules.policy("event", "other") == "read"  # the empty prefix covers everything
    assert rules.policy("event", "deploy") == "write"  # longest prefix wins ("dep" > "de")
    assert rules.policy("event", "delete") == "deny"
    assert rules.policy("event", "deploy-db") == "read"  # exact beats any prefix
    assert rules.policy("event", "x") == "deny"  # deny beats write for the same name
    assert rules.policy("agent", "n1") == "write"
    assert rules.policy("agent", "n2") is None
    assert rules.policy("node", "web-1") == "read"
    assert rules.policy("node", "db-1") is None
    assert rules.policy("keyring", None) == "read"
    assert rules.policy("operator", None) == "write"


def test_json_rules_text_and_object_mean_the_same_as_hcl() -> None:
    obj = {"event_prefix": {"": {"policy": "read"}}, "event": {"deploy": {"policy": "write"}},
           "keyring": "write"}
    for source in (obj, json.dumps(obj)):
        rules = parse_rules(source)
        assert rules.policy("event", "deploy") == "write"
        assert rules.policy("event", "other") == "read"
        assert rules.policy("keyring", None) == "write"
    hcl = parse_rules('event_prefix "" { policy = "read" }\nevent "deploy" { policy = "write" }'
                      '\nkeyring = "write"')
    assert hcl == parse_rules(obj)


@pytest.mark.parametrize(("source", "needle"), [
    ('key_prefix "" { policy = "read" }', "unknown rule kind 'key_prefix'"),
    ('evnt "" { policy = "read" }', "unknown rule kind 'evnt'"),
    ('event "" { policy = "list" }', "invalid policy 'list'"),
    ('event "" { policy = "admin" }', "invalid policy 'admin'"),
    ('event "" { policy = read }', "must be a quoted string"),
    ('event "" { policy = "${var.x}" }', "interpolation"),
    ('event "" { polcy = "read" }', "unknown field 'polcy'"),
    ('event "" { }', "missing policy"),
    ('event { policy = "read" }', "needs a name"),
    ('event "" { policy = "read" ', "invalid HCL rules"),
    ('keyring = "list"', "invalid policy 'list'"),
    ("{not json", "invalid JSON rules"),
    ('{"event": "deploy"}', "must be blocks"),
    ("[1, 2]", "invalid HCL rules"),
])
def test_bad_rules_name_what_is_wrong(source: str, needle: str) -> None:
    with pytest.raises(ACLError) as info:
        parse_rules(source, "acl.token_list[3].Rules")
    assert str(info.value).startswith("acl.token_list[3].Rules: ")
    assert needle in str(info.value)


@pytest.mark.parametrize(("items", "needle"), [
    ({"SecretID": "a"}, "acl.token_list: must be a list"),
    ([{"Rules": ""}], "acl.token_list[0].SecretID: must be a non-empty string"),
    ([{"SecretID": "a b"}], "acl.token_list[0].SecretID: must be at most"),
    ([{"SecretID": "a"}, {"SecretID": "a"}], "acl.token_list[1].SecretID: duplicate"),
    ([{"SecretID": "a", "Policies": []}], "acl.token_list[0]: unknown key 'Policies'"),
    ([{"SecretID": "a", "Rules": 5}], "acl.token_list[0].Rules: must be HCL or JSON"),
    (["a"], "acl.token_list[0]: must be an object"),
])
def test_bad_token_lists_name_the_entry(items: object, needle: str) -> None:
    with pytest.raises(ACLError) as info:
        parse_token_list(items)
    assert needle in str(info.value)


def _acls(default_policy: str = "deny", **tokens: str) -> ACLs:
    token_list = parse_token_list([
        {"SecretID": "reader", "AccessorID": "acc-reader",
         "Rules": 'event_prefix "" { policy = "read" }'},
        {"SecretID": "deployer", "Rules": 'event "deploy" { policy = "write" }'},
    ])
    return ACLs(enabled=True, default_policy=default_policy, token_list=token_list,
                initial_management="root", node_name="n1", **tokens)


def test_resolution_anonymous_default_management_recovery_and_unknown() -> None:
    deny = _acls()
    anon = deny.resolve(None)
    assert anon.accessor == ANONYMOUS_ACCESSOR and not anon.event_read("deploy")
    assert _acls("allow").resolve("").event_write("anything")
    reader = deny.resolve("reader")
    assert reader.event_read("deploy") and not reader.event_write("deploy")
    with pytest.raises(PermissionDenied) as info:
        reader.require("event", "deploy", "write")
    assert str(info.value) == ("Permission denied: token with AccessorID 'acc-reader' lacks "
                               "permission 'event:write' on \"deploy\"")
    with pytest.raises(PermissionDenied) as info:
        deny.resolve("deployer").require("keyring", None, "read")
    assert str(info.value) == "Permission denied: provided token lacks permission 'keyring:read'"
    # a rule that does not cover the name falls back to the default policy
    assert _acls("allow").resolve("deployer").event_write("other")
    assert not deny.resolve("deployer").event_write("other")
    root = deny.resolve("root")
    assert root.operator_write() and root.keyring_write() and root.agent_write("n1")
    # the default token answers for requests without one
    with_default = _acls(default="reader")
    assert with_default.resolve(None).event_read("x")
    assert not with_default.resolve(None).event_write("x")
    recovery = _acls(agent_recovery="rescue").resolve("rescue")
    assert recovery.agent_write("n1") and not recovery.agent_read("n2")
    assert recovery.node_read("anyone") and not recovery.event_read("deploy")
    with pytest.raises(ACLNotFound, match="^ACL not found$"):
        deny.resolve("who-is-this")
    assert ACLs(enabled=False).resolve("who-is-this").operator_write()  # ACLs off


def test_tokens_must_refer_to_known_secrets() -> None:
    with pytest.raises(ACLError, match="^acl.tokens.default: no token"):
        _acls(default="nobody")
    with pytest.raises(ACLError, match="^acl.tokens.agent: no token"):
        _acls(agent="nobody")
    with pytest.raises(ACLError, match="^acl.default_policy"):
        ACLs(default_policy="maybe")


@pytest.mark.parametrize(("target", "headers", "token"), [
    ("/v1/event/list?token=q", [("x-consul-token", "h")], "q"),
    ("/v1/event/list", [("x-consul-token", "h"), ("authorization", "Bearer b")], "h"),
    ("/v1/event/list", [("authorization", "Bearer  b ")], "b"),
    ("/v1/event/list", [("authorization", "Basic b")], None),
    ("/v1/event/list", [("x-nomad-token", "n")], "n"),
    ("/v1/event/list", [("x-vault-token", "v")], "v"),
    ("/v1/event/list?token=", [], None),
    ("/v1/event/list", [], None),
])
def test_request_token_sources(target: str, headers: list[tuple[str, str]],
                               token: str | None) -> None:
    assert request_token(make_request("GET", target, headers)) == token


def test_non_ascii_tokens_are_just_unknown() -> None:
    with pytest.raises(ACLNotFound):
        _acls().resolve("é-token")
    assert _acls("allow", agent_recovery="récup").resolve("récup").agent_write("n1")


def test_consuls_older_token_names_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"acl": {"enabled": True, "tokens": {
        "master": "root", "agent_master": "rescue"}}}))
    config = load_config(["-node=n1", f"-config-file={path}"], {})
    assert config.acl_initial_management_token == "root"
    assert config.acls().resolve("rescue").agent_write("n1")
    assert config.acls().resolve("root").operator_write()
