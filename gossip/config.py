"""Gossip timing and sizing knobs (memberlist's LAN / WAN / Local profiles) and effects.

The effects are what the sans-IO cores ask their shell to do: send a datagram, run a TCP
exchange.  They are plain frozen dataclasses so the simulator can route them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

Addr = tuple[str, int]

# Serf's UserEventSizeLimit hard cap: name + payload of one user event, whatever the
# configured limit (the one owner of this figure; the agent's -event-size-limit checks it)
USER_EVENT_SIZE_HARD_LIMIT = 9 * 1024


def parse_join_address(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``v6`` or ``[v6]:port`` as memberlist takes a join address;
    without a port, ``default_port`` (our own gossip port, as memberlist does).

    The host is not resolved.  ValueError (``invalid address ...`` / ``invalid port in
    address ...``) on empty text, whitespace, a bad bracket or a port outside 1..65535."""
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"invalid address {text!r}")
    host, port = text, default_port
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {text!r}")
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text)
    if not host:
        raise ValueError(f"invalid address {text!r}")
    return host, port


def _port(text: str, whole: str) -> int:
    if not (text.isdigit() and 1 <= int(text) <= 65535):
        raise ValueError(f"invalid port in address {whole!r}")
    return int(text)

# [PMin, PMax, PCur, DMin, DMax, DCur]: memberlist 1..5 speaking 2; Serf delegate 2..5 speaking 5.
DEFAULT_VSN = bytes([1, 5, 2, 2, 5, 5])


@dataclass(frozen=True)
class GossipConfig:
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    push_pull_interval: float = 30.0
    tcp_timeout: float = 10.0
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    awareness_max_multiplier: int = 8
    udp_buffer_size: int = 1400
    tcp_pings: bool = True
    compress: bool = False  # we always *accept* LZW; sending it only saves bytes, costs CPU
    verify_incoming: bool = True
    # rumor additions (Serf has no equivalent or uses slower fixed values)
    gossip_on_new: bool = True  # forward fresh broadcasts at once instead of on the next tick
    gossip_on_new_gap: float = 0.005  # ...but at most one such extra round per 5 ms (batching)
    reconnect_interval: float = 5.0  # Serf: 30 s; how often to push-pull a random failed member
    catch_up_push_pull: bool = True  # after joining, push-pull again at 1, 2, 4, ... s
    # rumor: how far a received incarnation may be ahead of the one we hold (for any member,
    # us included).  Legitimate increments are refutes and tag changes, one at a time, so
    # 65,536 is years of flapping; a forged suspect/dead/alive further ahead is dropped
    # (memberlist would accept it, and a refute past 2**32-1 cannot be expressed).
    max_incarnation_jump: int = 1 << 16
    # rumor: members a stranger announced are only admitted once they answer our ping
    # (gossip/admission.py): at most this many new names per packet or stream, this many
    # waiting at once, this many verification pings per second, for this many intervals.
    admit_per_message: int = 64
    admit_pending_max: int = 1024
    admit_pings_per_second: float = 200.0
    admit_attempts: int = 5
    admit_delay: float = 0.5  # before the first ping (a member's word admits it meanwhile)
    # rumor: inbound gossip TCP exchanges served at once (each bounded by tcp_timeout);
    # more are closed at once and counted (memberlist: unbounded)
    max_inbound_streams: int = 32

    @classmethod
    def lan(cls) -> GossipConfig:
        return cls()

    @classmethod
    def wan(cls) -> GossipConfig:
        return cls(probe_interval=5.0, probe_timeout=3.0, suspicion_mult=6,
                   push_pull_interval=60.0, tcp_timeout=30.0, gossip_interval=0.5,
                   gossip_nodes=4, gossip_to_the_dead_time=60.0)

    @classmethod
    def local(cls) -> GossipConfig:
        return cls(probe_timeout=0.2, indirect_checks=1, retransmit_mult=2, suspicion_mult=3,
                   push_pull_interval=15.0, tcp_timeout=1.0, gossip_interval=0.1,
                   gossip_to_the_dead_time=15.0)

    @classmethod
    def profile(cls, name: str) -> GossipConfig:
        try:
            return {"lan": cls.lan, "wan": cls.wan, "local": cls.local}[name]()
        except KeyError:
            raise ValueError(f"unknown gossip profile {name!r} (lan, wan, local)") from None

    def with_(self, **kw: object) -> GossipConfig:
        return replace(self, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SendPacket:
    """Send one UDP datagram."""

    addr: Addr
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Open TCP to ``addr``, write ``data``; if ``expect_reply`` read one complete reply and
    hand it to the core's ``stream_reply(now, token, reply_or_None)``."""

    addr: Addr
    data: bytes
    token: int
    expect_reply: bool = True


Effect = SendPacket | StreamRequest
