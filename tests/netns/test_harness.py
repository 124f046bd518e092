"""Proves the network-namespace lab without any rumor code: addresses, run/exec, teardown,
cut/restore, partition/heal, the atexit and stale-namespace safety nets, HTTP and trio use.

Every reachability probe is bounded by PROBE_TIMEOUT; a probe that must fail costs exactly
that long, so the file stays well under 10 s."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.netns.harness import (
    NetnsError,
    NetnsLab,
    pids_in,
    requires_netns,
    sweep_stale,
    wait_until,
)

pytestmark = requires_netns

PROBE_TIMEOUT = 0.5
ROOT = Path(__file__).resolve().parents[2]


def netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return sorted(line.split(":")[1].strip() for line in out.stdout.splitlines())


def dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def udp_ok(lab: NetnsLab, src: int, dst: int) -> bool:
    """A datagram src -> dst and its echo back, each within PROBE_TIMEOUT."""
    addr = lab.hosts[dst].addr
    with lab.socket(dst, type=socket.SOCK_DGRAM) as server, \
            lab.socket(src, type=socket.SOCK_DGRAM) as client:
        server.bind((addr, 0))
        server.settimeout(PROBE_TIMEOUT)
        client.settimeout(PROBE_TIMEOUT)
        client.sendto(b"ping", (addr, server.getsockname()[1]))
        try:
            data, peer = server.recvfrom(64)
            server.sendto(data.upper(), peer)
            return client.recv(64) == b"PING"
        except TimeoutError:
            return False


def tcp_ok(lab: NetnsLab, src: int, dst: int) -> bool:
    """A TCP connect src -> dst and one byte across, within PROBE_TIMEOUT."""
    addr = lab.hosts[dst].addr
    with lab.socket(dst) as listener, lab.socket(src) as client:
        listener.bind((addr, 0))
        listener.listen()
        listener.settimeout(PROBE_TIMEOUT)
        client.settimeout(PROBE_TIMEOUT)
        try:
            client.connect((addr, listener.getsockname()[1]))
            client.sendall(b"x")
            conn, _ = listener.accept()
            with conn:
                return conn.recv(1) == b"x"
        except OSError:  # TimeoutError included
            return False


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    with NetnsLab(3) as built:
        yield built
    assert not [n for n in netns_list() if n.startswith(built.prefix + "-")]


def test_hosts_get_addresses_and_nothing_touches_the_root_namespace() -> None:
    before = root_links()
    with NetnsLab(3) as lab:
        assert len({h.addr for h in lab.hosts}) == 3
        assert set(lab.namespaces) <= set(netns_list())
        for h in lab.hosts:
            assert h.addr.startswith(lab.subnet.rsplit(".", 2)[0] + ".")
            out = lab.exec(h.index, ["ip", "-4", "-o", "addr", "show"], check=True).stdout
            assert f"inet {h.addr}/24" in out and "inet 127.0.0.1/8" in out
            links = lab.exec(h.index, ["ip", "-o", "link", "show"], check=True).stdout
            assert [line.split(":")[1].split("@")[0].strip() for line in links.splitlines()] \
                == ["lo", "eth0"]
        assert root_links() == before
    assert root_links() == before
    assert not set(lab.namespaces) & set(netns_list())


def test_cut_isolates_one_host_and_restore_reconnects_it(lab: NetnsLab) -> None:
    assert udp_ok(lab, 0, 2) and tcp_ok(lab, 0, 2)
    lab.cut(2)
    assert not udp_ok(lab, 0, 2)
    assert not tcp_ok(lab, 0, 2)
    assert not udp_ok(lab, 2, 1)
    assert udp_ok(lab, 0, 1)  # the others are unaffected
    lab.restore(2)
    assert udp_ok(lab, 0, 2) and tcp_ok(lab, 0, 2) and udp_ok(lab, 2, 1)


def test_partition_blocks_between_groups_only_and_heal_undoes_it(lab: NetnsLab) -> None:
    lab.partition([[0], [1, 2]])
    assert not udp_ok(lab, 0, 1)
    assert not tcp_ok(lab, 1, 0)
    assert udp_ok(lab, 1, 2) and tcp_ok(lab, 2, 1)
    lab.heal()
    assert udp_ok(lab, 0, 1) and tcp_ok(lab, 1, 0) and udp_ok(lab, 0, 2)


def test_cut_survives_partition_and_heal(lab: NetnsLab) -> None:
    lab.cut(1)
    lab.partition([[0, 1], [2]])
    lab.heal()
    assert not udp_ok(lab, 0, 1)
    lab.restore(1)
    assert udp_ok(lab, 0, 1)


@pytest.mark.parametrize(
    "groups", [[[0], [0, 1]], [[0], []], [[3]], [[-1]], ["01"], [[0, 0]]]
)
def test_bad_partition_is_rejected_and_changes_nothing(lab: NetnsLab, groups: object) -> None:
    before = subprocess.run(["ip", "-n", lab.switch, "-o", "link"], capture_output=True,
                            text=True, check=True).stdout
    with pytest.raises(ValueError):
        lab.partition(groups)  # type: ignore[arg-type]
    after = subprocess.run(["ip", "-n", lab.switch, "-o", "link"], capture_output=True,
                           text=True, check=True).stdout
    assert after == before
    assert udp_ok(lab, 0, 1)


def test_teardown_kills_processes_even_stubborn_or_detached_ones() -> None:
    ignore_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    with NetnsLab(2, kill_grace=0.2) as lab:
        polite = lab.run(0, ["sleep", "60"])
        stubborn = lab.run(1, [sys.executable, "-c", ignore_term], stdout=subprocess.PIPE,
                           text=True)
        assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
        stubborn.stdout.close()
        lab.exec(1, ["setsid", "-f", "sleep", "60"], check=True, capture_output=False,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # escapes every group
        inside = pids_in([lab.hosts[1].netns])[lab.hosts[1].netns]
        assert stubborn.pid in inside and len(inside) == 2
        detached = next(pid for pid in inside if pid != stubborn.pid)
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert wait_until(lambda: dead(detached), timeout=2.0)
    assert not set(lab.namespaces) & set(netns_list())
    with pytest.raises(NetnsError):
        lab.run(0, ["true"])


def test_atexit_cleans_an_open_lab_and_stale_labs_are_swept() -> None:
    build = "from tests.netns.harness import NetnsLab; lab = NetnsLab(2).start(); print(lab.prefix)"
    normal = subprocess.run([sys.executable, "-c", build], cwd=ROOT, capture_output=True,
                            text=True, timeout=30, check=True)
    prefix = normal.stdout.strip()
    assert prefix and not [n for n in netns_list() if n.startswith(prefix + "-")]

    killed = subprocess.run(
        [sys.executable, "-c", build + "; import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert killed.returncode == -signal.SIGKILL
    prefix = killed.stdout.strip()
    leaked = sorted(n for n in netns_list() if n.startswith(prefix + "-"))
    assert len(leaked) == 3
    sweep_stale()  # (a concurrent test run's lab may sweep them first: same code, same result)
    assert not set(leaked) & set(netns_list())


async def test_http_and_trio_sockets_inside_the_lab(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello from host 1")
    with NetnsLab(2) as lab:
        lab.run(1, [sys.executable, "-m", "http.server", "-d", str(tmp_path), "8500"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with trio.fail_after(10):
            while True:
                try:
                    status, body = await lab.ahttp(1, "GET", "/hello.txt")
                    break
                except ConnectionRefusedError:
                    await trio.sleep(0.05)
        assert (status, body) == (200, b"hello from host 1")
        assert (await lab.ahttp(0, "GET", "/hello.txt", host=lab.hosts[1].addr))[0] == 200
        assert lab.http(0, "GET", "/missing", host=lab.hosts[1].addr)[0] == 404

        lab.cut(1)
        with pytest.raises(TimeoutError):
            lab.http(0, "GET", "/hello.txt", host=lab.hosts[1].addr, timeout=PROBE_TIMEOUT)
        assert (await lab.ahttp(1, "GET", "/hello.txt"))[0] == 200  # own loopback still works
        lab.restore(1)

        a = trio.socket.from_stdlib_socket(lab.socket(0, type=socket.SOCK_DGRAM))
        b = trio.socket.from_stdlib_socket(lab.socket(1, type=socket.SOCK_DGRAM))
        with a, b:
            await b.bind((lab.hosts[1].addr, 0))
            with trio.fail_after(2):
                await a.sendto(b"over trio", b.getsockname())
                data, peer = await b.recvfrom(64)
        assert data == b"over trio" and peer[0] == lab.hosts[0].addr


def test_wait_until_returns_the_first_truthy_value_or_times_out() -> None:
    calls = iter([0, None, "", 7, 8])
    assert wait_until(lambda: next(calls), timeout=5.0, interval=0.001) == 7
    with pytest.raises(TimeoutError):
        wait_until(lambda: False, timeout=0.01, interval=0.001)
