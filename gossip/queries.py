"""Serf queries, sans-IO: answering the internal ``_serf_*`` queries and tracking the queries
this node originates (serf 0.9.4 ``serf/query.go``, ``internal_query.go``, ``keymanager.go``).

* Inbound: after the Serf core dedups and rebroadcasts a query, :meth:`Queries.on_query`
  applies its node/tag filters, acks when asked, and answers the internal ones: the key
  queries (``gossip.keyops``), ``_serf_conflict`` (our record of the named member; nothing
  about ourselves) and ``_serf_ping`` (ack only).  A node without query handlers (a plain serf
  agent) acks and sends no answer; so does rumor for every query that is not internal.
* Answers go by UDP straight to the asker, plus ``RelayFactor`` relayed copies through other
  members; relayed answers we receive are forwarded.
* Outbound: :meth:`Queries.start` broadcasts a query, handles it locally and collects acks and
  answers until the deadline (default GossipInterval x 16 x ceil(log10(n + 1))); key
  operations aggregate answers like serf's KeyManager; a name conflict runs serf's vote.

Message layouts live in ``gossip.query_wire``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gossip import wire
from gossip.crypto import Keyring
from gossip.errors import DecodeError
from gossip.keyops import KEY_OPS, KeyResponse, ManagedKeyring, apply_key_op
from gossip.query_wire import (
    FILTER_NODE,
    FILTER_TAG,
    FLAG_ACK,
    QUERY_RESPONSE,
    ConflictMember,
    NodeKeyResponse,
    Query,
    QueryResponse,
    decode_conflict_response,
    decode_key_request,
    decode_query_response,
    decode_relay,
    encode_conflict_response,
    encode_key_request,
    encode_key_response,
    encode_node_filter,
    encode_query,
    encode_query_response,
    encode_relay,
    encode_tag_filter,
    unpack_any,
)

if TYPE_CHECKING:
    from gossip.serf import Serf

log = logging.getLogger("rumor.gossip")

INTERNAL_PREFIX = "_serf_"
MAX_RELAY_FACTOR = 5  # Consul's limit on relay-factor
QUERY_SIZE_LIMIT = 1024  # serf QuerySizeLimit
QUERY_RESPONSE_SIZE_LIMIT = 1024  # serf QueryResponseSizeLimit
QUERY_TIMEOUT_MULT = 16  # serf QueryTimeoutMult
MIN_ENCODED_KEY_LENGTH = 25  # serf minEncodedKeyLength: 1024 / 25 = 40 keys per list answer
MAX_FILTER_NAMES = 4096
MAX_TAG_EXPR = 1024


def default_tag_matcher(expr: str, value: str) -> bool:
    """Go's ``regexp.MatchString`` (unanchored); an uncompilable pattern matches nothing.

    The agent may install an RE2-backed matcher instead (``Queries.tag_matcher``)."""
    if len(expr) > MAX_TAG_EXPR:
        return False
    try:
        return re.search(expr, value) is not None
    except re.error:
        return False





@dataclass
class QueryResult:
    """What came back for a query this node originated."""

    name: str
    ltime: int
    id: int
    deadline: float
    acks: list[str] = field(default_factory=list)
    responses: dict[str, bytes | None] = field(default_factory=dict)
    finished: bool = False


@dataclass
class _Pending:
    result: QueryResult
    on_response: Callable[[float, str, bytes | None], bool] | None
    done: Callable[[float, QueryResult], None] | None


@dataclass
class QueryMetrics:
    queries_answered: int = 0
    queries_filtered: int = 0
    queries_started: int = 0
    responses_received: int = 0
    responses_unmatched: int = 0
    key_ops_applied: int = 0
    relayed: int = 0


class Queries:
    """Inbound query handling and outbound query tracking for one :class:`Serf` core."""

    def __init__(self, serf: Serf) -> None:
        self.serf = serf
        self.pending: dict[int, _Pending] = {}  # by LTime: one query per LTime, as Serf
        self.metrics = QueryMetrics()
        self.tag_matcher: Callable[[str, str], bool] = default_tag_matcher
        # called with the keys (primary first) after a key query changed them; raising
        # OSError makes the answer report the failure, as serf's writeKeyringFile does
        self.keyring_saver: Callable[[Sequence[bytes]], None] | None = None
        self.resolving_conflict = False

    @property
    def keyring(self) -> ManagedKeyring | None:
        ring = self.serf.ml.keyring
        return ring if isinstance(ring, Keyring) else None

    # --- inbound --------------------------------------------------------------------------

    def should_process(self, filters: Sequence[bytes]) -> bool:
        """serf ``shouldProcessQuery``."""
        for f in filters:
            if not f:
                return False
            try:
                if f[0] == FILTER_NODE:
                    names = unpack_any(f[1:], "node filter")
                    if not isinstance(names, list) or len(names) > MAX_FILTER_NAMES:
                        return False
                    if self.serf.name.encode() not in names and self.serf.name not in names:
                        return False
                elif f[0] == FILTER_TAG:
                    m = wire.unpack_map(f[1:], "tag filter")
                    tag = wire.f_str(m, b"Tag", "tag filter")
                    expr = wire.f_str(m, b"Expr", "tag filter")
                    if not self.tag_matcher(expr, self.serf.tags.get(tag, "")):
                        return False
                else:
                    return False
            except DecodeError:
                return False
        return True

    def on_query(self, now: float, q: Query) -> None:
        """A new query (first sighting; already queued for rebroadcast by the caller)."""
        if not self.should_process(q.filters):
            self.metrics.queries_filtered += 1
            return
        if q.flags & FLAG_ACK:
            self._send_raw(now, q, encode_query_response(
                QueryResponse(q.ltime, q.id, self.serf.name, FLAG_ACK, None)))
        if not q.name.startswith(INTERNAL_PREFIX):
            return  # no user query handlers: like a serf agent without handlers, no answer
        what = q.name[len(INTERNAL_PREFIX):]
        if what == "ping":
            return
        if what == "conflict":
            self._answer_conflict(now, q)
            return
        op = {"install-key": "install", "use-key": "use", "remove-key": "remove",
              "list-keys": "list"}.get(what)
        if op is None:
            log.warning("serf: Unhandled internal query '%s'", what)
            return
        self._answer_key_op(now, q, op)

    def _answer_key_op(self, now: float, q: Query, op: str) -> None:
        key = b""
        try:
            if op != "list":
                key = decode_key_request(q.payload)
        except DecodeError as exc:
            log.error("serf: Failed to decode key request: %s", exc)
            self._respond(now, q, encode_key_response(NodeKeyResponse(False)))
            return
        before = self.keyring.keys if self.keyring is not None else ()
        resp = apply_key_op(op, self.keyring, key)
        log.info("serf: Received %s query: %s", q.name[len(INTERNAL_PREFIX):],
                 "ok" if resp.result else resp.message)
        ring = self.keyring
        if resp.result and ring is not None and ring.keys != before:
            self.metrics.key_ops_applied += 1
            if self.keyring_saver is not None:
                try:
                    self.keyring_saver(ring.keys)
                except OSError as exc:
                    resp = NodeKeyResponse(False, f"Failed to write keyring file: {exc}")
        if op == "list":
            self._respond_list(now, q, resp)
        else:
            self._respond(now, q, encode_key_response(resp))

    def _respond_list(self, now: float, q: Query, resp: NodeKeyResponse) -> None:
        """serf ``keyListResponseWithCorrectSize``: truncate the key list until it fits."""
        keys = resp.keys or ()
        actual = len(keys)
        for i in range(QUERY_RESPONSE_SIZE_LIMIT // MIN_ENCODED_KEY_LENGTH, -1, -1):
            raw = self._response_bytes(q, encode_key_response(resp))
            if len(raw) <= QUERY_RESPONSE_SIZE_LIMIT:
                if actual > i:
                    log.warning("serf: %s", resp.message)
                self.metrics.queries_answered += 1
                self._send_raw(now, q, raw)
                return
            resp = NodeKeyResponse(resp.result, f"truncated key list response, showing first "
                                   f"{i} of {actual} keys", keys[:i], resp.primary_key)
        log.error("serf: Failed to truncate response so that it fits into message")

    def _answer_conflict(self, now: float, q: Query) -> None:
        node = q.payload.decode("utf-8", "replace")
        if node == self.serf.name:
            return
        m = self.serf.members.get(node)
        out = None if m is None else ConflictMember(m.name, m.addr, m.port, m.tags,
                                                    int(m.status), m.vsn)
        self._respond(now, q, encode_conflict_response(out))

    def _response_bytes(self, q: Query, payload: bytes) -> bytes:
        return encode_query_response(QueryResponse(q.ltime, q.id, self.serf.name, 0, payload))

    def _respond(self, now: float, q: Query, payload: bytes) -> None:
        raw = self._response_bytes(q, payload)
        if len(raw) > QUERY_RESPONSE_SIZE_LIMIT:
            log.error("serf: response exceeds limit of %d bytes", QUERY_RESPONSE_SIZE_LIMIT)
            return
        self.metrics.queries_answered += 1
        self._send_raw(now, q, raw)

    def _send_raw(self, now: float, q: Query, raw: bytes) -> None:
        local = self.serf.ml.local
        if q.source_node == self.serf.name and q.port == local.port and \
                q.addr == wire.ip_to_bytes(local.addr):
            self.on_response(now, decode_query_response(raw[1:]))
            return
        try:
            dst = (wire.ip_from_bytes(q.addr), q.port)
        except DecodeError:
            return
        if q.port == 0:
            return
        self.serf.ml.send_user_packet(dst, raw)
        self._relay(q, dst, raw)

    def _relay(self, q: Query, dst: tuple[str, int], raw: bytes) -> None:
        """serf ``relayResponse``: copies through ``RelayFactor`` random other members."""
        k = min(q.relay_factor, MAX_RELAY_FACTOR)
        if not k:
            return
        ml = self.serf.ml
        peers = [m for m in ml.alive_members() if m is not ml.local and m.pmax >= 5]
        if len(peers) < k:  # serf: worth it only with relayFactor other members
            return
        msg = encode_relay(dst, q.source_node, raw)
        if len(msg) > QUERY_RESPONSE_SIZE_LIMIT:
            return
        for m in self.serf.rng.sample(peers, k):
            ml.send_user_packet(m.address, msg)

    def on_relay(self, msg: bytes) -> None:
        """Forward a relayed query answer to its destination (serf delegate, type 9).

        Stricter than serf: only a query response of at most 1024 bytes is forwarded."""
        dest, inner = decode_relay(msg)
        if inner[0] != QUERY_RESPONSE or len(inner) > QUERY_RESPONSE_SIZE_LIMIT:
            raise DecodeError("relay: only query responses are relayed")
        self.metrics.relayed += 1
        self.serf.ml.send_user_packet(dest, inner)

    # --- outbound -------------------------------------------------------------------------

    def default_timeout(self) -> float:
        """serf ``DefaultQueryTimeout``: GossipInterval x 16 x ceil(log10(n + 1))."""
        n = len(self.serf.ml.alive_members())
        return self.serf.gcfg.gossip_interval * QUERY_TIMEOUT_MULT * math.ceil(math.log10(n + 1))

    def start(self, now: float, name: str, payload: bytes, *, timeout: float | None = None,
              request_ack: bool = False, filter_nodes: Sequence[str] = (),
              filter_tags: Mapping[str, str] | None = None, relay_factor: int = 0,
              on_response: Callable[[float, str, bytes | None], bool] | None = None,
              done: Callable[[float, QueryResult], None] | None = None) -> QueryResult:
        """serf ``Query``: broadcast, handle locally, collect until the deadline.

        ``on_response(now, from, payload)`` returning True finishes the query early (as
        KeyManager stops reading once every node answered); ``done`` runs once at the end.
        Raises ValueError if the encoded query exceeds 1024 bytes."""
        serf = self.serf
        if timeout is None or timeout <= 0:
            timeout = self.default_timeout()
        filters = []
        if filter_nodes:
            filters.append(encode_node_filter(filter_nodes))
        for tag, expr in (filter_tags or {}).items():
            filters.append(encode_tag_filter(tag, expr))
        local = serf.ml.local
        q = Query(serf.query_clock.time(), serf.rng.getrandbits(31),
                  wire.ip_to_bytes(local.addr), local.port, serf.name, tuple(filters),
                  FLAG_ACK if request_ack else 0, min(max(relay_factor, 0), MAX_RELAY_FACTOR),
                  int(timeout * 1e9), name, payload)
        raw = encode_query(q)
        if len(raw) > QUERY_SIZE_LIMIT:
            raise ValueError(f"query exceeds limit of {QUERY_SIZE_LIMIT} bytes")
        result = QueryResult(name, q.ltime, q.id, now + timeout)
        old = self.pending.pop(q.ltime, None)
        if old is not None:
            self._finish(now, old)
        self.pending[q.ltime] = _Pending(result, on_response, done)
        self.metrics.queries_started += 1
        serf.handle_own_query(now, raw, q)
        return result

    def on_response(self, now: float, r: QueryResponse) -> None:
        """serf ``handleQueryResponse``."""
        p = self.pending.get(r.ltime)
        if p is None or p.result.id != r.id or p.result.finished:
            self.metrics.responses_unmatched += 1
            log.debug("serf: reply for non-running query (LTime: %d, ID: %d) From: %s",
                      r.ltime, r.id, r.source)
            return
        res = p.result
        if r.flags & FLAG_ACK:
            if r.source not in res.acks:
                res.acks.append(r.source)
            return
        if r.source in res.responses:
            return
        self.metrics.responses_received += 1
        res.responses[r.source] = r.payload
        if p.on_response is not None and p.on_response(now, r.source, r.payload):
            self.pending.pop(r.ltime, None)
            self._finish(now, p)

    def deadline(self) -> float:
        if not self.pending:  # asked after every packet: the common case without a generator
            return math.inf
        return min((p.result.deadline for p in self.pending.values()), default=math.inf)

    def expire(self, now: float) -> None:
        for lt in [lt for lt, p in self.pending.items() if p.result.deadline <= now]:
            self._finish(now, self.pending.pop(lt))

    def _finish(self, now: float, p: _Pending) -> None:
        if p.result.finished:
            return
        p.result.finished = True
        if p.done is not None:
            p.done(now, p.result)

    def start_key_op(self, now: float, op: str, key: bytes, *,
                     done: Callable[[float, KeyResponse], None],
                     timeout: float | None = None, relay_factor: int = 0) -> KeyResponse:
        """serf KeyManager ``handleKeyRequest``: query every node, aggregate the answers."""
        if op not in KEY_OPS:
            raise ValueError(f"unknown key operation {op!r}")
        name = INTERNAL_PREFIX + ("list-keys" if op == "list" else f"{op}-key")
        agg = KeyResponse()

        def one(t: float, source: str, payload: bytes | None) -> bool:
            agg.add(source, payload)
            return agg.complete

        def finished(t: float, _: QueryResult) -> None:
            done(t, agg)
        # NumNodes is taken after the query is started, like KeyManager; a local answer
        # arriving during start() is counted, so fix the total first
        agg.num_nodes = len(self.serf.ml.alive_members())
        self.start(now, name, encode_key_request(key), timeout=timeout,
                   relay_factor=relay_factor, on_response=one, done=finished)
        return agg

    def resolve_conflict(self, now: float) -> None:
        """serf ``resolveNodeConflict``: ask the cluster which address owns our name."""
        if self.resolving_conflict:
            return
        self.resolving_conflict = True
        local = self.serf.ml.local

        def finished(t: float, res: QueryResult) -> None:
            self.resolving_conflict = False
            responses = matching = 0
            for source, payload in res.responses.items():
                try:
                    m = decode_conflict_response(payload or b"")
                except DecodeError:
                    log.error("serf: Invalid conflict query response from %s", source)
                    continue
                responses += 1
                if m is not None and (m.addr, m.port) == (local.addr, local.port):
                    matching += 1
            self.serf.conflict_resolved(t, matching, responses)
        self.start(now, INTERNAL_PREFIX + "conflict", self.serf.name.encode(), done=finished)
