"""``scripts/dev`` as a user runs it: 3 real agent processes converge; a killed one is detected."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def members(host: str) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{host}:8500/v1/agent/members", timeout=2) as r:
        return {m["Name"]: m["Status"] for m in json.load(r)}


def test_dev_cluster_converges_and_detects_a_kill(tmp_path: Path) -> None:
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    env = {**os.environ, "RUMOR_DEV_HOST": host, "RUMOR_DEV_DATA": str(tmp_path)}
    proc = subprocess.Popen([str(ROOT / "scripts" / "dev")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "cluster running" in line:
                break
        out = "".join(lines)
        assert "cluster running" in out, out
        # the sample event is listed on all three agents
        assert out.count('"Name":"deploy"') == 3, out
        assert members(host) == {"dev1": 1, "dev2": 1, "dev3": 1}

        pid = int((tmp_path / "dev3.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            if members(host).get("dev3") == 4:  # failed
                break
            time.sleep(0.2)
        detected = time.monotonic() - t0
        assert members(host)["dev3"] == 4, f"dev3 not marked failed after {detected:.1f}s"
        print(f"kill -9 detected after {detected:.1f}s")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        proc.stdout.close()
