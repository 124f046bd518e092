"""Bad start-up input stops ``rumor agent`` at once with a message naming the culprit."""

from __future__ import annotations

import random
import socket
import subprocess
import sys

AGENT = [sys.executable, "-m", "agent.cli", "agent", "-log-level=ERR"]


def ip() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=30)


def test_gossip_port_in_use_names_the_address() -> None:
    host = ip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((host, 0))
        port = busy.getsockname()[1]
        r = run(f"-bind={host}", f"-serf-lan-port={port}", f"-client={host}",
                f"-http-port={free_port(host)}")
    assert r.returncode == 1
    assert f"{host}:{port}" in r.stderr, r.stderr


def test_http_port_in_use_names_the_address() -> None:
    host = ip()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((host, 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run(f"-bind={host}", f"-serf-lan-port={free_port(host)}", f"-client={host}",
                f"-http-port={port}")
    assert r.returncode == 1
    assert f"{host}:{port}" in r.stderr, r.stderr


def test_bad_join_address_names_it() -> None:
    host = ip()
    r = run(f"-bind={host}", f"-serf-lan-port={free_port(host)}", f"-client={host}",
            f"-http-port={free_port(host)}",
            "-join=no-such-host.invalid:8301")
    assert r.returncode == 1
    assert "no-such-host.invalid" in r.stderr, r.stderr


def test_unreachable_join_address_names_it() -> None:
    host, peer = ip(), ip()
    r = run(f"-bind={host}", f"-serf-lan-port={free_port(host)}", f"-client={host}",
            f"-http-port={free_port(host)}",
            f"-join={peer}:9")
    assert r.returncode == 1
    assert f"{peer}:9" in r.stderr, r.stderr


def test_bad_config_names_the_field() -> None:
    r = run("-http-port=70000")
    assert r.returncode == 1
    assert "http_port" in r.stderr, r.stderr


def test_node_meta_that_fits_alone_but_not_with_the_agents_own_tags() -> None:
    # 490 bytes of node_meta fit memberlist's 512-byte node Meta on their own; with the
    # agent's role/dc/build tags they do not: refused at config time, naming the field
    host = ip()
    r = run(f"-bind={host}", f"-serf-lan-port={free_port(host)}", f"-client={host}",
            f"-http-port={free_port(host)}", "-node-meta", "k:" + "v" * 490)
    assert r.returncode == 1
    assert "node_meta: tags encode to 526 bytes" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
