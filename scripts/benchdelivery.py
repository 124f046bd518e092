"""Event delivery figures for scripts/bench_events: one receiver per agent timestamps each
event's first arrival (`Receivers` into `Receipts`), and the phases that fire events and read
those receipts -- latency, burst, and the burst again with no receiver attached (quiet).
The phases' figures are described in scripts/bench_events' docstring.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from typing import Any

import benchlib as bl

HANDLER = """#!/bin/sh
read -r p || true
echo "$(date +%s.%N) $p" >> "$BENCH_EVENTS_FILE"
"""


class Receipts:
    """First receipt time per (payload, agent), fed by one receiver thread per agent."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.lock = threading.Lock()
        self.first: dict[str, dict[int, float]] = {}

    def add(self, agent: int, when: float, payload: str) -> None:
        with self.lock:
            self.first.setdefault(payload, {}).setdefault(agent, when)

    def complete(self, payloads: list[str]) -> bool:
        with self.lock:
            return all(len(self.first.get(p, {})) == self.n for p in payloads)

    def get(self, payload: str) -> dict[int, float]:
        with self.lock:
            return dict(self.first.get(payload, {}))


class Receivers:
    """Start/stop the per-agent receivers of one cluster."""

    def __init__(self, c: bl.Cluster, rec: Receipts, mode: str) -> None:
        self.c, self.rec, self.mode = c, rec, mode
        self.stopping = threading.Event()
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.ready = threading.Semaphore(0)
        for i in range(c.n):
            target = {"rumor": self.rumor, "stream": self.serf_stream,
                      "handler": self.serf_files}[mode]
            t = threading.Thread(target=self.guard, args=(target, i), daemon=True)
            self.threads.append(t)
            t.start()
        for _ in range(c.n):
            if not self.ready.acquire(timeout=30):
                raise RuntimeError("receivers did not start in 30 s")

    def guard(self, fn: Any, i: int) -> None:
        try:
            fn(i)
        except (OSError, ValueError, RuntimeError) as e:
            if not self.stopping.is_set():
                bl.note(f"receiver {i}: {e!r}")
                self.ready.release()

    def rumor(self, i: int) -> None:
        cl = bl.RumorClient(self.c.ips[i], self.c.api_port, timeout=60)
        status, hdr, body = cl.request("GET", "/v1/event/list")
        seen = {e["ID"] for e in json.loads(body)}
        index = int(hdr.get("x-consul-index", "0"))
        assert cl.conn.sock is not None
        self.socks.append(cl.conn.sock)
        self.ready.release()
        while not self.stopping.is_set():
            status, hdr, body = cl.request("GET", f"/v1/event/list?index={index}&wait=30s")
            now = time.time()
            if status != 200:
                raise RuntimeError(f"list: HTTP {status}")
            for e in json.loads(body):
                if e["ID"] not in seen:
                    seen.add(e["ID"])
                    self.rec.add(i, now, base64.b64decode(e["Payload"] or "").decode())
            index = int(hdr.get("x-consul-index", "0"))
            if cl.conn.sock is not None and cl.conn.sock not in self.socks:
                self.socks.append(cl.conn.sock)

    def serf_stream(self, i: int) -> None:
        cl = bl.SerfClient(self.c.rpc_addr(i), timeout=30)
        self.socks.append(cl.sock)
        cl.subscribe("user")
        cl.sock.settimeout(None)
        self.ready.release()
        while not self.stopping.is_set():
            now, _name, payload = cl.next_event()
            self.rec.add(i, now, payload.decode())

    def serf_files(self, i: int) -> None:
        path = self.c.handler_file(i)
        self.ready.release()
        pos = 0
        while not self.stopping.is_set():
            if path.exists():
                data = path.read_bytes()
                end = data.rfind(b"\n") + 1
                for line in data[pos:end].decode().splitlines():
                    when, _, payload = line.partition(" ")
                    self.rec.add(i, float(when), payload)
                pos = end
            time.sleep(0.1)

    def stop(self) -> None:
        self.stopping.set()
        for s in list(self.socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)


def wait_for(rec: Receipts, payloads: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not rec.complete(payloads):
        time.sleep(0.05)


def latency_phase(c: bl.Cluster, rec: Receipts, count: int, gap: float, tail: float
                  ) -> dict[str, float | None]:
    clients = [c.client(i) for i in range(c.n)]
    fired: dict[str, tuple[int, float]] = {}
    try:
        for k in range(count):
            payload, origin = f"L{k}", k % c.n
            t = time.time()
            clients[origin].fire("bench", payload.encode())
            fired[payload] = (origin, t)
            time.sleep(gap)
    finally:
        for cl in clients:
            cl.close()
    wait_for(rec, list(fired), tail)
    each: list[float] = []
    alls: list[float] = []
    missing = 0
    for payload, (origin, t) in fired.items():
        got = rec.get(payload)
        missing += c.n - len(got)
        each += [w - t for j, w in got.items() if j != origin]
        if len(got) == c.n:
            alls.append(max(got.values()) - t)
    return {"p50": bl.pct(each, 50) * 1000, "p99": bl.pct(each, 99) * 1000,
            "max": max(each) * 1000 if each else None,
            "all_med": bl.pct(alls, 50) * 1000 if alls else None,
            "all_max": max(alls) * 1000 if alls else None, "lat_missing": float(missing)}


def burst_phase(c: bl.Cluster, rec: Receipts, count: int, wait: float
                ) -> dict[str, float | None]:
    cl = c.client(0)
    payloads = [f"B{k}" for k in range(count)]
    pids = [c.pid(i) for i in range(c.n)]
    cpu0 = sum(bl.cpu_seconds(p) for p in pids)
    t0 = time.time()
    try:
        for p in payloads:
            cl.fire("bench", p.encode())
    finally:
        cl.close()
    fire_s = time.time() - t0
    wait_for(rec, payloads, min(wait, 2.0))
    cpu = sum(bl.cpu_seconds(p) for p in pids) - cpu0  # firing + 2 s (or until all arrived)
    wait_for(rec, payloads, wait)
    everywhere, last = 0, 0.0
    for p in payloads:
        got = rec.get(p)
        everywhere += len(got) == c.n
        if got:
            last = max(last, max(got.values()) - t0)
    return {"burst_cpu": cpu * 1000 / count, "burst_fire": fire_s,
            "burst_all": float(everywhere), "burst_last": last,
            "burst_done": last if everywhere == count else None}


def quiet_burst_phase(c: bl.Cluster, count: int, wait: float) -> dict[str, float | None]:
    """The burst again with no receiver attached: fire time and the agents' own CPU cost.

    rumor's delivery is checked afterwards by polling a plain /v1/event/list per agent every
    0.5 s until all arrived or `wait` (serf keeps no event list, so there it is not checked).
    """
    cl = c.client(0)
    pids = [c.pid(i) for i in range(c.n)]
    cpu0 = sum(bl.cpu_seconds(p) for p in pids)
    t0 = time.time()
    try:
        for k in range(count):
            cl.fire("quiet", f"Q{k}".encode())
    finally:
        cl.close()
    fire_s = time.time() - t0
    time.sleep(2.0)
    res: dict[str, float | None] = {
        "quiet_fire": fire_s,
        "quiet_cpu": (sum(bl.cpu_seconds(p) for p in pids) - cpu0) * 1000 / count}
    if c.kind == "rumor":  # then poll the lists until all arrived (bounded like the burst)
        deadline = t0 + wait
        while True:
            complete = quiet_on_every_node(c)
            if complete == count or time.time() > deadline:
                break
            time.sleep(0.5)
        res["quiet_all"] = float(complete)
        res["quiet_done"] = time.time() - t0 if complete == count else None
    return res


def quiet_on_every_node(c: bl.Cluster) -> int:
    """How many "quiet" events every rumor agent lists."""
    seen: dict[str, int] = {}
    for i in range(c.n):
        rc = bl.RumorClient(c.ips[i], c.api_port)
        try:
            _, _, body = rc.request("GET", "/v1/event/list?name=quiet")
        finally:
            rc.close()
        for e in json.loads(body):
            seen[e["ID"]] = seen.get(e["ID"], 0) + 1
    return sum(1 for v in seen.values() if v == c.n)
