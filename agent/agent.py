"""The agent: one gossip node plus the Consul-style event store, catalog and metrics.

Owns the glue between the gossip library (which knows nothing of Consul) and the HTTP API:
firing an event (validation, Consul encoding, Serf broadcast), ingesting delivered events
(decode, node/service/tag filters, store), membership in Consul's JSON shapes, join with
retry, graceful leave.  The HTTP handlers in ``agent.api`` are thin wrappers around this.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from agent.acl import ALLOW_ALL
from agent.bus import Bus, MayRead, Record, allow_all
from agent.catalog import Catalog
from agent.config import RELOADABLE, AgentConfig
from agent.datadir import prepare_data_dir
from agent.errors import (
    EventClockExhausted,
    EventTooLarge,
    InvalidEvent,
    JoinError,
    NotDurable,
    ReloadError,
)
from agent.events import (
    Event,
    EventStore,
    decode_serf_event,
    encode_consul_event,
    gossip_form,
    make_event,
    serf_event_name,
)
from agent.filters import go_regexp_search, should_process
from agent.keyring import KEYRING_FILE, startup_keys, write_keyring_file
from agent.meta import node_tags
from agent.sinks import SinkManager
from agent.snapshot import FLUSH_INTERVAL, SNAPSHOT_FILE, Snapshotter, replay
from agent.version import VERSION
from gossip import (
    USER_EVENT_SIZE_HARD_LIMIT,
    Addr,
    ClockExhausted,
    Delivery,
    GossipConfig,
    GossipNode,
    KeyResponse,
    Keyring,
    MemberEvent,
    MemberStatus,
    NameConflict,
    SerfConfig,
    SerfError,
    SerfMember,
    parse_join_address,
)
from gossip import UserEvent as SerfUserEvent

log = logging.getLogger("rumor.agent")

RESERVED_PREFIX = "_"


ReloadHook = Callable[[AgentConfig], Callable[[], None]]  # check new config -> apply it


@dataclass
class AgentMetrics:
    events_fired: int = 0
    events_received: int = 0
    events_filtered: int = 0
    events_ignored: int = 0
    events_stored: int = 0
    events_deduped: int = 0
    events_undecodable: int = 0
    acl_denied: int = 0  # requests refused with 403 (missing right or unknown token)


async def resolve(host: str, port: int) -> Addr:
    """First IPv4 address of ``host`` (a name or an IP)."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise JoinError(f"cannot resolve {host!r}: {exc}") from None
    if not infos:
        raise JoinError(f"cannot resolve {host!r}: no IPv4 address")
    ip = infos[0][4][0]
    return (str(ip), port)


def default_advertise(bind: str) -> str:
    """The address peers should use when we bind to all interfaces."""
    if bind not in ("0.0.0.0", ""):
        return bind
    try:
        ip = socket.gethostbyname(socket.gethostname())
        if not ip.startswith("127."):
            return ip
    except OSError:
        pass
    return "127.0.0.1"


def member_json(m: SerfMember) -> dict[str, Any]:
    """One member as ``/v1/agent/members`` renders it."""
    vsn = list(m.vsn) + [0] * (6 - len(m.vsn))
    return {"Name": m.name, "Addr": m.addr, "Port": m.port, "Tags": dict(m.tags),
            "Status": int(m.status), "ProtocolMin": vsn[0], "ProtocolMax": vsn[1],
            "ProtocolCur": vsn[2], "DelegateMin": vsn[3], "DelegateMax": vsn[4],
            "DelegateCur": vsn[5]}


class Agent:
    def __init__(self, config: AgentConfig, *, gossip: GossipConfig | None = None) -> None:
        self.config = config
        self.node_name = config.node_name or socket.gethostname()
        self.started = time.time()
        self.metrics = AgentMetrics()
        data = Path(config.data_dir) if config.data_dir else None
        if data is not None:
            prepare_data_dir(data)  # DataFileError naming the path when unusable
        self.store = EventStore(config.event_buffer, data / "events.jsonl" if data else None)
        # events fired here that our own filters keep out of ``store``: durable too, and
        # offered to peers after a restart like the stored ones; never listed
        self.outbox = EventStore(config.event_buffer, data / "outbox.jsonl" if data else None)
        self.catalog = Catalog(data / "services.json" if data else None)
        self.bus = Bus(config.stream_buffer, data / "bus.log" if data else None)
        self.sinks = SinkManager(self.bus, data / "sinks.json" if data else None)
        keys = startup_keys(data, config.encrypt_key())  # KeyringFileError stops the start
        keyring = Keyring(keys) if keys else None
        self.tags = node_tags(config.datacenter, config.node_meta)  # size checked in config
        bind = (config.bind_addr, config.serf_lan_port)
        advertise = (config.advertise_addr or default_advertise(config.bind_addr),
                     config.serf_lan_port)
        self.node = GossipNode(
            self.node_name, bind, advertise=advertise, tags=self.tags,
            gossip=gossip or GossipConfig.profile(config.gossip_profile),
            serf=SerfConfig(event_size_limit=config.event_size_limit), keyring=keyring,
            on_delivery=self._on_delivery)
        self.acls = config.acls()
        self.bus.access = self._bus_reader  # streams and WebSockets see what the token may read
        self.reloader: Callable[[], AgentConfig] | None = None  # re-reads flags, files, env
        self.reload_hooks: list[ReloadHook] = []
        if data is not None and keyring is not None:
            path = data / KEYRING_FILE
            self.node.keyring_saver = lambda ks: write_keyring_file(path, ks)
        self.node.tag_matcher = go_regexp_search
        self._key_lock = trio.Lock()  # one cluster key operation at a time (Serf KeyManager)
        self.snapshot: Snapshotter | None = None
        self.previous_members: dict[str, str] = {}  # from the snapshot: name -> "ip:port"
        if data is not None:
            prev = replay(data / SNAPSHOT_FILE, config.rejoin_after_leave)
            self.node.restore_clocks(prev.clocks)
            self.previous_members = {n: a for n, a in prev.members.items()
                                     if n != self.node_name}
            self.snapshot = Snapshotter(data / SNAPSHOT_FILE, prev)
        self.leaving = False
        self.shutdown = trio.Event()
        self.fatal: str | None = None  # why the agent stopped itself (exit status 1)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Bind the gossip port and start the node (BindError names the address).

        History policy (what a join replays): a new agent, whose store is empty, takes the
        events its peers still buffer, so a late joiner lists what was fired before it came.
        A restarted agent keeps its store in ``data_dir`` and must not replay what it already
        saw: events it holds are deduped by ID, and once older events were evicted (their IDs
        are gone) anything older than its oldest held event is ignored, like Serf's snapshot
        ``eventMinTime``.  Events fired while it was down still arrive.
        """
        await nursery.start(self.node.run)
        nursery.start_soon(self.sinks.run)
        nursery.start_soon(self.bus.run_heartbeats)
        if max(self.store.max_ltime, self.outbox.max_ltime):
            self.node.witness_event_time(max(self.store.max_ltime, self.outbox.max_ltime))
        if len(self.store) and self.store.first_seq > 1:
            self.node.ignore_events_before(min(ev.ltime for ev in self.store))
        # offer what we hold (e.g. fired and acknowledged just before a crash) to peers that
        # lack it: push-pull carries the event buffer; nothing is delivered here again
        offered = self.node.remember_events(
            gossip_form(ev) for store in (self.store, self.outbox) for ev in store)
        if offered:
            log.info("agent: offering %d stored events to peers", offered)
        if self.snapshot is not None:
            nursery.start_soon(self._snapshot_loop)
            if self.previous_members and not self.config.start_join and \
                    not self.config.retry_join:
                nursery.start_soon(self.rejoin)

    async def persist(self, ev: Event) -> None:
        """Return once ``ev`` (just fired) is durable in the data dir; NotDurable otherwise."""
        errors = self.store.persist_errors + self.outbox.persist_errors
        try:
            await self.store.sync()
            await self.outbox.sync()
        except OSError as exc:
            raise NotDurable(f"event {ev.id} was sent but is not durable: {exc}") from None
        if self.store.persist_errors + self.outbox.persist_errors != errors:
            raise NotDurable(f"event {ev.id} was sent but could not be written to the "
                             "data dir (see the agent's log)")

    async def _snapshot_loop(self) -> None:
        assert self.snapshot is not None
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            self.snapshot.update_clocks(self.node.clocks())
            self.snapshot.flush()

    async def rejoin(self) -> None:
        """Serf's rejoin: try the snapshot's members one at a time, in random order."""
        known = list(self.previous_members.items())
        random.shuffle(known)
        for name, addr in known:
            log.info("agent: attempting re-join to previously known node %s (%s)", name, addr)
            try:
                await self.join([addr])
            except JoinError:
                continue
            log.info("agent: re-joined via previously known node %s (%s)", name, addr)
            return
        log.warning("agent: failed to re-join any previously known node")

    def close(self) -> None:
        """Flush and close what must survive a restart (event store, outbox, snapshot)."""
        self.store.close()
        self.outbox.close()
        self.bus.close()
        if self.snapshot is not None and self.node.running:
            self.snapshot.update_clocks(self.node.clocks())
            self.snapshot.flush()

    async def join(self, addresses: list[str], *, ignore_old: bool = False) -> int:
        """Join via each address; JoinError if none answered.

        ``ignore_old=True`` is Consul's join (no history at all); the agent's own joins use
        False, see ``start`` for why that replays nothing already seen.  An address without
        a port uses our own gossip port, as memberlist does.
        """
        addrs: list[Addr] = []
        errors: list[str] = []
        for text in addresses:
            try:
                host, port = parse_join_address(text.strip(), self.config.serf_lan_port
                                                or self.node.port)
                addrs.append(await resolve(host, port))
            except (ValueError, JoinError) as exc:
                errors.append(str(exc))
        n = await self.node.join(addrs, ignore_old=ignore_old) if addrs else 0
        if n == 0:
            detail = "; ".join(errors) or "no address answered"
            raise JoinError(f"failed to join any of {', '.join(addresses)}: {detail}")
        log.info("agent: joined %d of %s", n, ", ".join(addresses))
        return n

    async def retry_join(self) -> None:
        """Consul's -retry-join: keep trying every retry_interval until one join succeeds."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.join(list(self.config.retry_join))
                return
            except JoinError as exc:
                if self.config.retry_max and attempt >= self.config.retry_max:
                    log.error("agent: retry-join gave up after %d attempts: %s", attempt, exc)
                    self.fatal = f"retry-join gave up after {attempt} attempts: {exc}"
                    self.shutdown.set()
                    return
                log.warning("agent: retry-join attempt %d failed: %s", attempt, exc)
            await trio.sleep(self.config.retry_interval)

    async def leave(self) -> None:
        if self.leaving:
            return
        self.leaving = True
        log.info("agent: graceful leave")
        if self.snapshot is not None:
            self.snapshot.leave(self.node.clocks())
        # memberlist's Leave waits for the broadcast only if anyone is alive to hear it;
        # alone, the departure can never be gossiped, so waiting would just time out
        peers = any(m.status is MemberStatus.ALIVE and m.name != self.node_name
                    for m in self.node.members())
        await self.node.leave(timeout=None if peers else 0.0)

    def reload(self) -> None:
        """Re-read the configuration; apply ACLs, log level and TLS files, or change nothing
        (ReloadError) if any of it is invalid.  Other settings need a restart."""
        if self.reloader is None:
            raise ReloadError("this agent has no configuration source to re-read")
        try:
            new = self.reloader()
            acls = new.acls()
            commits = [hook(new) for hook in self.reload_hooks]
        except ValueError as exc:  # ConfigError, ACLError, TLSConfigError
            raise ReloadError(str(exc)) from None
        self.acls = acls
        for commit in commits:
            commit()
        self.config = dataclasses.replace(self.config,
                                          **{k: getattr(new, k) for k in RELOADABLE})
        log.info("agent: reloaded configuration (ACLs %s, log level %s)",
                 "enabled" if new.acl_enabled else "disabled", new.log_level)

    # --- events ------------------------------------------------------------------------------

    def fire(self, name: str, payload: bytes | None, *, node: str = "", service: str = "",
             tag: str = "", dc: str | None = None) -> Event:
        """Validate, encode and broadcast an event; InvalidEvent, EventTooLarge or
        EventClockExhausted (``agent.errors``) if refused."""
        if not name:
            raise InvalidEvent("Missing name")
        if name.startswith(RESERVED_PREFIX):
            raise InvalidEvent(f"Event name {name!r} is reserved: names starting with "
                               "'_' are for internal use")
        if dc and dc != self.config.datacenter:
            raise InvalidEvent(f"No path to datacenter {dc!r} (this agent serves "
                               f"{self.config.datacenter!r})")
        try:
            ev = make_event(name, payload or None, node_filter=node, service_filter=service,
                            tag_filter=tag)
        except ValueError as exc:
            raise InvalidEvent(str(exc)) from None
        blob = encode_consul_event(ev)
        serf_name = serf_event_name(ev)
        limit = self.config.event_size_limit
        size = len(serf_name.encode()) + len(blob)
        if size > limit:
            raise EventTooLarge(f"user event exceeds configured limit of {limit} bytes "
                                f"before encoding: {size} bytes (name + payload + Consul's "
                                f"envelope); the agent's event_size_limit can be raised to "
                                f"{USER_EVENT_SIZE_HARD_LIMIT}")
        try:
            ltime = self.node.user_event(serf_name, blob)
        except ClockExhausted as exc:
            raise EventClockExhausted(f"cannot fire: the event clock cannot advance ({exc})"
                                      ) from None
        except SerfError as exc:
            raise EventTooLarge(str(exc)) from None
        self.metrics.events_fired += 1
        if ev.id not in self.store:  # our own node/service/tag filter kept it out
            self.outbox.add(dataclasses.replace(ev, ltime=ltime))
        return ev

    def _on_delivery(self, d: Delivery) -> None:
        if isinstance(d, SerfUserEvent):
            self.metrics.events_received += 1
            try:
                ev = decode_serf_event(d.name, d.payload, d.ltime)
            except ValueError as exc:
                self.metrics.events_undecodable += 1
                log.warning("agent: dropped undecodable event %r: %s", d.name, exc)
                return
            if ev is None or ev.name == "_rexec":
                self.metrics.events_ignored += 1
                return
            if not should_process(ev, self.node_name, self.catalog.services):
                self.metrics.events_filtered += 1
                return
            if self.store.add(ev):
                self.metrics.events_stored += 1
                self.bus.publish_event(ev.to_json())
                log.debug("agent: new event %s %s (ltime %d)", ev.name, ev.id, ev.ltime)
            else:
                self.metrics.events_deduped += 1
        elif isinstance(d, MemberEvent):
            log.info("serf: member %s: %s %s:%d", d.kind, d.member.name, d.member.addr,
                     d.member.port)
            self.bus.publish_member(d.kind, member_json(d.member))
            if self.snapshot is not None:
                if d.kind == "join":
                    self.snapshot.alive(d.member.name, d.member.addr, d.member.port)
                elif d.kind in ("leave", "failed"):
                    self.snapshot.not_alive(d.member.name)
        elif isinstance(d, NameConflict):  # Serf shuts down; the serf agent then quits
            self.fatal = (f"node name {self.node_name!r} is taken by another node "
                          f"(name conflict resolution: {d.matching} of {d.responses} "
                          "answers side with us)")
            log.error("agent: %s", self.fatal)
            self.shutdown.set()

    def _bus_reader(self, token: str | None) -> MayRead:
        """Which bus records a token may read: events by ``event:read`` on their name, member
        changes by ``node:read`` on the node (as Consul filters its lists); the stream's own
        records (Gap, Closed) always.  ACLNotFound for an unknown token."""
        authz = self.acls.resolve(token)
        if authz is ALLOW_ALL:
            return allow_all

        def may_read(r: Record) -> bool:
            if r.topic == "Event":
                return authz.event_read(r.key)
            if r.topic == "Node":
                return authz.node_read(r.key)
            return True
        return may_read

    # --- keyring -----------------------------------------------------------------------------

    async def keyring_operation(self, op: str, key: bytes = b"",
                                relay_factor: int = 0) -> KeyResponse:
        """Install, use, remove or list gossip keys on every member (Serf's KeyManager)."""
        async with self._key_lock:
            log.info("agent: initiating key %s", op)
            return await self.node.key_operation(op, key, relay_factor=relay_factor)

    # --- views -------------------------------------------------------------------------------

    def members_json(self) -> list[dict[str, Any]]:
        return [member_json(m) for m in sorted(self.node.members(), key=lambda m: m.name)]

    def self_json(self) -> dict[str, Any]:
        me = next((m for m in self.members_json() if m["Name"] == self.node_name), None)
        cfg = self.config
        return {
            "Config": {"Datacenter": cfg.datacenter, "NodeName": self.node_name,
                       "NodeID": "", "Server": False, "Revision": "", "Version": VERSION,
                       "BuildDate": ""},
            "Member": me,
            "Meta": dict(cfg.node_meta),
            "Stats": {"agent": {"members": str(len(self.node.members())),
                                "uptime_seconds": str(int(time.time() - self.started))},
                      "events": {"stored": str(len(self.store)),
                                 "index": str(self.store.index())},
                      "bus": {"records": str(len(self.bus)),
                              "last_index": str(self.bus.last_index),
                              "subscribers": str(self.bus.subscribers)}},
            "DebugConfig": {"EventSizeLimit": cfg.event_size_limit,
                            "Encrypt": self.node.keyring is not None,
                            "ClientAddr": cfg.client_addr, "HTTPPort": cfg.http_port,
                            "HTTPSPort": cfg.https_port, "ACLsEnabled": cfg.acl_enabled,
                            "SerfLANPort": self.node.port},
        }
