"""Gossip key rotation across five real ``rumor agent`` processes, driven by ``rumor keyring``.

While the keys are rotated (install, use, remove, each at a different agent) an event is
fired every 100 ms at the agents in turn; afterwards every agent lists every one of them.
A corrupt keyring file stops an agent at start with one line naming the file.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from functools import partial
from pathlib import Path

from tests.agent.helpers import AgentProcess, free_subnet, run_cli, stop_all, wait_for

N = 5
K1, K2 = (base64.b64encode(bytes([i]) * 32).decode() for i in (7, 8))
MAX_FIRES = 600  # bound on the fire loop (60 s at one per 100 ms)


def alive(a: AgentProcess) -> set[str]:
    return a.alive_members()


def test_rotation_under_a_fire_loop_loses_no_event(tmp_path: Path) -> None:
    net = free_subnet(N)
    agents = [AgentProcess(f"n{i}", f"{net}.{i}", tmp_path / f"n{i}",
                           [f"-encrypt={K1}", "-event-buffer=2000"]) for i in range(1, N + 1)]
    names = {a.name for a in agents}
    fired: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def fire_loop() -> None:
        for i in range(MAX_FIRES):
            if stop.is_set():
                return
            a = agents[i % N]
            try:
                r = a.fire("tick", str(i).encode())
                if r.status == 200:
                    fired.append(r.json()["ID"])
                else:
                    errors.append(f"{a.name}: {r.status} {r.text}")
            except OSError as exc:
                errors.append(f"{a.name}: {exc}")
            time.sleep(0.1)

    try:
        agents[0].start().wait_ready()
        for a in agents[1:]:
            a.start(f"-join={agents[0].serf_addr}").wait_ready()
        for a in agents:
            wait_for(lambda a=a: alive(a) == names, 15, f"{a.name} to see all {N}")
        loop = threading.Thread(target=fire_loop, daemon=True)
        loop.start()
        time.sleep(0.5)
        for a, flag, key in ((agents[1], "-install", K2), (agents[2], "-use", K2),
                             (agents[3], "-remove", K1)):
            r = run_cli("keyring", flag, key, f"-http-addr={a.http_addr}")
            assert r.returncode == 0, (flag, r.stdout, r.stderr)
            assert r.stdout.startswith("==> ")
            time.sleep(0.3)
        r = run_cli("keyring", "-list", f"-http-addr={agents[4].http_addr}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["==> Gathering installed encryption keys...", "",
                                         "dc1 (LAN):", f"  {K2} [5/5]"], r.stdout
        r = run_cli("keyring", "-remove", K2, f"-http-addr={agents[0].http_addr}")
        assert r.returncode == 1
        assert "Removing the primary key is not allowed" in r.stderr
        time.sleep(0.5)
        stop.set()
        loop.join(10)
        assert not errors, errors
        assert len(fired) >= 20

        def has_all(a: AgentProcess) -> bool:
            ids = {e["ID"] for e in a.events("tick")}
            return ids >= set(fired)
        for a in agents:
            wait_for(partial(has_all, a), 15, f"{a.name} to list all {len(fired)} events")
            keyring = json.loads((a.data_dir / "serf" / "local.keyring").read_text())
            assert keyring == [K2]

        # a restart (still started with -encrypt=K1) comes back with the rotated key
        agents[2].stop(signal.SIGKILL)
        agents[2].start(f"-join={agents[0].serf_addr}").wait_ready()
        wait_for(lambda: alive(agents[2]) == names and alive(agents[0]) == names, 15,
                 "the restarted agent back in the cluster")
        r = agents[2].fire("after-restart")
        assert r.status == 200
        for a in agents:
            wait_for(lambda a=a: a.events("after-restart"), 10, f"{a.name} got it")
    finally:
        stop.set()
        stop_all(agents, signal.SIGKILL)


def test_corrupt_keyring_file_stops_the_agent_with_one_line(tmp_path: Path) -> None:
    net = free_subnet(1)
    a = AgentProcess("bad", f"{net}.1", tmp_path / "bad")
    (a.data_dir / "serf").mkdir(parents=True)
    path = a.data_dir / "serf" / "local.keyring"
    path.write_text('["not base64"')
    a.start()
    assert a.proc is not None
    a.proc.wait(20)
    assert a.proc.returncode == 1
    errors = [line for line in a.log_path.read_text().splitlines() if "Error" in line]
    assert len(errors) == 1 and str(path) in errors[0], a.log_tail()
