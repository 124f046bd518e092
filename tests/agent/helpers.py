"""Harness for the agent tests: in-process agents on real sockets and real `rumor agent` processes.

* ``in_process_agent``: an ``Agent`` started in the caller's trio run, its API served by
  ``serve_http`` on a loopback address, plus an ``httpx.AsyncClient`` pointed at it.
* ``AgentProcess``: one ``rumor agent`` child process on its own loopback address (so every
  agent can use Consul's default ports 8301/8500), with a tiny ``http.client`` API.
* ``wait_for``: the one bounded poll every process test uses (wall time bounds a wait, it is
  never asserted on).

Each test run picks a random ``127.X.Y.0/24`` so concurrent runs do not collide.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import h11
import httpx
import trio

from agent.agent import Agent
from agent.api import build_router
from agent.config import AgentConfig
from agent.http.routing import Router
from agent.http.server import Limits, serve_http
from agent.logs import MonitorHub

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "rumor"
RUMOR: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agent.cli"]
SERF_PORT, HTTP_PORT = 8301, 8500


def random_subnet() -> str:
    """``127.X.Y``: a /24 of loopback addresses for one test module."""
    return f"127.{random.randint(2, 254)}.{random.randint(1, 254)}"


def ports_free(host: str, *ports: int) -> bool:
    """True if every port can be bound on ``host`` for both TCP and UDP right now."""
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    return False
    return True


def free_host(subnet: str | None = None, ports: Sequence[int] = (SERF_PORT, HTTP_PORT)) -> str:
    """A loopback address where ``ports`` are free (a few random tries, then fail)."""
    for _ in range(20):
        host = f"{subnet or random_subnet()}.{random.randint(1, 254)}"
        if ports_free(host, *ports):
            return host
    raise RuntimeError(f"no loopback address with ports {ports} free")


def free_subnet(n: int, ports: Sequence[int] = (SERF_PORT, HTTP_PORT)) -> str:
    """``127.X.Y`` where hosts ``.1`` to ``.n`` all have ``ports`` free."""
    for _ in range(20):
        net = random_subnet()
        if all(ports_free(f"{net}.{i}", *ports) for i in range(1, n + 1)):
            return net
    raise RuntimeError(f"no loopback /24 with {n} hosts free")


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last={last!r}")
        time.sleep(interval)


# ---- in-process agents ---------------------------------------------------------------------


@dataclass
class InProc:
    agent: Agent
    router: Router
    host: str
    http_port: int
    client: httpx.AsyncClient

    @property
    def serf_addr(self) -> str:
        return f"{self.host}:{self.agent.node.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


@asynccontextmanager
async def in_process_agent(host: str, name: str, *, http_port: int = 0,
                           hub: MonitorHub | None = None, limits: Limits | None = None,
                           **overrides: Any) -> AsyncIterator[InProc]:
    """An agent on ``host`` (gossip port 0 unless given) serving its API like ``run_agent``."""
    settings: dict[str, Any] = {"node_name": name, "bind_addr": host, "serf_lan_port": 0,
                                "client_addr": host, "http_port": http_port}
    settings.update(overrides)
    config = AgentConfig(**settings)
    agent = Agent(config)
    router = build_router(agent, hub)
    if limits is None:
        limits = Limits(max_body_bytes=max(config.event_size_limit, 64 * 1024),
                        max_conns_per_client=config.http_max_conns_per_client)
    async with trio.open_nursery() as nursery:
        await agent.start(nursery)
        port = await nursery.start(partial(serve_http, router, host, http_port, limits=limits))
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
            try:
                yield InProc(agent, router, host, port, client)
            finally:
                agent.close()
                nursery.cancel_scope.cancel()


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """In-process bounded poll (trio time; under autojump_clock this is virtual time)."""
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@asynccontextmanager
async def finished(response: httpx.Response,
                   items: AsyncGenerator[T, None]) -> AsyncIterator[AsyncGenerator[T, None]]:
    """Iterate a streamed httpx body (`response.aiter_lines()`, httpx-sse's `aiter_sse()`) and
    leave no async generator for the garbage collector when the loop breaks early.

    httpx and httpcore hand a streamed body up through a chain of async generators that a
    `break` leaves suspended; `aclosing()` would close only the outermost.  On exit this closes
    the response (and so its connection), then runs the chain on: the next read fails inside
    the innermost generator and the error unwinds every one of them to its end."""
    try:
        yield items
    finally:
        await response.aclose()
        try:
            async for _ in items:
                pass
        except (httpx.StreamError, httpx.TransportError):
            pass


async def raw_http(host: str, port: int, data: bytes, timeout: float = 10.0) -> Reply:
    """Send ``data`` (one complete request, byte for byte) and parse the response with h11."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", host)]))  # state only
    status, headers, body = 0, {}, bytearray()
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(data)
            conn.send(h11.EndOfMessage())
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
    return Reply(status, headers, bytes(body))


# ---- agent processes -----------------------------------------------------------------------


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_request(host: str, port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def prometheus(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


@dataclass
class AgentProcess:
    """``rumor agent`` on ``host`` (gossip 8301, HTTP 8500), logs in ``<data_dir>.log``."""

    name: str
    host: str
    data_dir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    preexec: Callable[[], None] | None = None  # run in the child before exec (e.g. rlimits)

    @property
    def serf_addr(self) -> str:
        return f"{self.host}:{SERF_PORT}"

    @property
    def http_addr(self) -> str:
        return f"{self.host}:{HTTP_PORT}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    def start(self, *extra: str) -> AgentProcess:
        argv = [*RUMOR, "agent", f"-node={self.name}", f"-bind={self.host}",
                f"-serf-lan-port={SERF_PORT}", f"-client={self.host}",
                f"-http-port={HTTP_PORT}", f"-data-dir={self.data_dir}", "-log-level=DEBUG",
                *self.args, *extra]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT,
                                         preexec_fn=self.preexec)
        finally:
            log.close()
        return self

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent {self.name} exited with {self.proc.returncode}:\n"
                                 f"{self.log_tail()}")
        try:
            return self.request("GET", "/v1/agent/self", timeout=1).status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 15.0) -> AgentProcess:
        wait_for(self._ready, timeout, f"agent {self.name} to serve HTTP")
        return self

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
        return http_request(self.host, HTTP_PORT, method, path, body, headers, timeout)

    def get_json(self, path: str) -> Any:
        r = self.request("GET", path)
        assert r.status == 200, (path, r)
        return r.json()

    def fire(self, name: str, payload: bytes = b"", query: str = "") -> Reply:
        return self.request("PUT", f"/v1/event/fire/{name}{query}", payload)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        evs: list[dict[str, Any]] = self.get_json(
            "/v1/event/list" + (f"?name={name}" if name else ""))
        return evs

    def metrics(self) -> dict[str, float]:
        r = self.request("GET", "/v1/agent/metrics?format=prometheus")
        assert r.status == 200, r
        return prometheus(r.text)

    def alive_members(self) -> set[str]:
        return {m["Name"] for m in self.get_json("/v1/agent/members") if m["Status"] == 1}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0, send: bool = True) -> int:
        """Signal the process and wait for it; SIGKILL if it does not exit in ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            if send:
                proc.send_signal(sig)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise AssertionError(f"agent {self.name} ignored signal {sig}:\n"
                                     f"{self.log_tail()}") from None
        return proc.returncode


def stop_all(agents: Sequence[AgentProcess], sig: int = signal.SIGTERM) -> None:
    """Signal every agent first, then wait for each (they leave in parallel)."""
    for a in agents:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.send_signal(sig)
    for a in agents:
        a.stop(sig, send=False)


def run_cli(*args: str, timeout: float = 30.0, stdin: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``rumor`` console script as a user would."""
    return subprocess.run([*RUMOR, *args], input=None if stdin is None else stdin.decode(),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})
