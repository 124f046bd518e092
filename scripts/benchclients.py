"""One uniform client per agent for both systems, used by scripts/benchlib.py's `Cluster`:
`RumorClient` (HTTP keep-alive, Consul API) and `SerfClient` (the serf agent's msgpack RPC
over one TCP connection, so polling does not pay a CLI start-up per call). Every call here
has a timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

RUMOR_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


class RumorClient:
    """One keep-alive HTTP connection to one rumor agent (use from one thread only)."""

    def __init__(self, ip: str, port: int = 8500, timeout: float = 10.0) -> None:
        self.ip, self.port, self.timeout = ip, port, timeout
        self.conn = http.client.HTTPConnection(ip, port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def members(self) -> dict[str, str]:
        status, _, body = self.request("GET", "/v1/agent/members")
        if status != 200:
            raise RuntimeError(f"members: HTTP {status}")
        return {m["Name"]: RUMOR_STATUS.get(m["Status"], str(m["Status"]))
                for m in json.loads(body)}

    def join(self, addr: str) -> None:
        status, _, body = self.request("PUT", f"/v1/agent/join/{addr}")
        if status != 200:
            raise RuntimeError(f"join: HTTP {status} {body!r}")

    def leave(self) -> None:
        self.request("PUT", "/v1/agent/leave")

    def fire(self, name: str, payload: bytes) -> None:
        status, _, body = self.request("PUT", f"/v1/event/fire/{name}", payload)
        if status != 200:
            raise RuntimeError(f"fire: HTTP {status} {body!r}")

    def close(self) -> None:
        self.conn.close()


class SerfClient:
    """The serf agent's RPC protocol (msgpack header [+ body]) over one TCP connection."""

    def __init__(self, rpc_addr: str, timeout: float = 10.0) -> None:
        import msgpack
        host, _, port = rpc_addr.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.unpacker = msgpack.Unpacker(raw=False, unicode_errors="replace")
        self.packb = msgpack.packb
        self.seq = 0
        self.call("handshake", {"Version": 1})

    def _next(self) -> Any:
        while True:
            try:
                return next(self.unpacker)
            except StopIteration:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("serf RPC connection closed") from None
                self.unpacker.feed(data)

    def send(self, command: str, body: dict[str, Any] | None = None) -> int:
        self.seq += 1
        out = self.packb({"Command": command, "Seq": self.seq})
        if body is not None:
            out += self.packb(body, use_bin_type=True)
        self.sock.sendall(out)
        return self.seq

    def call(self, command: str, body: dict[str, Any] | None = None,
             reply_body: bool = False) -> Any:
        seq = self.send(command, body)
        header = self._next()
        if header.get("Seq") != seq:
            raise RuntimeError(f"serf RPC: reply seq {header.get('Seq')} != {seq}")
        if header.get("Error"):
            raise RuntimeError(f"serf RPC {command}: {header['Error']}")
        return self._next() if reply_body else None

    def members(self) -> dict[str, str]:
        return {m["Name"]: m["Status"] for m in self.call("members", reply_body=True)["Members"]}

    def join(self, addr: str) -> None:
        self.call("join", {"Existing": [addr], "Replay": False}, reply_body=True)

    def leave(self) -> None:
        self.call("leave")

    def fire(self, name: str, payload: bytes) -> None:
        self.call("event", {"Name": name, "Payload": payload, "Coalesce": False})

    def subscribe(self, types: str = "user") -> None:
        """Start an event stream on this connection (then only call next_event)."""
        self.call("stream", {"Type": types})

    def next_event(self) -> tuple[float, str, bytes]:
        """Block for the next streamed user event: (receipt time.time(), name, payload)."""
        self._next()  # header, tagged with the stream's Seq
        body = self._next()
        now = time.time()
        payload = body.get("Payload") or b""
        if isinstance(payload, str):
            payload = payload.encode()
        return now, body.get("Name", ""), payload

    def close(self) -> None:
        self.sock.close()


Client = RumorClient | SerfClient


# --- clusters -------------------------------------------------------------------------------
