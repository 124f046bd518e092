"""The member record, the delegate hooks the layer above implements, and the counters.

Plain data shared by every part of :mod:`gossip.membership`; no behaviour beyond defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gossip.config import DEFAULT_VSN, Addr
from gossip.state import State

META_MAX_SIZE = 512
MAX_INCARNATION = (1 << 32) - 1  # uint32 on the wire: we never emit more


class WireCipher(Protocol):
    """What the core needs of a keyring (:class:`gossip.crypto.Keyring` is one)."""

    def encrypt_packet(self, plaintext: bytes) -> bytes: ...
    def decrypt_packet(self, blob: bytes) -> bytes: ...
    def encrypt_stream(self, plaintext: bytes) -> bytes: ...
    def decrypt_stream(self, header5: bytes, blob: bytes) -> bytes: ...


@dataclass(slots=True)
class Member:
    name: str
    addr: str
    port: int
    meta: bytes
    incarnation: int
    state: State
    state_change: float
    vsn: bytes = DEFAULT_VSN

    @property
    def address(self) -> Addr:
        return (self.addr, self.port)

    @property
    def pmax(self) -> int:
        return self.vsn[1] if len(self.vsn) > 1 else 0


class Delegate:
    """Hooks for the layer above (Serf).  The defaults do nothing."""

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, now: float, msg: bytes) -> None:
        pass

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return []

    def has_broadcasts(self) -> bool:
        return False

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, now: float, buf: bytes, join: bool) -> None:
        pass

    def notify_join(self, now: float, m: Member) -> None:
        pass

    def notify_leave(self, now: float, m: Member) -> None:
        pass

    def notify_update(self, now: float, m: Member) -> None:
        pass

    def notify_conflict(self, now: float, existing: Member, other: Addr) -> None:
        """An alive for ``existing.name`` came from another address (memberlist Conflict)."""


@dataclass
class Metrics:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    decode_errors: int = 0
    probes: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    tcp_pings: int = 0
    suspicions: int = 0
    refutes: int = 0
    deaths: int = 0
    push_pulls: int = 0
    streams_in: int = 0
    wrong_node_pings: int = 0
    incarnation_jumps_dropped: int = 0  # suspect/dead/alive implausibly far ahead
    extra: dict[str, int] = field(default_factory=dict)
