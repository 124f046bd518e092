"""Start-up safeguards (agent/hardening.py): the open-file limit and the plaintext-gossip
warning, checked on real ``rumor agent`` processes (issue 13 #8 and the encryption warning)."""

from __future__ import annotations

import base64
import resource
import socket
from pathlib import Path

import pytest

from agent.hardening import plaintext_gossip_warning
from tests.agent.helpers import HTTP_PORT, AgentProcess, free_host, wait_for

IDLE = 2000


def soft_1024() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def test_agent_raises_its_open_file_limit_and_serves_past_1024_connections(
        tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= IDLE + 200, f"this test needs a hard open-file limit above {IDLE + 200}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for our own client sockets
    a = AgentProcess("fd", free_host(), tmp_path / "fd", preexec=soft_1024)
    idle: list[socket.socket] = []
    try:
        a.start().wait_ready()
        # from 20 loopback source addresses, 100 each: under the per-client cap (200)
        for i in range(IDLE):
            s = socket.create_connection((a.host, HTTP_PORT), timeout=5,
                                         source_address=(f"127.250.{i % 20 + 1}.1", 0))
            idle.append(s)
        # the agent has accepted every idle connection and still answers a normal request
        assert a.request("GET", "/v1/agent/self", timeout=10).status == 200
        assert a.fire("after-idle").status == 200
        log = a.log_path.read_text()
        assert "accept failed" not in log
        assert "open-file limit raised from 1024 to" in log, log
    finally:
        for s in idle:
            s.close()
        a.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    ("bind", "advertise", "encrypted", "warns"),
    [
        ("0.0.0.0", "10.0.0.5", False, True),
        ("127.0.0.1", "10.0.0.5", False, True),  # peers reach it through the advertised address
        ("10.0.0.5", "10.0.0.5", False, True),
        ("127.0.0.1", "127.0.0.1", False, False),
        ("::1", "127.0.0.2", False, False),
        ("0.0.0.0", "10.0.0.5", True, False),
    ],
)
def test_plaintext_gossip_warning_rule(bind: str, advertise: str, encrypted: bool,
                                       warns: bool) -> None:
    text = plaintext_gossip_warning(bind, advertise, encrypted)
    assert (text is not None) == warns
    if text:
        assert "anyone who can reach the gossip port can inject members and events" in text


def gossip_warning(a: AgentProcess) -> bool:
    return "gossip is NOT encrypted" in a.log_path.read_text()


def test_unencrypted_gossip_on_a_reachable_address_is_warned_about(tmp_path: Path) -> None:
    host = free_host()
    plain = AgentProcess("p", host, tmp_path / "p", ["-advertise=10.20.30.40"])
    try:
        plain.start().wait_ready()
        wait_for(lambda: gossip_warning(plain), 5, "the plaintext warning")
    finally:
        plain.stop()
    keyed = AgentProcess("k", host, tmp_path / "k", ["-advertise=10.20.30.40", f"-encrypt={KEY}"])
    local = AgentProcess("l", host, tmp_path / "l")
    for a in (keyed, local):
        try:
            a.start().wait_ready()
            assert not gossip_warning(a)
        finally:
            a.stop()
