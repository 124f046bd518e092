"""ACLs in real `rumor agent` processes: a denied fire broadcasts nothing (the other agent's
list stays empty), SIGHUP and `rumor reload` change the effective tokens without a restart, a
bad reload changes nothing, and bad ACL configuration stops the agent at start."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.agent.helpers import (
    RUMOR,
    AgentProcess,
    free_host,
    free_subnet,
    http_request,
    run_cli,
    stop_all,
    wait_for,
)

ROOT = "root-secret"
OBSERVER = ('event_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
            'agent_prefix "" { policy = "read" }')


def write_config(path: Path, reader_rules: str) -> None:
    path.write_text(json.dumps({"acl": {
        "enabled": True, "default_policy": "deny",
        "tokens": {"initial_management": ROOT, "default": "observer"},
        "token_list": [{"SecretID": "observer", "Rules": OBSERVER},
                       {"SecretID": "reader", "AccessorID": "acc-reader",
                        "Rules": reader_rules}]}}))


def fire(agent: AgentProcess, name: str, token: str | None) -> int:
    headers = {"X-Consul-Token": token} if token else {}
    return agent.request("PUT", f"/v1/event/fire/{name}", b"x", headers).status


def names(agent: AgentProcess) -> list[str]:
    events: list[dict[str, Any]] = agent.events()  # as the default (observer) token
    return [e["Name"] for e in events]


def test_denied_fire_broadcasts_nothing_and_reload_changes_tokens(tmp_path: Path) -> None:
    net = free_subnet(2)
    cfg = tmp_path / "acl.json"
    write_config(cfg, 'event_prefix "" { policy = "read" }')
    a = AgentProcess("a", f"{net}.1", tmp_path / "a", [f"-config-file={cfg}"])
    b = AgentProcess("b", f"{net}.2", tmp_path / "b", [f"-config-file={cfg}"])
    try:
        a.start().wait_ready()
        b.start(f"-join={a.serf_addr}").wait_ready()
        wait_for(lambda: a.alive_members() == b.alive_members() == {"a", "b"}, 15,
                 "both agents to see each other")

        assert fire(a, "deploy", "reader") == 403
        assert fire(a, "deploy", None) == 403  # the default token may only read
        r = a.request("PUT", "/v1/event/fire/deploy?token=reader", b"x")
        assert r.text == ("Permission denied: token with AccessorID 'acc-reader' lacks "
                          "permission 'event:write' on \"deploy\"")
        assert fire(a, "canary", ROOT) == 200
        wait_for(lambda: "canary" in names(b), 10, "the allowed event to reach b")
        assert names(b) == ["canary"] and names(a) == ["canary"]  # nothing of the denied ones
        assert a.metrics()["rumor_events_fired_total"] == 1
        assert a.metrics()["rumor_acl_denied_total"] == 3

        # SIGHUP: a re-reads the file; b keeps its tokens until it is told to reload
        write_config(cfg, 'event "deploy" { policy = "write" }')
        assert a.proc is not None
        a.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: fire(a, "deploy", "reader") == 200, 10, "SIGHUP to grant the right")
        wait_for(lambda: "deploy" in names(b), 10, "the now-allowed event to reach b")
        assert fire(b, "deploy", "reader") == 403

        # `rumor reload` needs agent:write: the default (observer) token is refused
        out = run_cli("reload", f"-http-addr={b.http_addr}")
        assert out.returncode == 1
        assert "Error reloading: 403 (Permission denied" in out.stderr
        out = run_cli("reload", f"-http-addr={b.http_addr}", env={"CONSUL_HTTP_TOKEN": ROOT})
        assert out.returncode == 0 and "Configuration reload triggered" in out.stdout
        assert fire(b, "deploy", "reader") == 200

        # a bad file changes nothing, through either door
        cfg.write_text(json.dumps({"acl": {"enabled": True, "token_list": [
            {"SecretID": "reader", "Rules": 'key_prefix "" { policy = "write" }'}]}}))
        token_file = tmp_path / "token"
        token_file.write_text(ROOT + "\n")
        out = run_cli("reload", f"-http-addr={b.http_addr}", f"-token-file={token_file}",
                      env={"CONSUL_HTTP_TOKEN": "reader"})  # the flag beats the environment
        assert out.returncode == 1
        assert ("Failed to reload configs: acl.token_list[0].Rules: unknown rule kind "
                "'key_prefix'") in out.stderr
        a.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed, nothing changed" in a.log_path.read_text(), 10,
                 "a to log the failed reload")
        out = run_cli("event", f"-http-addr={a.http_addr}", "-name=from-file",
                      env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)})
        assert out.returncode == 0 and out.stdout.startswith("Event ID:"), out.stderr
        for agent in (a, b):
            assert fire(agent, "deploy", "reader") == 200
            assert fire(agent, "deploy", None) == 403
            assert agent.proc is not None and agent.proc.poll() is None
    finally:
        stop_all([a, b])


def test_bad_acl_configuration_stops_the_agent_naming_the_field(tmp_path: Path) -> None:
    cases = [
        ({"acl": {"enabled": True, "token_list": [{"SecretID": "t", "Rules": "evnt {"}]}},
         "acl.token_list[0].Rules: invalid HCL rules"),
        ({"acl": {"token_list": [{"SecretID": "t", "Rules": 'query "" { policy = "read" }'}]}},
         "acl.token_list[0].Rules: unknown rule kind 'query'"),
        ({"acl": {"default_policy": "sometimes"}}, "acl.default_policy: must be allow or deny"),
        ({"acl": {"tokens": {"default": "ghost"}}}, "acl.tokens.default: no token"),
        ({"acl": {"tokens": {"admin": "x"}}}, "unknown key 'acl.tokens.admin'"),
        ({"acl": {"enabled": "yes"}}, "acl.enabled: must be true or false"),
    ]
    for i, (doc, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.json"
        path.write_text(json.dumps(doc))
        host = free_host()
        out = run_cli("agent", "-node=bad", f"-bind={host}", f"-client={host}",
                      f"-config-file={path}", timeout=20)
        assert out.returncode == 1, (doc, out.stderr)
        assert message in out.stderr, (doc, out.stderr)
        assert "rumor agent running" not in out.stderr


def test_sighup_changes_the_log_level(tmp_path: Path) -> None:
    cfg = tmp_path / "level.json"
    cfg.write_text(json.dumps({"log_level": "WARN"}))
    host = free_host()
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*RUMOR, "agent", "-node=lvl", f"-bind={host}",
                                 f"-client={host}", f"-config-file={cfg}"], stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for(lambda: "rumor agent running" in log.read_text(), 15, "the agent to start")
        wait_for(lambda: http_request(host, 8500, "GET", "/v1/agent/self").status == 200, 15,
                 "the agent to serve HTTP")
        assert "[INFO]" not in log.read_text()  # WARN hides the member-join line
        cfg.write_text(json.dumps({"log_level": "INFO"}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "agent: reloaded configuration (ACLs disabled, log level INFO)"
                 in log.read_text(), 10, "the reload to be logged at the new level")
        cfg.write_text(json.dumps({"log_level": "CHATTY"}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed, nothing changed: log_level: must be one of"
                 in log.read_text(), 10, "the bad level to be refused")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(15)
