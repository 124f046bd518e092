"""Network-namespace lab: N isolated "hosts" on one virtual switch, for multi-host tests.

Owns building and tearing down the namespaces, running processes inside them, reaching them
from the test process, and breaking the network between them. Needs root and iproute2 only
(no iptables, nft or ebtables).

Topology. Nothing is ever created in the root namespace, not even for a moment: each veth
pair is created in the switch namespace with its peer placed straight into its host::

    <p>-s    switch: bridge br0 with ports p0 .. p{n-1}          (no address)
    <p>-h0   host 0: lo + eth0 10.213.K.1/24  ==veth==  p0 in the switch
    <p>-h1   host 1: lo + eth0 10.213.K.2/24  ==veth==  p1 in the switch

``<p>`` is ``rmr<pid>x<seq>`` (unique per process and per lab). K is derived from the pid; the
subnet only exists inside these namespaces, so concurrent runs cannot collide even if K does.

Failure semantics. Both failures are *silent drops*, like a pulled cable or a dead switch
port: UDP datagrams vanish and TCP connects, writes and reads time out; nobody gets an ICMP
error or a RST. Both take effect at once, in both directions, for established TCP
connections too.

- ``cut(i)`` sets host i's switch port down (host i is alone); ``restore(i)`` sets it up.
- ``partition(groups)`` moves each group's switch ports onto a bridge of its own, so frames
  cannot cross between groups; ``heal()`` moves every port back onto br0. The two compose:
  a cut host stays cut across partition and heal.

Settling. ``start``, ``restore``, ``partition`` and ``heal`` return only once the switch
forwards what they connected: a UDP datagram and its echo have crossed between every
connected host and one peer of its segment (bounded by ``SETTLE_TIMEOUT``; NetnsError if
not), and, after ``start``, br0 reports its carrier. Without this a probe sent right after
``restore`` could race the kernel's asynchronous link-state work and be lost.

ARP never gets in the way: every host has permanent neighbour entries for all the others
(the MACs are deterministic), so a cut never turns into EHOSTUNREACH after a failed ARP
probe, and recovery is immediate rather than waiting for the next probe.

Reaching a host from the test process. ``socket(i, ...)`` creates a socket *inside* host
i's namespace: a short-lived thread calls setns(2) and then socket(2); a socket belongs to
the namespace it was created in for its whole life, so it can then be used from any thread,
and from trio via ``trio.socket.from_stdlib_socket``. ``http(i, ...)`` is ``http.client``
over such a socket (no subprocess per request); ``ahttp`` is the same for trio tests.

Teardown (``close()``, ``__exit__``, and an ``atexit`` safety net for labs left open) sends
SIGTERM to every process group started with ``run``, SIGKILL after a grace period, then
SIGKILLs any process still inside a lab namespace and deletes every namespace. A new lab also
deletes namespaces left behind by dead processes (e.g. a test run killed with SIGKILL).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import trio

T = TypeVar("T")

NETNS_DIR = "/run/netns"
NAME_PREFIX = "rmr"
_NAME_RE = re.compile(rf"^{NAME_PREFIX}(\d+)x(\d+)-(?:s|h\d+)$")
_CLONE_NEWNET = 0x40000000
MAX_HOSTS = 250
SETTLE_TIMEOUT = 10.0  # bound on a lab change taking effect (normally a few ms)
SETTLE_PROBE = 0.2  # one settle probe's wait for its datagram

requires_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root for network namespaces",
)


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or teardown left something behind."""


@dataclass(frozen=True)
class Host:
    """One lab host: its namespace, its address on the lab subnet, its switch port."""

    index: int
    netns: str
    addr: str
    mac: str
    port: str


# ---------------------------------------------------------------------------- low level


def _ip(*args: str, ns: str | None = None, stdin: str | None = None) -> str:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _ip_batch(lines: Sequence[str], ns: str | None = None, force: bool = False) -> None:
    """One ``ip`` process for many commands; with force, keep going past failing lines."""
    opts = ("-force", "-batch", "-") if force else ("-batch", "-")
    _ip(*opts, ns=ns, stdin="".join(line + "\n" for line in lines))


def _list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _setns_net(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def call_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn()`` in a fresh thread that has joined namespace ``netns``; return its result.

    Only the helper thread changes namespace (setns(2) on a thread affects that thread only),
    and it ends right after, so the caller's threads never leave the root namespace.
    """
    outcome: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns_net(fd)
            finally:
                os.close(fd)
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name=f"setns-{netns}", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def pids_in(namespaces: Sequence[str]) -> dict[str, list[int]]:
    """Processes whose network namespace is one of ``namespaces`` (what ``ip netns pids`` does)."""
    keys: dict[tuple[int, int], str] = {}
    for name in namespaces:
        try:
            st = os.stat(os.path.join(NETNS_DIR, name))
        except FileNotFoundError:
            continue
        keys[(st.st_dev, st.st_ino)] = name
    found: dict[str, list[int]] = {name: [] for name in keys.values()}
    if not keys:
        return found
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        owner = keys.get((st.st_dev, st.st_ino))
        if owner is not None:
            found[owner].append(int(entry))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all_inside(namespaces: Sequence[str], budget: float = 2.0) -> list[int]:
    """SIGKILL every process inside ``namespaces`` until none is left; return survivors."""
    deadline = time.monotonic() + budget
    while True:
        pids = [pid for group in pids_in(namespaces).values() for pid in group]
        if not pids or time.monotonic() >= deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _delete_netns(namespaces: Sequence[str]) -> None:
    present = set(_list_netns())
    lines = [f"netns del {name}" for name in namespaces if name in present]
    if lines:
        try:
            _ip_batch(lines, force=True)
        except NetnsError:
            pass  # whatever is left over is reported by the caller's check


def sweep_stale() -> list[str]:
    """Delete lab namespaces whose creating process no longer exists; return their names."""
    stale = []
    for name in _list_netns():
        match = _NAME_RE.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            stale.append(name)
    if stale:
        _kill_all_inside(stale)
        _delete_netns(stale)
    return stale


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError after
    ``timeout`` seconds. For waiting on real processes, where no fake clock can help."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition still false after {timeout} s")
        time.sleep(interval)


class _NetnsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, lab: NetnsLab, index: int, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._lab = lab
        self._index = index

    def connect(self) -> None:
        sock = self._lab.socket(self._index, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


# ---------------------------------------------------------------------------- the lab

_OPEN_LABS: set[NetnsLab] = set()
_SEQ = 0
_SEQ_LOCK = threading.Lock()


@atexit.register
def _close_open_labs() -> None:
    for lab in list(_OPEN_LABS):
        try:
            lab.close()
        except Exception:  # best effort at interpreter exit
            pass


class NetnsLab:
    """``n`` hosts in network namespaces on one bridge. Use as a context manager."""

    def __init__(self, n: int, *, subnet_octet: int | None = None, kill_grace: float = 1.0):
        if not 1 <= n <= MAX_HOSTS:
            raise ValueError(f"n must be between 1 and {MAX_HOSTS}, got {n}")
        global _SEQ
        with _SEQ_LOCK:
            seq = _SEQ
            _SEQ += 1
        pid = os.getpid()
        self.prefix = f"{NAME_PREFIX}{pid}x{seq}"
        octet = subnet_octet if subnet_octet is not None else 1 + (pid * 7 + seq) % 254
        if not 0 <= octet <= 255:
            raise ValueError(f"subnet_octet must be 0..255, got {octet}")
        self.subnet = f"10.213.{octet}.0/24"
        self.switch = f"{self.prefix}-s"
        self.hosts = [
            Host(
                index=i,
                netns=f"{self.prefix}-h{i}",
                addr=f"10.213.{octet}.{i + 1}",
                mac=f"02:72:6d:{octet:02x}:00:{i:02x}",
                port=f"p{i}",
            )
            for i in range(n)
        ]
        self.kill_grace = kill_grace
        self._procs: list[tuple[subprocess.Popen[Any], bool]] = []
        self._group_bridges: set[str] = set()
        self._cut: set[int] = set()
        self._group: dict[int, int] = {}  # host -> partition group (absent: on br0)
        self._started = False
        self._closed = False

    # -- lifecycle

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of this lab, switch first."""
        return [self.switch, *(h.netns for h in self.hosts)]

    def start(self) -> NetnsLab:
        """Build the namespaces, links and addresses. On any failure, clean up and raise."""
        if self._started:
            raise NetnsError("lab already started")
        self._started = True
        sweep_stale()
        _OPEN_LABS.add(self)  # before the first namespace exists: atexit covers partial builds
        try:
            _ip_batch([f"netns add {name}" for name in self.namespaces])
            switch = ["link add br0 type bridge", "link set br0 up"]
            for h in self.hosts:
                switch += [
                    f"link add {h.port} type veth peer name eth0 address {h.mac} netns {h.netns}",
                    f"link set {h.port} master br0",
                    f"link set {h.port} up",
                ]
            _ip_batch(switch, ns=self.switch)
            for h in self.hosts:
                lines = [
                    "link set lo up",
                    "link set eth0 addrgenmode none",  # no IPv6 link-local chatter
                    f"addr add {h.addr}/24 dev eth0",
                    "link set eth0 up",
                ]
                lines += [
                    f"neigh replace {o.addr} lladdr {o.mac} dev eth0 nud permanent"
                    for o in self.hosts
                    if o is not h
                ]
                _ip_batch(lines, ns=h.netns)
            self._settle("start", range(len(self.hosts)))
            wait_until(lambda: self._operstate("br0") == "UP", SETTLE_TIMEOUT, 0.01)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill every process of the lab and delete every namespace (idempotent).

        Raises NetnsError if a process or namespace survived."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stop_processes()
            survivors = _kill_all_inside(self.namespaces)
            _delete_netns(self.namespaces)
        finally:
            _OPEN_LABS.discard(self)
        left = sorted(set(self.namespaces) & set(_list_netns()))
        if survivors or left:
            raise NetnsError(f"teardown left processes {survivors} and namespaces {left}")

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.close()
        except NetnsError as err:
            if exc is None:
                raise
            print(f"NetnsLab teardown problem (after the test's own error): {err}", file=sys.stderr)

    def _stop_processes(self) -> None:
        def send(proc: subprocess.Popen[Any], own_group: bool, sig: int) -> None:
            if proc.returncode is not None:
                return  # reaped, so its pid may be reused; the namespace sweep gets its children
            try:
                if own_group:
                    os.killpg(proc.pid, sig)  # the whole group, even if the leader has exited
                else:
                    proc.send_signal(sig)
            except (ProcessLookupError, PermissionError):
                pass

        for proc, own_group in self._procs:
            send(proc, own_group, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        for proc, own_group in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            send(proc, own_group, signal.SIGKILL)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass  # reported by the namespace sweep in close()

    # -- running things inside a host

    def _host(self, i: int) -> Host:
        if not self._started or self._closed:
            raise NetnsError("lab is not running")
        if not (isinstance(i, int) and 0 <= i < len(self.hosts)):
            raise ValueError(f"no host {i!r} (lab has {len(self.hosts)})")
        return self.hosts[i]

    def run(self, i: int, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside host i (``ip netns exec``). The process gets its own session
        (unless ``start_new_session=False``) so teardown can kill its whole process group."""
        host = self._host(i)
        popen_kwargs.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *argv], **popen_kwargs
        )
        self._procs.append((proc, bool(popen_kwargs["start_new_session"])))
        return proc

    def exec(
        self, i: int, argv: Sequence[str], **run_kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside host i to completion. Defaults: capture_output, text, timeout 30 s
        (``subprocess.run`` keyword arguments override them)."""
        host = self._host(i)
        run_kwargs.setdefault("capture_output", True)
        run_kwargs.setdefault("text", True)
        run_kwargs.setdefault("timeout", 30.0)
        return subprocess.run(["ip", "netns", "exec", host.netns, *argv], **run_kwargs)

    def socket(
        self, i: int, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A new socket living in host i's namespace (usable from any thread, or from trio via
        ``trio.socket.from_stdlib_socket``). The caller closes it."""
        host = self._host(i)
        return call_in_netns(host.netns, lambda: socket.socket(family, type, proto))

    def http(
        self,
        i: int,
        method: str,
        path: str,
        body: bytes | str | None = None,
        *,
        port: int = 8500,
        host: str = "127.0.0.1",
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> tuple[int, bytes]:
        """One HTTP/1.1 request from inside host i to ``host:port`` (default: the host's own
        loopback, i.e. an agent there with the default client address). Returns (status, body).
        Connection errors and timeouts propagate as OSError."""
        data = body.encode() if isinstance(body, str) else body
        conn = _NetnsHTTPConnection(self, i, host, port, timeout)
        try:
            conn.request(method, path, body=data, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    async def ahttp(self, i: int, method: str, path: str, body: bytes | str | None = None,
                    **kwargs: Any) -> tuple[int, bytes]:
        """``http`` for trio tests: runs in a worker thread so the event loop keeps going."""
        call = functools.partial(self.http, i, method, path, body, **kwargs)
        return await trio.to_thread.run_sync(call)

    # -- breaking the network

    def cut(self, i: int) -> None:
        """Isolate host i: its switch port goes down; all its traffic is silently dropped."""
        _ip("link", "set", self._host(i).port, "down", ns=self.switch)
        self._cut.add(i)

    def restore(self, i: int) -> None:
        """Undo ``cut(i)``; returns once host i's port forwards again."""
        _ip("link", "set", self._host(i).port, "up", ns=self.switch)
        self._cut.discard(i)
        self._settle(f"restore({i})", [i])

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split the network: hosts talk only within their group, e.g. ``[[0, 1], [2, 3, 4]]``.

        Hosts named in no group stay together on the main bridge. Replaces any earlier
        partition. Raises ValueError (and changes nothing) on an empty group, a repeated host
        or an unknown host."""
        seen: set[int] = set()
        for group in groups:
            if isinstance(group, (str, bytes)) or len(group) == 0:
                raise ValueError(f"each group must be a non-empty list of hosts, got {group!r}")
            for i in group:
                self._host(i)
                if i in seen:
                    raise ValueError(f"host {i} appears in more than one group")
                seen.add(i)
        new_bridges = [f"brg{g}" for g in range(len(groups))]
        new_bridges = [b for b in new_bridges if b not in self._group_bridges]
        lines = [f"link add {b} type bridge\nlink set {b} up" for b in new_bridges]
        master_group = {i: g for g, group in enumerate(groups) for i in group}
        master = {i: f"brg{g}" for i, g in master_group.items()}
        lines += [f"link set {h.port} master {master.get(h.index, 'br0')}" for h in self.hosts]
        _ip_batch(lines, ns=self.switch)
        self._group_bridges.update(new_bridges)
        self._group = dict(master_group)
        self._settle("partition", seen)

    def heal(self) -> None:
        """Undo ``partition``: every port back on the main bridge (cut hosts stay cut)."""
        if not self._started or self._closed:
            raise NetnsError("lab is not running")
        lines = [f"link set {h.port} master br0" for h in self.hosts]
        lines += [f"link del {bridge}" for bridge in sorted(self._group_bridges)]
        _ip_batch(lines, ns=self.switch)
        self._group_bridges.clear()
        self._group = {}
        self._settle("heal", range(len(self.hosts)))

    # -- settling

    def _operstate(self, link: str) -> str:
        shown = json.loads(_ip("-j", "link", "show", link, ns=self.switch))
        return str(shown[0].get("operstate", "")) if shown else ""

    def _exchange(self, a: int, b: int) -> bool:
        """One UDP datagram host a -> host b and its echo back, each within SETTLE_PROBE."""
        ha, hb = self.hosts[a], self.hosts[b]
        with self.socket(b, socket.AF_INET, socket.SOCK_DGRAM) as server, \
                self.socket(a, socket.AF_INET, socket.SOCK_DGRAM) as client:
            server.bind((hb.addr, 0))
            client.bind((ha.addr, 0))
            server.settimeout(SETTLE_PROBE)
            client.settimeout(SETTLE_PROBE)
            client.sendto(b"netns-lab-settle", server.getsockname())
            try:
                data, peer = server.recvfrom(64)
                server.sendto(data, peer)
                return client.recv(64) == data
            except TimeoutError:
                return False

    def _settle(self, what: str, hosts: Iterable[int]) -> None:
        """Return once each connected host in ``hosts`` exchanges a datagram with a connected
        peer of its own segment (a host alone on its segment has nobody to reach)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        for i in sorted(set(hosts) - self._cut):
            group = self._group.get(i)
            peers = [h.index for h in self.hosts if h.index != i and h.index not in self._cut
                     and self._group.get(h.index) == group]
            if not peers:
                continue
            while not self._exchange(i, peers[0]):
                if time.monotonic() >= deadline:
                    raise NetnsError(f"{what}: no datagram between h{i} and h{peers[0]} after "
                                     f"{SETTLE_TIMEOUT} s")
