"""Shared helpers for scripts/bench_membership and scripts/bench_events.

Owns: re-exec under the repo's .venv, a loopback address plan (one 127.a.b.i per agent),
starting and always killing agent processes, the clients of both systems
(scripts/benchclients.py, re-exported here), `Cluster` (spawn N agents of one kind, join
them to a seed, poll them) and the small statistics/table helpers both scripts print
with. Every wait here has a timeout.
"""

from __future__ import annotations

import atexit
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchclients import Client, RumorClient, SerfClient

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
RUMOR = VENV / "bin" / "rumor"
SERF = shutil.which("serf") or "/usr/bin/serf"
CLK_TCK = os.sysconf("SC_CLK_TCK")


_rumor_src: Path | None = None


def set_rumor_src(path: Path | None) -> None:
    """Run rumor agents from this source tree (e.g. a `git worktree` of a commit) instead of
    the tree .venv's editable install points at (ROOT, with whatever is uncommitted)."""
    global _rumor_src
    _rumor_src = path.resolve() if path is not None else None
    if _rumor_src is not None and not (_rumor_src / "agent" / "cli.py").exists():
        sys.exit(f"--rumor-src {path}: no agent/cli.py there")


def rumor_argv() -> list[str]:
    if _rumor_src is None:
        return [str(RUMOR)]
    boot = (f"import sys; sys.path.insert(0, {str(_rumor_src)!r}); "
            "from agent.cli import main; sys.exit(main())")
    return [str(VENV / "bin" / "python"), "-c", boot]


def describe_rumor() -> str:
    """Which rumor source the agents run: path, commit, and whether agent/ gossip/ are dirty."""
    src = _rumor_src or ROOT

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() if r.returncode == 0 else "?"

    head = git("rev-parse", "--short", "HEAD")
    if head == "?":
        return f"rumor from {src} (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "agent", "gossip")
    return (f"rumor from {src} at {head}"
            + (" + uncommitted changes in agent/ or gossip/" if dirty else ""))


def serf_version() -> str:
    """The Debian package version if there is one (the binary itself says 0.8.2-dev)."""
    for cmd in (["dpkg-query", "-W", "-f", "${Version}", "serf"], [SERF, "version"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except OSError:
            continue
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip().splitlines()[0]
    return "?"


def ensure_venv() -> None:
    """Re-exec the calling script under .venv/bin/python unless it already runs there."""
    py = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not py.exists():
        sys.exit(f"{py} is missing: run scripts/test or scripts/dev first to create .venv")
    os.execv(str(py), [str(py), *sys.argv])


# --- processes ------------------------------------------------------------------------------

_PROCS: list[subprocess.Popen[bytes]] = []
_DIRS: list[Path] = []


def _cleanup() -> None:
    for p in _PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    for p in _PROCS:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
    _PROCS.clear()
    for d in _DIRS:
        shutil.rmtree(d, ignore_errors=True)
    _DIRS.clear()


def install_cleanup() -> None:
    """Kill every spawned agent at exit, also on SIGTERM/SIGHUP (SIGINT raises as usual)."""
    atexit.register(_cleanup)

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)


def spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    """Start a process in its own session (so Ctrl-C reaches only us; we kill it)."""
    with log.open("wb") as f:
        p = subprocess.Popen(list(cmd), stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    _PROCS.append(p)
    return p


def kill_all() -> None:
    _cleanup()


def workdir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    _DIRS.append(d)
    return d


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_subnet(ports: Sequence[int], n: int) -> str:
    """A random 127.a.b prefix whose .1..n addresses have every port in `ports` free."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(50):
        prefix = f"127.{rng.randint(100, 250)}.{rng.randint(1, 254)}"
        try:
            for i in range(1, n + 1):
                for port in ports:
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        with socket.socket(socket.AF_INET, kind) as s:
                            s.bind((f"{prefix}.{i}", port))
        except OSError:
            continue
        return prefix
    raise RuntimeError("no free 127.a.b subnet found")


# --- clients --------------------------------------------------------------------------------

class Cluster:
    """N agents of one kind ("rumor" or "serf"), agent i on 127.a.b.(i+1)."""

    def __init__(self, kind: str, n: int, serf_handler: str | None = None) -> None:
        self.kind, self.n = kind, n
        self.gossip_port = 8301 if kind == "rumor" else 7946
        self.api_port = 8500 if kind == "rumor" else 7373
        self.prefix = free_subnet([self.gossip_port, self.api_port], n)
        self.dir = workdir(f"bench-{kind}-")
        self.names = [f"{kind[0]}{i:02d}" for i in range(n)]
        self.ips = [f"{self.prefix}.{i + 1}" for i in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.serf_handler = serf_handler

    def gossip_addr(self, i: int) -> str:
        return f"{self.ips[i]}:{self.gossip_port}"

    def rpc_addr(self, i: int) -> str:
        return f"{self.ips[i]}:{self.api_port}"

    def command(self, i: int) -> list[str]:
        ip, name = self.ips[i], self.names[i]
        if self.kind == "rumor":
            return [*rumor_argv(), "agent", f"-node={name}", f"-bind={ip}",
                    f"-serf-lan-port={self.gossip_port}", f"-client={ip}",
                    f"-http-port={self.api_port}", f"-data-dir={self.dir / name}",
                    "-log-level=WARN"]
        cmd = [SERF, "agent", f"-node={name}", f"-bind={ip}:{self.gossip_port}",
               f"-rpc-addr={self.rpc_addr(i)}", "-log-level=warn"]
        if self.serf_handler:
            cmd += ["-event-handler", f"user={self.serf_handler}"]
        return cmd

    def handler_file(self, i: int) -> Path:
        return self.dir / f"{self.names[i]}.events"

    def start(self, timeout: float = 60.0) -> float:
        """Spawn all agents (no join) and wait until every API answers; returns seconds."""
        t0 = time.monotonic()
        for i in range(self.n):
            env = dict(os.environ, BENCH_EVENTS_FILE=str(self.handler_file(i)))
            self.procs.append(spawn(self.command(i), self.dir / f"{self.names[i]}.log", env))
        deadline = t0 + timeout
        for i in range(self.n):
            while True:
                if self.procs[i].poll() is not None:
                    log = (self.dir / f"{self.names[i]}.log").read_text(errors="replace")
                    raise RuntimeError(f"{self.names[i]} exited:\n{log[-2000:]}")
                try:
                    c = self.client(i, timeout=2.0)
                    c.members()
                    c.close()
                    break
                except (OSError, RuntimeError, http.client.HTTPException):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.names[i]}: API not up in {timeout}s") from None
                    time.sleep(0.05)
        return time.monotonic() - t0

    def client(self, i: int, timeout: float = 10.0) -> Client:
        if self.kind == "rumor":
            return RumorClient(self.ips[i], self.api_port, timeout)
        return SerfClient(self.rpc_addr(i), timeout)

    def pid(self, i: int) -> int:
        return self.procs[i].pid

    def join_all(self, seed: int = 0) -> None:
        """Every non-seed agent asks its own agent to join the seed, all at the same time."""
        errors: list[BaseException] = []
        barrier = threading.Barrier(self.n - 1)
        clients = [self.client(i) for i in range(self.n) if i != seed]

        def run(c: Client) -> None:
            try:
                barrier.wait(10)
                c.join(self.gossip_addr(seed))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                c.close()

        threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        if errors:
            raise RuntimeError(f"join failed: {errors[0]!r}")

    def wait_until(self, which: Sequence[int], pred: Callable[[dict[str, str]], bool],
                   t0: float, timeout: float, interval: float) -> list[float | None]:
        """Poll `which` agents (one thread and connection each) until pred(members) holds.

        Returns, per agent, seconds from t0 (time.monotonic()) to the first poll that saw it,
        or None on timeout. Pollers stop as soon as their agent satisfies pred.
        """
        return self.wait_until_all(which, [pred], t0, timeout, interval)[0]

    def wait_until_all(self, which: Sequence[int],
                       preds: Sequence[Callable[[dict[str, str]], bool]],
                       t0: float, timeout: float, interval: float) -> list[list[float | None]]:
        """Like wait_until for several predicates at once: result[p][k] for preds[p]."""
        out: list[list[float | None]] = [[None] * len(which) for _ in preds]
        deadline = t0 + timeout

        def run(k: int, i: int) -> None:
            c: Client | None = None
            while time.monotonic() < deadline:
                try:
                    c = c or self.client(i, timeout=5.0)
                    members = c.members()
                    now = time.monotonic()
                    for p, pred in enumerate(preds):
                        if out[p][k] is None and pred(members):
                            out[p][k] = now - t0
                    if all(o[k] is not None for o in out):
                        break
                except (OSError, RuntimeError, http.client.HTTPException):
                    if c is not None:
                        c.close()
                    c = None
                time.sleep(interval)
            if c is not None:
                c.close()

        threads = [threading.Thread(target=run, args=(k, i), daemon=True)
                   for k, i in enumerate(which)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 10)
        return out

    def converge(self, timeout: float = 60.0, interval: float = 0.02) -> float | None:
        """Join all to agent 0 and return seconds until every agent sees N alive."""
        t0 = time.monotonic()
        self.join_all()
        times = self.wait_until(range(self.n), self.all_alive, t0, timeout, interval)
        return None if None in times else max(t for t in times if t is not None)

    def all_alive(self, members: dict[str, str]) -> bool:
        return sum(1 for n in self.names if members.get(n) == "alive") == self.n

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait(10)


# --- statistics and printing ----------------------------------------------------------------

def pct(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) with linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def span(values: Sequence[float | None], fmt: str) -> str:
    """'a' or 'min–max' over runs; '—' when nothing was measured, '(k timeouts)' appended."""
    vals = [v for v in values if v is not None and v == v]
    missing = len(values) - len(vals)
    if not vals:
        return "—"
    lo, hi = min(vals), max(vals)
    text = fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else \
        f"{fmt.format(lo)}–{fmt.format(hi)}"
    return text + (f" ({missing} run(s) never got there)" if missing else "")


def ratio_span(a: Sequence[float | None], b: Sequence[float | None]) -> str:
    """Per-run ratios a[i]/b[i] as a range."""
    rs = [x / y for x, y in zip(a, b, strict=False)
          if x is not None and y is not None and y > 0 and x == x and y == y]
    return span(rs, "{:.2f}×") if rs else "—"


def table(rows: Sequence[tuple[str, str, str, str]], title: str) -> str:
    head = ("figure", "rumor", "serf 0.9.4", "rumor/serf")
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def note(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)
