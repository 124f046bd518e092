#!/usr/bin/env python3
"""Capture real bytes from the ``serf`` 0.9.4 agent into ``tests/golden/`` (run by hand).

We play a fake memberlist node on 127.0.0.1 (a TCP listener and a UDP socket on one port),
start a real ``serf agent`` on 127.0.0.2, and ask it over its RPC port to join us.  serf then:

1. opens a TCP stream to us carrying a push-pull join (always LZW-compressed, ``[9]``, and,
   with ``-encrypt``, wrapped as ``[10][len][blob]``) -- saved raw;
2. reads our push-pull reply (a plain ``[6]`` stream listing our fake node, encrypted in the
   encrypted case), merges us, and starts probing and gossiping to us over UDP -- the first
   datagrams are saved raw;
3. and when we open a TCP push-pull to it, it answers with its own state -- saved raw too.

Before the plaintext join we fire user events with random payloads through the RPC port, so
serf's push-pull user state holds ~25 KB of incompressible data: its LZW stream runs past 4095
codes and contains clear codes written by Go's encoder.

Two runs: plaintext (with events) and ``-encrypt`` (fixed key, saved as ``serf_encrypt.key``).
Every subprocess is killed at the end; the whole script is bounded to well under 30 s.
Usage: ``.venv/bin/python scripts/capture_serf.py [--out tests/golden] [--serf /usr/bin/serf]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capture_frames import (  # noqa: E402
    ack,
    describe,
    pack,
    read_stream,
    unwrap_packet,
    unwrap_stream,
)

from gossip.crypto import Keyring  # noqa: E402

OUR_HOST = "127.0.0.1"
SERF_HOST = "127.0.0.2"
OUR_NAME = "golden-py"
SERF_NAME = "serf1"
# Fixed so that the capture is reproducible: 32 bytes, as `serf agent -encrypt` requires.
GOLDEN_KEY = b"rumor-golden-capture-key-32bytes"
VSN = bytes([1, 5, 2, 2, 5, 5])
EVENTS = 60
EVENT_PAYLOAD = 440  # name (3) + payload stays under serf's 512-byte encoded limit
UDP_WINDOW = 4.0  # seconds of listening after the join
UDP_MAX = 200  # kept in memory; two examples of each packet shape are saved
DEADLINE = 25.0  # whole script


def free_port() -> int:
    """A port free for both TCP and UDP on both hosts (best effort)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((OUR_HOST, 0))
            port = s.getsockname()[1]
        try:
            for host in (OUR_HOST, SERF_HOST):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as t:
                        t.bind((host, port))
        except OSError:
            continue
        return int(port)
    raise RuntimeError("no free port")


def our_push_pull(port: int, join: bool) -> bytes:
    """A plaintext push-pull stream listing only our fake node (no user state)."""
    header = {"Nodes": 1, "UserStateLen": 0, "Join": join}
    node = {
        "Name": OUR_NAME,
        "Addr": socket.inet_aton(OUR_HOST),
        "Port": port,
        "Meta": b"",
        "Incarnation": 1,
        "State": 0,
        "Vsn": VSN,
    }
    return b"\x06" + pack(header) + pack(node)


class FakeNode:
    """TCP + UDP on one port: records serf's streams and datagrams, answers push-pulls."""

    def __init__(self, port: int, keyring: Keyring | None) -> None:
        self.port = port
        self.keyring = keyring
        self.tcp = socket.create_server((OUR_HOST, port))
        self.tcp.settimeout(0.2)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((OUR_HOST, port))
        self.udp.settimeout(0.2)
        self.streams: list[bytes] = []
        self.packets: list[bytes] = []
        self.ignored_first_ping = False  # so that serf also sends a TCP fallback ping
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._accept_loop, daemon=True),
            threading.Thread(target=self._udp_loop, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def wrap(self, plain: bytes) -> bytes:
        return self.keyring.encrypt_stream(plain) if self.keyring else plain

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    raw = read_stream(conn)
                    self.streams.append(raw)
                    _, plain = unwrap_stream(raw, self.keyring)
                    if plain[0] == 0:  # fallback ping
                        ping = msgpack.unpackb(plain[1:], raw=True)
                        conn.sendall(self.wrap(ack(ping[b"SeqNo"])))
                    else:
                        conn.sendall(self.wrap(our_push_pull(self.port, join=True)))
                    conn.settimeout(1)
                    try:  # serf closes once it has read our reply
                        conn.recv(1)
                    except TimeoutError:
                        pass
                except (OSError, ValueError) as exc:
                    self.errors.append(f"tcp: {exc!r}")

    def _udp_loop(self) -> None:
        while not self.stop.is_set():
            try:
                data, src = self.udp.recvfrom(65536)
            except TimeoutError:
                continue
            if len(self.packets) < UDP_MAX:
                self.packets.append(data)
            try:
                _, messages = unwrap_packet(data, self.keyring)
            except (ValueError, KeyError, IndexError, struct.error) as exc:
                self.errors.append(f"udp: {exc!r}")
                continue
            for msg in messages:
                if msg[:1] != b"\x00":
                    continue
                if not self.ignored_first_ping:
                    self.ignored_first_ping = True
                    continue
                ping = msgpack.unpackb(msg[1:], raw=True)
                reply = ack(ping[b"SeqNo"])
                if self.keyring:
                    reply = self.keyring.encrypt_packet(reply)
                self.udp.sendto(reply, src)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        self.tcp.close()
        self.udp.close()


class SerfRPC:
    """Minimal client for serf's msgpack RPC (handshake, event, join)."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = socket.create_connection(addr, timeout=10)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.seq = 0
        self.call("handshake", {"Version": 1})

    def _next(self) -> Any:
        while True:
            try:
                return self.unpacker.unpack()
            except msgpack.OutOfData:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("serf RPC closed") from None
                self.unpacker.feed(chunk)

    def call(self, command: str, body: dict[str, Any], has_reply_body: bool = False) -> Any:
        self.seq += 1
        self.sock.sendall(pack({"Command": command, "Seq": self.seq}) + pack(body))
        header = self._next()
        if header.get("Error"):
            raise RuntimeError(f"serf RPC {command}: {header['Error']}")
        return self._next() if has_reply_body else None

    def close(self) -> None:
        self.sock.close()


def wait_for_port(addr: tuple[str, int], proc: subprocess.Popen[bytes], limit: float) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"serf agent exited early with {proc.returncode}")
        try:
            socket.create_connection(addr, timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"serf RPC {addr} did not open")


def event_payload(i: int, compressible: bool) -> bytes:
    if compressible:  # makes serf's gossip packets worth LZW-compressing
        return (b"rumor golden capture %d " % i) * 12
    return os.urandom(EVENT_PAYLOAD)


def run_case(
    serf: str, key: bytes | None, events: int, compressible: bool, log_path: Path
) -> dict[str, Any]:
    our_port, serf_port, rpc_port = free_port(), free_port(), free_port()
    keyring = Keyring([key]) if key else None
    node = FakeNode(our_port, keyring)
    cmd = [
        serf, "agent", f"-node={SERF_NAME}", f"-bind={SERF_HOST}:{serf_port}",
        f"-rpc-addr={SERF_HOST}:{rpc_port}", "-log-level=debug",
    ]
    if key:
        cmd.append("-encrypt=" + base64.b64encode(key).decode())
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"our_port": our_port, "serf_port": serf_port}
    try:
        wait_for_port((SERF_HOST, rpc_port), proc, 8)
        rpc = SerfRPC((SERF_HOST, rpc_port))
        try:
            for i in range(events):
                rpc.call("event", {"Name": f"g{i:02d}", "Payload": event_payload(i, compressible),
                                   "Coalesce": False})
            reply = rpc.call("join", {"Existing": [f"{OUR_HOST}:{our_port}"], "Replay": False},
                             has_reply_body=True)
            result["join_reply"] = reply
        finally:
            rpc.close()
        end = time.monotonic() + UDP_WINDOW
        while time.monotonic() < end and not (
            len(node.packets) >= UDP_MAX and len(node.streams) >= 2
        ):
            time.sleep(0.05)
        # Now we initiate: serf answers our push-pull with its own (compressed) state.
        with socket.create_connection((SERF_HOST, serf_port), timeout=5) as conn:
            conn.sendall(node.wrap(our_push_pull(our_port, join=False)))
            result["reply_stream"] = read_stream(conn)
    finally:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)
        node.close()
    result["streams"] = list(node.streams)
    result["packets"] = list(node.packets)
    result["errors"] = node.errors
    return result


def _on_alarm(signum: int, frame: object) -> None:
    raise TimeoutError("capture took too long")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent
                    / "tests" / "golden")
    ap.add_argument("--serf", default="/usr/bin/serf")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(DEADLINE))  # the finally blocks above still kill serf
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    version = subprocess.run([args.serf, "version"], capture_output=True, text=True,
                             timeout=5).stdout.splitlines()[0]
    manifest: dict[str, Any] = {
        "serf_version": version,
        "key_file": "serf_encrypt.key",
        "our_node": {"name": OUR_NAME, "addr": OUR_HOST, "vsn": list(VSN)},
        "serf_node": {"name": SERF_NAME, "addr": SERF_HOST},
        "cases": {},
        "files": {},
    }
    files: dict[str, tuple[bytes, dict[str, Any]]] = {}
    cases = [("plain", None, EVENTS, False), ("encrypted", GOLDEN_KEY, 4, True)]
    for label, key, events, compressible in cases:
        keyring = Keyring([key]) if key else None
        res = run_case(args.serf, key, events, compressible, Path(f"/tmp/capture_{label}.log"))
        if res["errors"]:
            print(f"{label}: errors: {res['errors']}", file=sys.stderr)
        manifest["cases"][label] = {"our_port": res["our_port"], "serf_port": res["serf_port"],
                                    "events_fired": events, "encrypted": key is not None,
                                    "event_payloads": "compressible text" if compressible
                                    else f"{EVENT_PAYLOAD} random bytes"}
        names = {6: "pushpull_join", 0: "ping"}
        for raw in res["streams"]:
            layers, plain = unwrap_stream(raw, keyring)
            name = f"serf_tcp_{label}_{names.get(plain[0], f'type{plain[0]}')}.bin"
            if name not in files:
                files[name] = (raw, {"case": label, "transport": "tcp", "direction":
                                     "serf -> us (serf initiated)",
                                     "layers": describe(layers, [plain])})
        layers, plain = unwrap_stream(res["reply_stream"], keyring)
        files[f"serf_tcp_{label}_pushpull_reply.bin"] = (res["reply_stream"], {
            "case": label, "transport": "tcp", "direction": "serf -> us (reply to our push-pull)",
            "layers": describe(layers, [plain])})
        seen: dict[str, int] = {}
        index = 0
        for pkt in res["packets"]:
            desc = describe(*unwrap_packet(pkt, keyring))
            if seen.get(desc, 0) >= 2:  # keep two examples of each shape
                continue
            seen[desc] = seen.get(desc, 0) + 1
            files[f"serf_udp_{label}_{index:02d}.bin"] = (pkt, {
                "case": label, "transport": "udp", "direction": "serf -> us", "layers": desc})
            index += 1
        if not any(n.startswith(f"serf_tcp_{label}_pushpull_join") for n in files):
            print(f"{label}: serf never opened a push-pull stream", file=sys.stderr)
            return 1
    for old in out.glob("serf_*.bin"):
        old.unlink()
    for name, (data, info) in sorted(files.items()):
        (out / name).write_bytes(data)
        manifest["files"][name] = {"length": len(data), **info}
        print(f"{name:40s} {len(data):6d} B  {info['layers']}")
    (out / "serf_encrypt.key").write_text(base64.b64encode(GOLDEN_KEY).decode() + "\n")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    signal.alarm(0)
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
