"""agent.cli + agent.client against a tiny recording HTTP server on 127.0.0.1.

Checks the exact requests each client command sends and what it prints, `validate` and
`agent` exit codes, and that client commands never import trio or httpx."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.cli import COMMANDS, main
from agent.client import Client, ClientError, parse_addr

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeAgent:
    """Routes (method, path) to a queue of replies (the last one repeats); records requests."""

    addr: str = ""
    routes: dict[tuple[str, str], list[Reply | list[bytes]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def on(self, method: str, path: str, *replies: Reply | list[bytes]) -> None:
        self.routes[(method, path)] = list(replies)

    def next_reply(self, method: str, path: str) -> Reply | list[bytes]:
        queue = self.routes.get((method, path))
        if not queue:
            return (404, {}, b"no route")
        return queue.pop(0) if len(queue) > 1 else queue[0]


def ok(obj: Any, **headers: str) -> Reply:
    return (200, headers, json.dumps(obj).encode())


@pytest.fixture
def agent_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAgent]:
    for var in ("RUMOR_HTTP_ADDR", "CONSUL_HTTP_ADDR", "RUMOR_HTTP_TOKEN", "CONSUL_HTTP_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeAgent()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle_one(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake.requests.append(Recorded(self.command, parts.path,
                                          urllib.parse.parse_qs(parts.query),
                                          dict(self.headers.items()), body))
            reply = fake.next_reply(self.command, parts.path)
            if isinstance(reply, list):  # a chunked stream of lines, then the end
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in reply:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            else:
                status, headers, data = reply
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            self.close_connection = True

        do_GET = do_PUT = handle_one

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.addr = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


EVENT_ID = "b54fe110-7af5-cafc-d1fb-afc8ba432b1c"


def test_event_sends_consul_request(agent_server: FakeAgent,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    agent_server.on("PUT", "/v1/event/fire/deploy", ok({"ID": EVENT_ID, "Name": "deploy"}))
    code, out, err = run(capsys, "event", "-http-addr", agent_server.addr, "-name=deploy",
                         "-node", "web.*", "--service", "api", "--tag=v1", "hello world")
    assert (code, out, err) == (0, f"Event ID: {EVENT_ID}\n", "")
    [req] = agent_server.requests
    assert (req.method, req.path, req.body) == ("PUT", "/v1/event/fire/deploy", b"hello world")
    assert req.query == {"node": ["web.*"], "service": ["api"], "tag": ["v1"]}
    assert req.headers["Content-Type"] == "application/octet-stream"
    assert "X-Consul-Token" not in req.headers


def test_event_name_quoting_env_addr_token_and_stdin(
        agent_server: FakeAgent, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    agent_server.on("PUT", "/v1/event/fire/my%20event%2Fx", ok({"ID": EVENT_ID}))
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")  # RUMOR_ wins over CONSUL_
    monkeypatch.setenv("RUMOR_HTTP_ADDR", "http://" + agent_server.addr)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "secret")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\x00\xffbin")))
    code, out, _ = run(capsys, "event", "-name", "my event/x", "-datacenter=dc2", "-")
    assert (code, out) == (0, f"Event ID: {EVENT_ID}\n")
    [req] = agent_server.requests
    assert req.body == b"\x00\xffbin" and req.query == {"dc": ["dc2"]}
    assert req.headers["X-Consul-Token"] == "secret"
    # the raw request target percent-encodes space and slash
    assert urllib.parse.unquote(req.path.removeprefix("/v1/event/fire/")) == "my event/x"


@pytest.mark.parametrize(("argv", "message"), [
    ([], "Event name must be specified"),
    (["-name=x", "-node=("], "Failed to compile node filter regexp"),
    (["-name=x", "-service=[a"], "Failed to compile service filter regexp"),
    (["-name=x", "-tag=v1"], "Cannot provide tag filter without service filter."),
    (["-name=x", "a", "b"], "Too many command line arguments."),
    (["-name=x", "-bogus"], "flag provided but not defined: -bogus"),
])
def test_event_validation_sends_nothing(agent_server: FakeAgent,
                                        capsys: pytest.CaptureFixture[str],
                                        argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "event", "-http-addr", agent_server.addr, *argv)
    assert code == 1 and out == "" and err.startswith(message)
    assert agent_server.requests == []


def test_event_error_from_agent(agent_server: FakeAgent,
                                capsys: pytest.CaptureFixture[str]) -> None:
    agent_server.on("PUT", "/v1/event/fire/big",
                    (500, {}, b"user event exceeds limit of 512 bytes\n"))
    code, out, err = run(capsys, "event", "-http-addr", agent_server.addr, "-name=big", "x")
    assert (code, out) == (1, "")
    assert err == "Error firing event: 500 (user event exceeds limit of 512 bytes)\n"


MEMBERS = [
    {"Name": "web-2", "Addr": "10.0.0.12", "Port": 8301, "Status": 4,
     "Tags": {"role": "node", "dc": "dc1", "build": "0.1.0:abc", "vsn": "2"}},
    {"Name": "srv-1", "Addr": "10.0.0.2", "Port": 8301, "Status": 1,
     "Tags": {"role": "consul", "dc": "dc1", "build": "1.17.0", "vsn": "2"}},
    {"Name": "web-1", "Addr": "::1", "Port": 7946, "Status": 1,
     "Tags": {"role": "node", "dc": "dc1", "build": "0.1.0", "vsn": "2", "segment": "s1"}},
    {"Name": "serf-x", "Addr": "10.0.0.9", "Port": 7946, "Status": 3, "Tags": {}},
]


def test_members_table(agent_server: FakeAgent, capsys: pytest.CaptureFixture[str]) -> None:
    agent_server.on("GET", "/v1/agent/members", ok(MEMBERS))
    code, out, _ = run(capsys, "members", "-http-addr", agent_server.addr)
    assert code == 0
    assert out.splitlines() == [
        "Node    Address         Status  Type     Build   Protocol  DC   Partition  Segment",
        "srv-1   10.0.0.2:8301   alive   server   1.17.0  2         dc1  default    <all>",
        "serf-x  10.0.0.9:7946   left    unknown                         default    <default>",
        "web-2   10.0.0.12:8301  failed  client   0.1.0   2         dc1  default    <default>",
        "web-1   [::1]:7946      alive   client   0.1.0   2         dc1  default    s1",
    ]
    [req] = agent_server.requests
    assert (req.method, req.path) == ("GET", "/v1/agent/members")


def test_members_status_filter_and_detailed(agent_server: FakeAgent,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    agent_server.on("GET", "/v1/agent/members", ok(MEMBERS))
    code, out, _ = run(capsys, "members", "-http-addr", agent_server.addr, "-status=alive",
                       "-detailed")
    assert code == 0
    assert out.splitlines() == [
        "Node   Address        Status  Tags",
        "srv-1  10.0.0.2:8301  alive   build=1.17.0,dc=dc1,role=consul,vsn=2",
        "web-1  [::1]:7946     alive   build=0.1.0,dc=dc1,role=node,segment=s1,vsn=2",
    ]
    code, out, _ = run(capsys, "members", "-http-addr", agent_server.addr, "-status=leaving")
    assert (code, out) == (2, "")  # like consul: no member matched
    code, _, err = run(capsys, "members", "-http-addr", agent_server.addr, "-status=(")
    assert code == 1 and err.startswith("Failed to compile status regexp")


def test_join_counts_successes(agent_server: FakeAgent,
                               capsys: pytest.CaptureFixture[str]) -> None:
    agent_server.on("PUT", "/v1/agent/join/10.0.0.1:8301", ok(None))
    agent_server.on("PUT", "/v1/agent/join/10.0.0.2", (500, {}, b"dial tcp: refused"))
    agent_server.on("PUT", "/v1/agent/join/[::1]:8301", ok(None))
    code, out, err = run(capsys, "join", "-http-addr", agent_server.addr, "10.0.0.1:8301",
                         "10.0.0.2", "[::1]:8301")
    assert (code, out) == (0, "Successfully joined cluster by contacting 2 nodes.\n")
    assert err == "Error joining address '10.0.0.2': 500 (dial tcp: refused)\n"
    assert [(r.method, r.path) for r in agent_server.requests] == [
        ("PUT", "/v1/agent/join/10.0.0.1:8301"), ("PUT", "/v1/agent/join/10.0.0.2"),
        ("PUT", "/v1/agent/join/[::1]:8301")]
    code, out, err = run(capsys, "join", "-http-addr", agent_server.addr, "10.0.0.2")
    assert (code, out) == (1, "") and err.endswith("Failed to join any nodes.\n")
    code, _, err = run(capsys, "join", "-http-addr", agent_server.addr)
    assert code == 1 and err.startswith("At least one address to join must be specified.")


def test_leave_and_force_leave(agent_server: FakeAgent,
                               capsys: pytest.CaptureFixture[str]) -> None:
    agent_server.on("PUT", "/v1/agent/leave", ok(None))
    agent_server.on("PUT", "/v1/agent/force-leave/web-2", ok(None))
    assert run(capsys, "leave", "-http-addr", agent_server.addr) == (
        0, "Graceful leave complete\n", "")
    assert run(capsys, "force-leave", "-http-addr", agent_server.addr, "web-2") == (0, "", "")
    assert run(capsys, "force-leave", "-http-addr", agent_server.addr, "-prune", "web-2")[0] == 0
    reqs = [(r.method, r.path, r.query) for r in agent_server.requests]
    assert reqs == [("PUT", "/v1/agent/leave", {}), ("PUT", "/v1/agent/force-leave/web-2", {}),
                    ("PUT", "/v1/agent/force-leave/web-2", {"prune": ["1"]})]
    code, _, err = run(capsys, "force-leave", "-http-addr", agent_server.addr)
    assert code == 1 and "node name" in err
    agent_server.on("PUT", "/v1/agent/leave", (403, {}, b"Permission denied"))
    assert run(capsys, "leave", "-http-addr", agent_server.addr, "-token=t") == (
        1, "", "Error leaving: 403 (Permission denied)\n")
    assert agent_server.requests[-1].headers["X-Consul-Token"] == "t"


def test_monitor_prints_stream_lines(agent_server: FakeAgent,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    agent_server.on("GET", "/v1/agent/monitor",
                    [b"2026-01-01 [INFO] agent: started\n", b"part one ", b"and two\n",
                     b"[DEBUG] last\n"])
    code, out, err = run(capsys, "monitor", "-http-addr", agent_server.addr, "-log-level=debug")
    assert out.splitlines() == ["2026-01-01 [INFO] agent: started", "part one and two",
                                "[DEBUG] last"]
    assert code == 1 and err.startswith("Remote side ended the monitor!")
    assert agent_server.requests[0].query == {"loglevel": ["debug"]}


def test_watch_command_end_to_end(agent_server: FakeAgent, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
    a = {"ID": "00000001-0000-0000-0000-000000000000", "Name": "deploy", "Payload": "aGk="}
    b = {"ID": "00000002-0000-0000-0000-000000000000", "Name": "deploy", "Payload": None}
    agent_server.on("GET", "/v1/agent/self", ok({"Config": {"NodeName": "n1"}}))
    agent_server.on("GET", "/v1/event/list", ok([a], **{"X-Consul-Index": "900"}),
                    ok([a, b], **{"X-Consul-Index": "30"}))
    code, out, _ = run(capsys, "watch", "-http-addr", agent_server.addr, "-type=event",
                       "-name=deploy")
    assert code == 0 and out == json.dumps([a], indent=4) + "\n"
    agent_server.on("GET", "/v1/event/list", ok([a], **{"X-Consul-Index": "900"}),
                    ok([a, b], **{"X-Consul-Index": "30"}))
    agent_server.requests.clear()
    log = tmp_path / "log"
    code, _, err = run(capsys, "watch", "-http-addr", agent_server.addr, "-type", "event",
                       "-max-events=2", "-wait=2s", f"cat >> {log}; echo $CONSUL_INDEX >> {log}")
    assert code == 0, err
    assert log.read_text().splitlines() == [json.dumps([a], separators=(",", ":")), "900",
                                            json.dumps([b], separators=(",", ":")), "30"]
    lists = [r.query for r in agent_server.requests if r.path == "/v1/event/list"]
    assert lists == [{}, {"index": ["900"], "wait": ["2s"]}]
    assert agent_server.requests[0].path == "/v1/agent/self"


@pytest.mark.parametrize(("argv", "message"), [
    ([], "Watch type must be specified"),
    (["-type=key"], "Unsupported watch type: key"),
    (["-type=event", "-max-events=0"], "-max-events: must be a positive integer"),
    (["-type=event", "-timeout=soon"], "-timeout: time: invalid duration"),
    (["-type=event", "-wait=11m"], "-wait: must be at most 10m"),
])
def test_watch_flag_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                           message: str) -> None:
    code, _, err = run(capsys, "watch", "-http-addr", "127.0.0.1:1", *argv)
    assert code == 1 and err.startswith(message)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_agent(capsys: pytest.CaptureFixture[str]) -> None:
    port = unused_port()
    for argv in (["members"], ["leave"], ["event", "-name=x"], ["watch", "-type=event"],
                 ["monitor"], ["join", "1.2.3.4"]):
        code, out, err = run(capsys, argv[0], f"-http-addr=127.0.0.1:{port}", *argv[1:])
        assert code == 1 and out == "", argv
        assert f"Error connecting to rumor agent at 127.0.0.1:{port}: Connection refused" in err


def test_client_addr_parsing_and_errors() -> None:
    assert parse_addr("127.0.0.1:8500") == ("http", "127.0.0.1", 8500)
    assert parse_addr("http://example.com:81/") == ("http", "example.com", 81)
    assert parse_addr("https://example.com") == ("https", "example.com", 443)
    assert parse_addr("[::1]:9") == ("http", "::1", 9)
    assert parse_addr("localhost") == ("http", "localhost", 8500)
    assert Client("[::1]:9").display == "[::1]:9"
    for bad in ("unix:///tmp/sock", "host:99999", "host:8500/path", ""):
        with pytest.raises(ClientError):
            parse_addr(bad)


def test_validate_and_agent_config_errors(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    assert run(capsys, "validate", "-dev") == (0, "Configuration is valid!\n", "")
    code, out, err = run(capsys, "validate", "-http-port=0")
    assert (code, out) == (1, "")
    assert err.startswith("Config validation failed: http_port: must be 1-65535, got 0")
    good = tmp_path / "good.json"
    good.write_text('{"node_name": "n1", "ports": {"http": 8600}}')
    bad = tmp_path / "bad.json"
    bad.write_text('{"node_name": "n1",\n "bogus": 1}')
    assert run(capsys, "validate", str(good))[0] == 0
    assert run(capsys, "validate", str(tmp_path))[0] == 1  # the dir includes bad.json
    code, _, err = run(capsys, "validate", "-config-file", str(bad))
    assert code == 1 and f"config file {bad}: unknown key 'bogus'" in err
    code, out, err = run(capsys, "agent", "-encrypt=" + base64.b64encode(b"short").decode())
    assert (code, out) == (1, "")
    assert err.startswith("==> Error: encrypt: key must be 16, 24 or 32 bytes")
    code, _, err = run(capsys, "agent", "-nope")
    assert code == 1 and err.startswith("==> Error: flag provided but not defined: -nope")


def test_help_version_keygen_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "agent", "-help")
    assert code == 0 and out.startswith("Usage: rumor agent")
    for flag in ("-retry-join=", "-serf-lan-port=", "-node-meta=", "-dev\n", "-config-file="):
        assert flag in out
    for name in COMMANDS:
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and out.startswith(f"Usage: rumor {name}"), name
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "watch" in out and "keygen" in out
    code, out, err = run(capsys, "frobnicate")
    assert code == 1 and err.startswith("Unknown command: 'frobnicate'") and "Usage:" in err
    assert run(capsys)[0] == 1
    code, out, _ = run(capsys, "version")
    assert code == 0 and out.startswith("rumor v")
    assert run(capsys, "--version")[1] == out
    code, out, _ = run(capsys, "keygen")
    assert code == 0 and len(base64.b64decode(out.strip(), validate=True)) == 32
    assert run(capsys, "keygen")[1] != out


def test_client_commands_do_not_import_trio() -> None:
    code = ("import sys, agent.cli, agent.watch, agent.client; "
            "print(sorted(m for m in ('trio', 'httpx', 'h11', 'msgpack') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert (proc.returncode, proc.stdout) == (0, "[]\n"), proc.stderr
