"""Fuzzing the query paths: mutated internal queries, answers, relays and filters reach a Serf
core with a keyring and only ever raise ``DecodeError``; the keyring is never emptied."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from gossip import wire
from gossip.crypto import Keyring
from gossip.errors import DecodeError
from gossip.query_wire import (
    NodeKeyResponse,
    Query,
    QueryResponse,
    decode_conflict_response,
    decode_key_response,
    decode_query,
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
)
from gossip.serf import Serf
from gossip.state import State
from gossip.wire import PushNodeState, PushPull
from tests.gossip.test_fuzz import FUZZ, VSN, mutated

IP = bytes([10, 0, 0, 2])
K = b"k" * 32


def _q(name: str, payload: bytes, filters: tuple[bytes, ...] = (), ltime: int = 3) -> bytes:
    return encode_query(Query(ltime, 9, IP, 7946, "b", filters, 1, 2, 10**9, name, payload))


CORPUS = [
    _q("_serf_install-key", encode_key_request(b"n" * 16)),
    _q("_serf_use-key", encode_key_request(K)),
    _q("_serf_remove-key", encode_key_request(K)),
    _q("_serf_list-keys", encode_key_request(b"")),
    _q("_serf_conflict", b"b"),
    _q("_serf_ping", b"", (encode_node_filter(["a", "b"]), encode_tag_filter("role", "^x"))),
    _q("user", b"payload"),
    encode_query_response(QueryResponse(3, 9, "b", 0, encode_key_response(
        NodeKeyResponse(True, "", ("a", "b"), "a")))),
    encode_query_response(QueryResponse(3, 9, "b", 0, encode_conflict_response(None))),
    encode_relay(("10.0.0.2", 7946), "b", encode_query_response(QueryResponse(3, 9, "b", 1))),
]


def _core() -> Serf:
    s = Serf("a", ("10.0.0.1", 7946), rng=random.Random(1), now=0.0, keyring=Keyring([K]))
    s.ml.merge_remote_state(0.0, PushPull(False, (
        PushNodeState("b", IP, 7946, b"\xff\x80", 1, State.ALIVE, VSN),), b""))
    s.take_effects()
    s.queries.start_key_op(0.0, "list", b"", done=lambda t, r: None)
    return s


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=120), mutated(CORPUS)), min_size=1, max_size=6))
def test_query_messages_only_raise_decode_error(msgs: list[bytes]) -> None:
    s = _core()
    for data in msgs:
        try:
            s.notify_msg(1.0, data)
        except DecodeError:
            pass
    s.tick(100.0)
    ring = s.ml.keyring
    assert isinstance(ring, Keyring) and ring.keys  # never emptied


@FUZZ
@given(st.one_of(st.binary(max_size=120), mutated(CORPUS)))
def test_decoders_only_raise_decode_error(data: bytes) -> None:
    for decode in (lambda: decode_query(data[1:]), lambda: decode_query_response(data[1:]),
                   lambda: decode_key_response(data), lambda: decode_conflict_response(data),
                   lambda: decode_relay(data), lambda: wire.unpack_map(data, "x")):
        try:
            decode()
        except DecodeError:
            pass
