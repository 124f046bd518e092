"""Serf's snapshot for the agent: the Lamport clocks and the known members, kept in
``<data_dir>/serf/local.snapshot`` (the path Consul uses) so a restarted agent rejoins the
members it knew and its clocks never go backwards.

The file is Serf's (serf/snapshot.go): an append-only log of lines ::

    alive: NAME ADDR:PORT        a member joined (or came back)
    not-alive: NAME              it left or failed
    clock: N                     last member (intent) Lamport time seen
    event-clock: N               last user-event Lamport time seen
    query-clock: N               last query Lamport time seen
    leave                        we left the cluster gracefully

Lines are buffered and appended at most once per ``FLUSH_INTERVAL`` (the agent samples the
clocks on the same tick); when the log grows past ``max(128 KiB, 2 x 128 B x members)`` it is
rewritten compactly and atomically renamed over the old one.

Replay: later lines win.  After ``leave`` the members are forgotten (unless
``rejoin_after_leave``, Consul's option), as Serf does; unlike Serf the clocks are kept, so they
never go backwards.  Everything read is range-checked; a bad line is skipped with a warning
naming the file and line, and an unreadable file is ignored: a snapshot never keeps the agent
from starting.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path

from agent.datadir import replace_file
from gossip import Clocks

log = logging.getLogger("rumor.agent")

SNAPSHOT_FILE = Path("serf") / "local.snapshot"
FLUSH_INTERVAL = 0.5  # serf flushInterval / clockUpdateInterval
MIN_COMPACT_SIZE = 128 * 1024  # serf snapshotSizeLimit
BYTES_PER_NODE = 128
COMPACTION_THRESHOLD = 2
MAX_FILE_BYTES = 64 << 20  # a snapshot larger than this is not read at all
MAX_LINE = 4096
MAX_NAME = 1024
MAX_MEMBERS = 100_000
MAX_WARNINGS = 10
MAX_CLOCK = (1 << 63) - 1  # Lamport times are uint64 on the wire: leave room to advance


@dataclass
class Previous:
    """What a replay recovered."""

    clocks: Clocks = Clocks(0, 0, 0)
    members: dict[str, str] = field(default_factory=dict)  # name -> "ip:port"


def parse_addr(text: str) -> tuple[str, int]:
    """``ip:port`` or ``[v6]:port`` as Go's TCPAddr.String() writes it; ValueError if not."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad address {text!r}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"bad address {text!r}")
    ip = ipaddress.ip_address(host)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad port in address {text!r}")
    return str(ip), int(port)


def format_addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _clock(text: str) -> int:
    if not text.isdigit() or len(text) > 20 or int(text) > MAX_CLOCK:
        raise ValueError(f"clock value {text[:40]!r} is not an integer 0..{MAX_CLOCK}")
    return int(text)


def _name(text: str) -> str:
    if not text or len(text) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"bad node name {text[:40]!r}")
    return text


def replay(path: Path, rejoin_after_leave: bool = False) -> Previous:
    """Read a snapshot; never raises (problems are logged with the file and line)."""
    prev = Previous()
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            log.warning("agent: snapshot %s is %d bytes (limit %d): ignored", path, size,
                        MAX_FILE_BYTES)
            return prev
        data = path.read_bytes()
    except FileNotFoundError:
        return prev
    except OSError as exc:
        log.warning("agent: snapshot %s unreadable, ignored: %s", path, exc.strerror or exc)
        return prev
    member, event, query = 0, 0, 0
    warnings = 0
    lines = data.split(b"\n")
    torn = lines.pop()  # text after the last newline: a torn final write
    for n, raw in enumerate(lines, start=1):
        try:
            if len(raw) > MAX_LINE:
                raise ValueError(f"line longer than {MAX_LINE} bytes")
            line = raw.decode("utf-8")
            if line.startswith("alive: "):
                name, sep, addr = line[len("alive: "):].rpartition(" ")
                if not sep:
                    raise ValueError("alive line without an address")
                parse_addr(addr)
                if name not in prev.members and len(prev.members) >= MAX_MEMBERS:
                    raise ValueError(f"more than {MAX_MEMBERS} members")
                prev.members[_name(name)] = addr
            elif line.startswith("not-alive: "):
                prev.members.pop(_name(line[len("not-alive: "):]), None)
            elif line.startswith("clock: "):
                member = _clock(line[len("clock: "):])
            elif line.startswith("event-clock: "):
                event = _clock(line[len("event-clock: "):])
            elif line.startswith("query-clock: "):
                query = _clock(line[len("query-clock: "):])
            elif line == "leave":
                if not rejoin_after_leave:
                    prev.members.clear()
            elif line.startswith(("#", "coordinate: ")) or not line:
                continue
            else:
                raise ValueError(f"unrecognized line {line[:40]!r}")
        except (ValueError, UnicodeDecodeError) as exc:
            warnings += 1
            if warnings <= MAX_WARNINGS:
                log.warning("agent: snapshot %s line %d skipped: %s", path, n, exc)
    if warnings > MAX_WARNINGS:
        log.warning("agent: snapshot %s: %d bad lines in all", path, warnings)
    if torn:
        log.warning("agent: snapshot %s line %d is incomplete (torn write), skipped", path,
                    len(lines) + 1)
    prev.clocks = Clocks(member, event, query)
    return prev


class Snapshotter:
    """Appends member changes and clock advances to the snapshot, compacting it when big."""

    def __init__(self, path: Path, previous: Previous) -> None:
        self.path = path
        self.members = dict(previous.members)
        self.clocks = previous.clocks
        self.leaving = False
        self._pending: list[str] = []
        self._size = 0
        self._broken = False
        try:
            self._size = path.stat().st_size
        except OSError:
            self._size = 0

    # --- recording -----------------------------------------------------------------------

    def alive(self, name: str, ip: str, port: int) -> None:
        if self.leaving:
            return
        addr = format_addr(ip, port)
        self.members[name] = addr
        self._pending.append(f"alive: {name} {addr}\n")

    def not_alive(self, name: str) -> None:
        if self.leaving:
            return
        if self.members.pop(name, None) is not None:
            self._pending.append(f"not-alive: {name}\n")

    def update_clocks(self, clocks: Clocks) -> None:
        """Record clocks that moved forward (they never move back here)."""
        old = self.clocks
        for label, new, was in (("clock", clocks.member, old.member),
                                ("event-clock", clocks.event, old.event),
                                ("query-clock", clocks.query, old.query)):
            if new > was:
                self._pending.append(f"{label}: {new}\n")
        self.clocks = Clocks(max(old.member, clocks.member), max(old.event, clocks.event),
                             max(old.query, clocks.query))

    def leave(self, clocks: Clocks) -> None:
        """We leave gracefully: Serf forgets the members on the next start."""
        self.update_clocks(clocks)
        self._pending.append("leave\n")
        self.leaving = True
        self.flush()

    # --- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Append what is pending (called at most every FLUSH_INTERVAL, and at shutdown)."""
        if not self._pending or self._broken:
            return
        data = "".join(self._pending).encode()
        self._pending.clear()
        limit = max(MIN_COMPACT_SIZE,
                    BYTES_PER_NODE * len(self.members) * COMPACTION_THRESHOLD)
        try:
            if self._size + len(data) > limit:
                self.compact()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as fh:
                fh.write(data)
            self._size += len(data)
        except OSError as exc:
            self._broken = True
            log.error("agent: snapshot %s cannot be written, no longer updated: %s",
                      self.path, exc.strerror or exc)

    def compact(self) -> None:
        """Rewrite the snapshot with only the current state, atomically."""
        lines = [f"alive: {n} {a}\n" for n, a in self.members.items()]
        c = self.clocks
        lines += [f"clock: {c.member}\n", f"event-clock: {c.event}\n",
                  f"query-clock: {c.query}\n"]
        if self.leaving:
            lines.append("leave\n")
        data = "".join(lines).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(self.path, data)
        self._size = len(data)
