"""Serf queries, sans-IO: their wire codec, the internal ``_serf_*`` queries, and the queries
this node originates (with Serf's KeyManager aggregation of key-operation answers).

Wire facts (serf 0.9.4 ``serf/messages.go``, ``internal_query.go``, ``keymanager.go``,
``query.go``; memberlist 0.2.2 ``keyring.go``):

* a query is ``[4] + msgpack messageQuery{LTime, ID, Addr, Port, SourceNode, Filters, Flags,
  RelayFactor, Timeout (ns), Name, Payload}``; an answer or ack is ``[5] + msgpack
  messageQueryResponse{LTime, ID, From, Flags, Payload}``, sent by UDP straight to
  ``Addr:Port`` (flag 1 = ack; query flag 2 = do not rebroadcast);
* filters are ``[0] + msgpack [names]`` or ``[1] + msgpack {Tag, Expr}`` (Go regexp, unanchored);
* key operations carry ``[7] + {Key}`` and are answered ``[8] + {Result, Message, Keys,
  PrimaryKey}``; ``_serf_conflict`` carries a node name and is answered ``[6] + Member`` (nil
  if unknown; nodes do not answer about themselves);
* every message field is encoded in Go's declaration order; nil slices are msgpack nil.

A node without query handlers (a plain serf agent) acks when asked and sends no answer; so
does rumor for every query that is not internal.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gossip import wire
from gossip.crypto import Keyring
from gossip.errors import DecodeError

if TYPE_CHECKING:
    from gossip.serf import Serf

log = logging.getLogger("rumor.gossip")

QUERY, QUERY_RESPONSE, CONFLICT_RESPONSE, KEY_REQUEST, KEY_RESPONSE, RELAY = 4, 5, 6, 7, 8, 9
MAX_RELAY_FACTOR = 5  # Consul's limit on relay-factor
FLAG_ACK, FLAG_NO_BROADCAST = 1, 2
FILTER_NODE, FILTER_TAG = 0, 1
INTERNAL_PREFIX = "_serf_"
QUERY_SIZE_LIMIT = 1024  # serf QuerySizeLimit
QUERY_RESPONSE_SIZE_LIMIT = 1024  # serf QueryResponseSizeLimit
QUERY_TIMEOUT_MULT = 16  # serf QueryTimeoutMult
MIN_ENCODED_KEY_LENGTH = 25  # serf minEncodedKeyLength: 1024 / 25 = 40 keys per list answer
KEY_OPS = ("install", "use", "remove", "list")
MAX_FILTER_NAMES = 4096
MAX_TAG_EXPR = 1024

NO_KEYRING = "No keyring to modify (encryption not enabled)"
EMPTY_KEYRING = "Keyring is empty (encryption not enabled)"
BAD_KEY_SIZE = "key size must be 16, 24 or 32 bytes"
NOT_IN_RING = "Requested key is not in the keyring"
REMOVE_PRIMARY = "Removing the primary key is not allowed"

_INT64 = 1 << 63


class ManagedKeyring(Protocol):
    """What the internal key queries need of a keyring (``gossip.crypto.Keyring`` has it)."""

    @property
    def keys(self) -> tuple[bytes, ...]: ...
    def install(self, key: bytes) -> None: ...
    def use(self, key: bytes) -> None: ...
    def remove(self, key: bytes) -> None: ...


# --- codec ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    ltime: int
    id: int
    addr: bytes
    port: int
    source_node: str
    filters: tuple[bytes, ...] = ()
    flags: int = 0
    relay_factor: int = 0
    timeout_ns: int = 0
    name: str = ""
    payload: bytes = b""


@dataclass(frozen=True)
class QueryResponse:
    ltime: int
    id: int
    source: str  # the From field
    flags: int = 0
    payload: bytes | None = None


def encode_query(q: Query) -> bytes:
    return bytes([QUERY]) + wire.packb({
        "LTime": q.ltime, "ID": q.id, "Addr": q.addr, "Port": q.port,
        "SourceNode": q.source_node, "Filters": list(q.filters) or None, "Flags": q.flags,
        "RelayFactor": q.relay_factor, "Timeout": q.timeout_ns, "Name": q.name,
        "Payload": q.payload})


def _f_int64(m: dict[bytes, Any], key: bytes, what: str) -> int:
    v = m.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not -_INT64 <= v < _INT64:
        raise DecodeError(f"{what}: field {key.decode()} is not an int64")
    return v


def decode_query(body: bytes) -> Query:
    """The msgpack body after the type byte; DecodeError on anything malformed."""
    w = "query"
    m = wire.unpack_map(body, w)
    raw_filters = m.get(b"Filters") or []
    if not isinstance(raw_filters, list) or len(raw_filters) > 64:
        raise DecodeError(f"{w}: Filters is not a list of at most 64 entries")
    filters = tuple(wire.f_bytes({b"f": f}, b"f", w) for f in raw_filters)
    return Query(wire.f_int(m, b"LTime", w), wire.f_int(m, b"ID", w, bits=32),
                 wire.f_bytes(m, b"Addr", w), wire.f_int(m, b"Port", w, bits=16),
                 wire.f_str(m, b"SourceNode", w), filters, wire.f_int(m, b"Flags", w, bits=32),
                 wire.f_int(m, b"RelayFactor", w, bits=8), _f_int64(m, b"Timeout", w),
                 wire.f_str(m, b"Name", w), wire.f_bytes(m, b"Payload", w))


def encode_query_response(r: QueryResponse) -> bytes:
    return bytes([QUERY_RESPONSE]) + wire.packb({
        "LTime": r.ltime, "ID": r.id, "From": r.source, "Flags": r.flags, "Payload": r.payload})


def decode_query_response(body: bytes) -> QueryResponse:
    w = "query response"
    m = wire.unpack_map(body, w)
    payload = None if m.get(b"Payload") is None else wire.f_bytes(m, b"Payload", w)
    return QueryResponse(wire.f_int(m, b"LTime", w), wire.f_int(m, b"ID", w, bits=32),
                         wire.f_str(m, b"From", w), wire.f_int(m, b"Flags", w, bits=32), payload)


def encode_relay(dest: tuple[str, int], dest_name: str, inner: bytes) -> bytes:
    """``[9] + msgpack relayHeader{DestAddr: UDPAddr{IP, Port, Zone}, DestName} + inner``."""
    return bytes([RELAY]) + wire.packb({
        "DestAddr": {"IP": wire.ip_to_bytes(dest[0]), "Port": dest[1], "Zone": ""},
        "DestName": dest_name}) + inner


def decode_relay(msg: bytes) -> tuple[tuple[str, int], bytes]:
    """(destination, inner message) of a relay message; DecodeError if malformed."""
    import msgpack

    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(msg))
    unpacker.feed(msg[1:])
    try:
        header = unpacker.unpack()
    except Exception as exc:
        raise DecodeError(f"relay: bad header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get(b"DestAddr"), dict):
        raise DecodeError("relay: bad header")
    dest = header[b"DestAddr"]
    ip = wire.ip_from_bytes(wire.f_bytes(dest, b"IP", "relay"))
    port = wire.f_int(dest, b"Port", "relay", bits=16)
    inner = msg[1 + unpacker.tell():]
    if not port or not inner:
        raise DecodeError("relay: no destination port or no message")
    return (ip, port), inner


def encode_key_request(key: bytes) -> bytes:
    return bytes([KEY_REQUEST]) + wire.packb({"Key": key})


def decode_key_request(payload: bytes) -> bytes:
    if not payload:
        raise DecodeError("key request: empty payload")
    return wire.f_bytes(wire.unpack_map(payload[1:], "key request"), b"Key", "key request")


@dataclass(frozen=True)
class NodeKeyResponse:
    """serf ``nodeKeyResponse``: one node's answer to a key query."""

    result: bool = False
    message: str = ""
    keys: tuple[str, ...] | None = None
    primary_key: str = ""


def encode_key_response(r: NodeKeyResponse) -> bytes:
    return bytes([KEY_RESPONSE]) + wire.packb({
        "Result": r.result, "Message": r.message,
        "Keys": None if r.keys is None else list(r.keys), "PrimaryKey": r.primary_key})


def decode_key_response(payload: bytes) -> NodeKeyResponse:
    w = "key response"
    if not payload or payload[0] != KEY_RESPONSE:
        raise DecodeError(f"{w}: wrong message type")
    m = wire.unpack_map(payload[1:], w)
    raw = m.get(b"Keys")
    if raw is not None and (not isinstance(raw, list) or len(raw) > 4096):
        raise DecodeError(f"{w}: Keys is not a list")
    keys = None if raw is None else tuple(wire.f_str({b"k": k}, b"k", w) for k in raw)
    return NodeKeyResponse(wire.f_bool(m, b"Result", w), wire.f_str(m, b"Message", w), keys,
                           wire.f_str(m, b"PrimaryKey", w))


@dataclass(frozen=True)
class ConflictMember:
    """serf ``Member`` as carried in a ``_serf_conflict`` answer."""

    name: str
    addr: str
    port: int
    tags: Mapping[str, str] = field(default_factory=dict)
    status: int = 1
    vsn: bytes = b""


def encode_conflict_response(m: ConflictMember | None) -> bytes:
    if m is None:
        return bytes([CONFLICT_RESPONSE]) + wire.packb(None)
    vsn = list(m.vsn[:6]) + [0] * (6 - len(m.vsn[:6]))
    return bytes([CONFLICT_RESPONSE]) + wire.packb({
        "Name": m.name, "Addr": wire.ip_to_bytes(m.addr), "Port": m.port, "Tags": dict(m.tags),
        "Status": m.status, "ProtocolMin": vsn[0], "ProtocolMax": vsn[1], "ProtocolCur": vsn[2],
        "DelegateMin": vsn[3], "DelegateMax": vsn[4], "DelegateCur": vsn[5]})


def decode_conflict_response(payload: bytes) -> ConflictMember | None:
    w = "conflict response"
    if not payload or payload[0] != CONFLICT_RESPONSE:
        raise DecodeError(f"{w}: wrong message type")
    if payload[1:] == b"\xc0":
        return None
    m = wire.unpack_map(payload[1:], w)
    return ConflictMember(wire.f_str(m, b"Name", w),
                          wire.ip_from_bytes(wire.f_bytes(m, b"Addr", w)),
                          wire.f_int(m, b"Port", w, bits=16), {},
                          wire.f_int(m, b"Status", w, bits=32))


def encode_node_filter(names: Sequence[str]) -> bytes:
    return bytes([FILTER_NODE]) + wire.packb(list(names))


def encode_tag_filter(tag: str, expr: str) -> bytes:
    return bytes([FILTER_TAG]) + wire.packb({"Tag": tag, "Expr": expr})


def default_tag_matcher(expr: str, value: str) -> bool:
    """Go's ``regexp.MatchString`` (unanchored); an uncompilable pattern matches nothing.

    The agent may install an RE2-backed matcher instead (``Queries.tag_matcher``)."""
    if len(expr) > MAX_TAG_EXPR:
        return False
    try:
        return re.search(expr, value) is not None
    except re.error:
        return False


# --- key operations (memberlist keyring semantics with serf's messages) --------------------


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_b64_key(text: str) -> bytes:
    """Serf's KeyManager decodes the base64 key (StdEncoding); ValueError if it is not base64."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"illegal base64 data: {exc}") from None


def apply_key_op(op: str, keyring: ManagedKeyring | None, key: bytes) -> NodeKeyResponse:
    """What a node answers to ``_serf_<op>-key`` / ``_serf_list-keys`` (without the file write)."""
    if keyring is None or not keyring.keys:
        return NodeKeyResponse(False, EMPTY_KEYRING if op == "list" else NO_KEYRING)
    if op == "list":
        keys = keyring.keys
        return NodeKeyResponse(True, "", tuple(b64(k) for k in keys), b64(keys[0]))
    if op == "install":
        if len(key) not in (16, 24, 32):
            return NodeKeyResponse(False, BAD_KEY_SIZE)
        keyring.install(key)
    elif op == "use":
        if key not in keyring.keys:
            return NodeKeyResponse(False, NOT_IN_RING)
        keyring.use(key)
    elif op == "remove":
        if key == keyring.keys[0]:
            return NodeKeyResponse(False, REMOVE_PRIMARY)
        if key in keyring.keys:
            keyring.remove(key)
    else:
        raise ValueError(f"unknown key operation {op!r}")
    return NodeKeyResponse(True)


@dataclass
class KeyResponse:
    """serf ``KeyResponse``: the cluster's answers to one key query, aggregated."""

    num_nodes: int = 0
    num_resp: int = 0
    num_err: int = 0
    messages: dict[str, str] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    primary_keys: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, payload: bytes | None) -> None:
        """KeyManager ``streamKeyResp`` for one answer."""
        self.num_resp += 1
        raw = payload or b""
        if not raw or raw[0] != KEY_RESPONSE:
            self.messages[source] = f"Invalid key query response type: {list(raw)}"
            self.num_err += 1
            return
        try:
            r = decode_key_response(raw)
        except DecodeError:
            self.messages[source] = f"Failed to decode key query response: {list(raw)}"
            self.num_err += 1
            return
        if not r.result:
            self.messages[source] = r.message
            self.num_err += 1
        elif r.message:
            self.messages[source] = r.message
        for k in r.keys or ():
            self.keys[k] = self.keys.get(k, 0) + 1
        self.primary_keys[r.primary_key] = self.primary_keys.get(r.primary_key, 0) + 1

    @property
    def complete(self) -> bool:
        return self.num_resp >= self.num_nodes

    def error(self) -> str | None:
        """KeyManager's error for this outcome, or None on success."""
        if self.num_err:
            return f"{self.num_err}/{self.num_nodes} nodes reported failure"
        if self.num_resp != self.num_nodes:
            return f"{self.num_resp}/{self.num_nodes} nodes reported success"
        return None


# --- the engine ----------------------------------------------------------------------------


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
                    names = _unpack(f[1:])
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


def _unpack(body: bytes) -> object:
    import msgpack

    try:
        return msgpack.unpackb(body, raw=True, strict_map_key=False)
    except Exception as exc:
        raise DecodeError(f"filter: bad msgpack: {exc}") from None
