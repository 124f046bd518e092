"""Run the real HashiCorp ``serf`` agent (Debian package, 0.9.4) as a test peer on 127.x.y.z."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SERF = shutil.which("serf")


def loopback_subnet() -> str:
    """A random 127.a.b prefix, so concurrent test runs don't collide on ports."""
    r = random.Random(os.getpid() ^ time.monotonic_ns())
    return f"127.{r.randint(1, 254)}.{r.randint(1, 254)}"


class SerfAgent:
    def __init__(self, name: str, ip: str, *, join: str | None = None,
                 tags: dict[str, str] | None = None, encrypt: str | None = None,
                 handler: str | None = None, extra: list[str] | None = None) -> None:
        assert SERF is not None, "the serf binary is required (scripts/test installs it)"
        self.name, self.ip = name, ip
        self.rpc = f"{ip}:7373"
        self.dir = Path(tempfile.mkdtemp(prefix=f"serf-{name}-"))
        cmd = [SERF, "agent", f"-node={name}", f"-bind={ip}:7946", f"-rpc-addr={self.rpc}",
               "-log-level=debug"]
        for k, v in (tags or {}).items():
            cmd += ["-tag", f"{k}={v}"]
        if join:
            cmd.append(f"-join={join}")
        if encrypt:
            cmd.append(f"-encrypt={encrypt}")
        if handler:
            cmd += ["-event-handler", handler]
        cmd += extra or []
        self.log_path = self.dir / "agent.log"
        with self.log_path.open("w") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self._wait_rpc()

    def _wait_rpc(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serf {self.name} exited:\n{self.log()}")
            r = subprocess.run([SERF or "serf", "members", f"-rpc-addr={self.rpc}"],
                               capture_output=True, text=True, timeout=5)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"serf {self.name} RPC never came up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def members(self) -> dict[str, tuple[str, str, str]]:
        """name -> (addr, status, tags) as printed by ``serf members``."""
        r = subprocess.run([SERF or "serf", "members", f"-rpc-addr={self.rpc}"],
                           capture_output=True, text=True, timeout=5)
        out: dict[str, tuple[str, str, str]] = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = (parts[1], parts[2], parts[3] if len(parts) > 3 else "")
        return out

    def event(self, name: str, payload: str, coalesce: bool = False) -> None:
        subprocess.run([SERF or "serf", "event", f"-rpc-addr={self.rpc}",
                        f"-coalesce={'true' if coalesce else 'false'}", name, payload],
                       check=True, capture_output=True, timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
