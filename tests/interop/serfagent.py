"""Run the real HashiCorp ``serf`` agent (Debian package, 0.9.4) as a test peer on 127.x.y.z.

Everything that waits is async (``trio.run_process``, ``trio.sleep``) and bounded, so the
trio loop, and the rumor nodes it runs, keep going while a test talks to serf.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import trio

SERF = shutil.which("serf")
CLI_TIMEOUT = 5.0  # one `serf members` / `serf event` call
RPC_TIMEOUT = 10.0  # a fresh agent's RPC port answering


def loopback_subnet() -> str:
    """A random 127.a.b prefix, so concurrent test runs don't collide on ports."""
    r = random.Random(os.getpid() ^ time.monotonic_ns())
    return f"127.{r.randint(1, 254)}.{r.randint(1, 254)}"


async def _serf(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert SERF is not None, "the serf binary is required (scripts/test installs it)"
    with trio.fail_after(CLI_TIMEOUT):
        return await trio.run_process([SERF, *args], capture_stdout=True, capture_stderr=True,
                                      check=False)


class SerfAgent:
    """One ``serf agent`` process; create it with ``await SerfAgent.start(...)``."""

    def __init__(self, name: str, ip: str, proc: trio.Process, workdir: Path) -> None:
        self.name, self.ip = name, ip
        self.rpc = f"{ip}:7373"
        self.proc = proc
        self.dir = workdir
        self.log_path = workdir / "agent.log"

    @classmethod
    async def start(cls, name: str, ip: str, *, join: str | None = None,
                    tags: dict[str, str] | None = None, encrypt: str | None = None,
                    handler: str | None = None, extra: list[str] | None = None) -> SerfAgent:
        """Start the agent and return once its RPC port answers (RuntimeError otherwise)."""
        assert SERF is not None, "the serf binary is required (scripts/test installs it)"
        workdir = Path(tempfile.mkdtemp(prefix=f"serf-{name}-"))
        cmd = [SERF, "agent", f"-node={name}", f"-bind={ip}:7946", f"-rpc-addr={ip}:7373",
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
        with (workdir / "agent.log").open("w") as log:  # the child keeps its own fd
            proc = await trio.lowlevel.open_process(cmd, stdout=log, stderr=subprocess.STDOUT)
        agent = cls(name, ip, proc, workdir)
        try:
            await agent._wait_rpc()
        except BaseException:
            await agent.stop()
            raise
        return agent

    async def _wait_rpc(self) -> None:
        with trio.move_on_after(RPC_TIMEOUT):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"serf {self.name} exited:\n{self.log()}")
                if (await _serf("members", f"-rpc-addr={self.rpc}")).returncode == 0:
                    return
                await trio.sleep(0.1)
        raise RuntimeError(f"serf {self.name} RPC never came up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def members(self) -> dict[str, tuple[str, str, str]]:
        """name -> (addr, status, tags) as printed by ``serf members``."""
        r = await _serf("members", f"-rpc-addr={self.rpc}")
        out: dict[str, tuple[str, str, str]] = {}
        for line in r.stdout.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = (parts[1], parts[2], parts[3] if len(parts) > 3 else "")
        return out

    async def status_of(self, name: str) -> str:
        """``alive``, ``failed``, ``left``... as this agent lists ``name``; "" if not listed."""
        return (await self.members()).get(name, ("", "", ""))[1]

    async def event(self, name: str, payload: str, coalesce: bool = False) -> None:
        r = await _serf("event", f"-rpc-addr={self.rpc}",
                        f"-coalesce={'true' if coalesce else 'false'}", name, payload)
        assert r.returncode == 0, r.stderr.decode(errors="replace")

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        with trio.fail_after(5):
            await self.proc.wait()

    async def stop(self) -> None:
        await self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
