"""Stream fan-out figures for scripts/bench_events (``--stream-subscribers N``).

One rumor agent; N connections in this process each GET /v1/event/stream?topic=Event:bench-*
(raw sockets from 150 per source address 127.252.x.y, under the agent's 200-per-client cap,
read with one selector).  Once the agent reports N live subscribers, events are
fired one at a time; for each, the time from sending the fire request to the moment the last
of the N connections has received that event's line (time.time() in this process), and the
agent's RSS before and after the subscribers connected (growth / N = RSS per subscriber), and
the agent's CPU time (utime+stime) per event, which a machine shared with other work
disturbs less than the wall-clock figure.
"""

from __future__ import annotations

import json
import selectors
import socket
import statistics
import time
from typing import Any

import benchlib as bl


def _subscribers(rc: bl.RumorClient) -> int:
    status, _, body = rc.request("GET", "/v1/agent/self")
    if status != 200:
        raise RuntimeError(f"self: HTTP {status}")
    return int(json.loads(body)["Stats"]["bus"]["subscribers"])


def stream_phase(n_subs: int, events: int = 10, timeout: float = 30.0) -> dict[str, Any]:
    c = bl.Cluster("rumor", 1)
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        c.start()
        rc = bl.RumorClient(c.ips[0], c.api_port)
        time.sleep(1.0)
        rss_before = bl.rss_mb(c.pid(0))
        request = (b"GET /v1/event/stream?topic=Event:bench-* HTTP/1.1\r\nHost: bench\r\n"
                   b"Accept: application/json\r\n\r\n")
        for i in range(n_subs):
            # 150 per source address: under the agent's 200-connections-per-client cap
            s = socket.create_connection((c.ips[0], c.api_port), timeout=10,
                                         source_address=(f"127.252.{i // 150 // 250}."
                                                         f"{i // 150 % 250 + 1}", 0))
            s.sendall(request)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            socks.append(s)
        deadline = time.monotonic() + timeout
        while _subscribers(rc) < n_subs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {_subscribers(rc)} of {n_subs} subscribers went live")
            time.sleep(0.1)
        _drain(sel)  # response heads
        time.sleep(1.0)
        rss_after = bl.rss_mb(c.pid(0))
        lasts: list[float] = []
        cpus: list[float] = []
        for k in range(events):
            cpu0 = bl.cpu_seconds(c.pid(0))
            marker = f"bench-{k}-{time.monotonic_ns()}".encode()
            got: set[int] = set()
            bufs: dict[int, bytes] = {}
            t0 = time.time()
            rc.fire(marker.decode(), b"x")
            last = t0
            end = time.monotonic() + timeout
            while len(got) < n_subs and time.monotonic() < end:
                for key, _ in sel.select(0.5):
                    i = key.data
                    try:
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    bufs[i] = bufs.get(i, b"")[-200:] + data
                    if i not in got and marker in bufs[i]:
                        got.add(i)
                        last = time.time()
            if len(got) < n_subs:
                raise RuntimeError(f"event {k}: only {len(got)} of {n_subs} subscribers got it")
            lasts.append((last - t0) * 1000)
            cpus.append((bl.cpu_seconds(c.pid(0)) - cpu0) * 1000)
            time.sleep(0.2)
        rc.close()
        return {"stream_subs": n_subs, "stream_last_med": statistics.median(lasts),
                "stream_last_max": max(lasts), "stream_cpu_med": statistics.median(cpus),
                "stream_rss_per_sub_kb": (rss_after - rss_before) * 1024 / n_subs,
                "stream_rss_before": rss_before, "stream_rss_after": rss_after}
    finally:
        for s in socks:
            s.close()
        sel.close()
        c.stop()


def _drain(sel: selectors.BaseSelector) -> None:
    while True:
        ready = sel.select(0.2)
        if not ready:
            return
        for key, _ in ready:
            try:
                key.fileobj.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                pass


def report(res: dict[str, Any]) -> str:
    return (f"Stream fan-out, one rumor agent, {res['stream_subs']} /v1/event/stream "
            f"subscribers:\n"
            f"  fire -> last subscriber has the event: median {res['stream_last_med']:.0f} ms, "
            f"max {res['stream_last_max']:.0f} ms\n"
            f"  agent CPU per fired event (fire + fan-out to all), median "
            f"{res['stream_cpu_med']:.0f} ms\n"
            f"  agent RSS {res['stream_rss_before']:.1f} MB -> {res['stream_rss_after']:.1f} MB"
            f" = {res['stream_rss_per_sub_kb']:.1f} KB per subscriber")
