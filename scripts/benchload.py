"""Load on agent 0 for scripts/bench_events: request rates (wrk if installed, else Python
keep-alive loops; serf: RPC `event` calls) and the fan-out of one fire to many parked
long-polls (rumor only).  The figures are described in scripts/bench_events' docstring.
"""

from __future__ import annotations

import re
import resource
import selectors
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import benchlib as bl


def wrk_rate(url: str, conns: int, secs: float, workdir: Path, method: str = "GET") -> float:
    args = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(secs))}s", "--timeout", "5s"]
    if method == "PUT":
        lua = workdir / "put.lua"
        lua.write_text('wrk.method = "PUT"\nwrk.body = "x"\n')
        args += ["-s", str(lua)]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=secs + 30).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    return float(m.group(1)) if m else float("nan")


def loop_rate(call: Any, secs: float, limit: int = 200_000) -> float:
    t0 = time.monotonic()
    done = 0
    while done < limit and time.monotonic() - t0 < secs:
        call()
        done += 1
    return done / (time.monotonic() - t0)


def rate_phase(c: bl.Cluster, secs: float) -> dict[str, float | None]:
    if c.kind == "serf":
        cl = c.client(0)
        try:
            res = {"rate_fire1": loop_rate(lambda: cl.fire("rate", b"x"), secs)}
        finally:
            cl.close()
        res["rate_fire8"] = threaded_rate(c, 8, secs)
        return res
    base = f"http://{c.ips[0]}:{c.api_port}"
    if shutil.which("wrk"):
        return {"rate_fire1": wrk_rate(base + "/v1/event/fire/rate", 1, secs, c.dir, "PUT"),
                "rate_fire8": wrk_rate(base + "/v1/event/fire/rate", 8, secs, c.dir, "PUT"),
                "rate_list8": wrk_rate(base + "/v1/event/list", 8, secs, c.dir)}
    rc = bl.RumorClient(c.ips[0], c.api_port)
    try:
        res = {"rate_fire1": loop_rate(lambda: rc.fire("rate", b"x"), secs),
               "rate_list1": loop_rate(lambda: rc.request("GET", "/v1/event/list"), secs)}
    finally:
        rc.close()
    res["rate_fire8"] = threaded_rate(c, 8, secs)
    return res


def threaded_rate(c: bl.Cluster, conns: int, secs: float) -> float:
    """Fire requests/s on agent 0 over `conns` connections (rumor: HTTP keep-alive, serf:
    RPC), one thread each (so the Python client's GIL bounds it too)."""
    counts = [0] * conns
    t0 = time.monotonic()

    def run(k: int) -> None:
        rc = c.client(0)
        try:
            while time.monotonic() - t0 < secs and counts[k] < 200_000:
                rc.fire("rate", b"x")
                counts[k] += 1
        finally:
            rc.close()

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(secs + 30)
    return sum(counts) / (time.monotonic() - t0)


def fanout_phase(c: bl.Cluster, waiters: int) -> dict[str, float | None]:
    """`waiters` parked long-polls on agent 0 answered by one fire (see the docstring)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < waiters + 100 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ip, port = c.ips[0], c.api_port
    rc = bl.RumorClient(ip, port)
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        _, hdr, _ = rc.request("GET", "/v1/event/list")
        poll = (f"GET /v1/event/list?index={hdr.get('x-consul-index', '1')}&wait=120s "
                f"HTTP/1.1\r\nHost: {ip}\r\n\r\n").encode()
        for k in range(waiters):
            s = socket.socket()
            socks.append(s)
            s.bind((f"127.251.{k // 150 // 250}.{k // 150 % 250 + 1}", 0))
            s.connect((ip, port))
            s.sendall(poll)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        parked = 0.0
        while parked < waiters and time.monotonic() < deadline:
            _, _, body = rc.request("GET", "/v1/agent/metrics?format=prometheus")
            m = re.search(rb"^rumor_blocking_queries_parked (\S+)$", body, re.M)
            parked = float(m.group(1)) if m else 0.0
            time.sleep(0.2)
        if parked < waiters:
            raise RuntimeError(f"only {parked:.0f} of {waiters} long-polls parked in 60 s")
        rss = bl.rss_mb(c.pid(0))
        fire = socket.create_connection((ip, port))
        fire.setblocking(False)
        sel.register(fire, selectors.EVENT_READ, "fire")
        cpu0 = bl.cpu_seconds(c.pid(0))
        t0 = time.time()
        fire.sendall(b"PUT /v1/event/fire/fanout HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1\r\n\r\nx")
        answered, first, last, reply = 0, None, t0, None
        while (answered < waiters or reply is None) and time.time() - t0 < 30:
            for key, _ in sel.select(1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(65536)  # each answer is a few hundred bytes: one read
                now = time.time()
                sel.unregister(sock)
                if key.data == "fire":
                    reply = now
                    if not data.startswith(b"HTTP/1.1 200"):
                        bl.note(f"fan-out: the fire was answered {data[:40]!r}")
                    continue
                if data:
                    last = now
                    first = first or now
                answered += 1
        time.sleep(0.5)  # let the woken connection tasks finish their bookkeeping
        cpu = bl.cpu_seconds(c.pid(0)) - cpu0
        fire.close()
        _, _, body = rc.request("GET", "/v1/agent/metrics?format=prometheus")
        m = re.search(rb"^rumor_blocking_fanout_last_seconds (\S+)$", body, re.M)
        return {"fan_last": (last - t0) * 1000 if answered == waiters else None,
                "fan_first": (first - t0) * 1000 if first is not None else None,
                "fan_reply": (reply - t0) * 1000 if reply is not None else None,
                "fan_write": float(m.group(1)) * 1000 if m else None,
                "fan_cpu": cpu * 1000, "fan_rss": rss}
    finally:
        rc.close()
        for s in socks:
            s.close()
