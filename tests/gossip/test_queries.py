"""Serf queries: the codec against bytes laid out by hand from serf 0.9.4's Go structs, the
internal key queries and name-conflict resolution across simulated clusters."""

from __future__ import annotations

import base64

import pytest

from gossip import wire
from gossip.crypto import Keyring
from gossip.errors import DecodeError
from gossip.keyops import (
    BAD_KEY_SIZE,
    EMPTY_KEYRING,
    NO_KEYRING,
    NOT_IN_RING,
    REMOVE_PRIMARY,
    KeyResponse,
    apply_key_op,
)
from gossip.queries import QueryResult
from gossip.query_wire import (
    ConflictMember,
    NodeKeyResponse,
    Query,
    QueryResponse,
    decode_conflict_response,
    decode_key_request,
    decode_key_response,
    decode_query,
    decode_query_response,
    decode_relay,
    encode_conflict_response,
    encode_key_request,
    encode_key_response,
    encode_query,
    encode_query_response,
    encode_relay,
)
from gossip.serf import MemberStatus, NameConflict, UserEvent
from tests.sim.cluster import SerfCluster

K1, K2, K3 = bytes(range(16)), bytes(range(100, 132)), bytes(range(50, 74))


def s(text: str) -> bytes:
    """msgpack fixstr (old spec), as Go's codec writes a short string or []byte."""
    raw = text.encode()
    assert len(raw) < 32
    return bytes([0xA0 | len(raw)]) + raw


# --- codec ------------------------------------------------------------------------------------


def test_key_request_bytes() -> None:
    assert encode_key_request(K1) == b"\x07\x81" + s("Key") + b"\xb0" + K1
    # _serf_list-keys carries base64 "" decoded: an empty, non-nil []byte
    assert encode_key_request(b"") == b"\x07\x81\xa3Key\xa0"
    assert decode_key_request(encode_key_request(K3)) == K3
    with pytest.raises(DecodeError):
        decode_key_request(b"")
    with pytest.raises(DecodeError):
        decode_key_request(b"\x07\x93")


def test_node_key_response_bytes() -> None:
    err = encode_key_response(NodeKeyResponse(False, NO_KEYRING))
    assert err == (b"\x08\x84" + s("Keys") + b"\xc0" + s("Message") + b"\xda\x00\x2d"
                   + NO_KEYRING.encode() + s("PrimaryKey") + b"\xa0" + s("Result") + b"\xc2")
    b1 = base64.b64encode(K1).decode()
    ok = encode_key_response(NodeKeyResponse(True, "", (b1,), b1))
    assert ok == (b"\x08\x84" + s("Keys") + b"\x91" + s(b1) + s("Message") + b"\xa0"
                  + s("PrimaryKey") + s(b1) + s("Result") + b"\xc3")
    assert decode_key_response(ok) == NodeKeyResponse(True, "", (b1,), b1)
    with pytest.raises(DecodeError):
        decode_key_response(b"\x06\x80")


def test_query_and_response_bytes() -> None:
    q = Query(7, 0x1234, bytes([127, 0, 0, 1]), 7946, "n1", (), 1, 0, 3_200_000_000,
              "_serf_ping", b"")
    raw = encode_query(q)
    # Go's codec writes struct fields sorted by name (see tests/interop/test_serf_queries.py)
    assert raw == (b"\x04\x8b" + s("Addr") + b"\xa4\x7f\x00\x00\x01" + s("Filters") + b"\xc0"
                   + s("Flags") + b"\x01" + s("ID") + b"\xcd\x12\x34" + s("LTime") + b"\x07"
                   + s("Name") + s("_serf_ping") + s("Payload") + b"\xa0" + s("Port")
                   + b"\xcd\x1f\x0a" + s("RelayFactor") + b"\x00" + s("SourceNode") + s("n1")
                   + s("Timeout") + b"\xce\xbe\xbc\x20\x00")
    assert decode_query(raw[1:]) == q
    ack = encode_query_response(QueryResponse(7, 0x1234, "n2", 1, None))
    assert ack == (b"\x05\x85" + s("Flags") + b"\x01" + s("From") + s("n2") + s("ID")
                   + b"\xcd\x12\x34" + s("LTime") + b"\x07" + s("Payload") + b"\xc0")
    assert decode_query_response(ack[1:]) == QueryResponse(7, 0x1234, "n2", 1, None)


@pytest.mark.parametrize("body", [
    wire.packb({"LTime": -1}), wire.packb({"ID": 1 << 32}), wire.packb({"Port": 70000}),
    wire.packb({"Filters": 5}), wire.packb({"Filters": [b"x"] * 65}),
    wire.packb({"Timeout": 1 << 63}), wire.packb({"RelayFactor": 256}), b"\x93\x01\x02\x03",
    wire.packb({"LTime": (1 << 64)}) if False else b"\x81\xa5LTime\xcf" + b"\xff" * 7,
])
def test_bad_queries_raise_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_query(body)


def test_extreme_but_valid_numbers_decode() -> None:
    body = wire.packb({"LTime": (1 << 64) - 1, "ID": (1 << 32) - 1, "Port": 65535,
                       "Timeout": -(1 << 63), "Flags": (1 << 32) - 1})
    q = decode_query(body)
    assert (q.ltime, q.id, q.port, q.timeout_ns) == ((1 << 64) - 1, (1 << 32) - 1, 65535,
                                                     -(1 << 63))


def test_conflict_response_bytes() -> None:
    assert encode_conflict_response(None) == b"\x06\xc0"
    assert decode_conflict_response(b"\x06\xc0") is None
    raw = encode_conflict_response(ConflictMember("n1", "10.0.0.2", 7946, {"role": "x"}, 1,
                                                  bytes([1, 5, 2, 2, 5, 4])))
    assert raw.startswith(b"\x06\x8b" + s("Addr") + b"\xa4\x0a\x00\x00\x02" + s("DelegateCur")
                          + b"\x04")
    m = decode_conflict_response(raw)
    assert m is not None and (m.name, m.addr, m.port, m.status) == ("n1", "10.0.0.2", 7946, 1)


# --- key operations on one keyring ---------------------------------------------------------------


def test_apply_key_op_messages_are_serfs() -> None:
    ring = Keyring([K1])
    assert apply_key_op("install", None, K2) == NodeKeyResponse(False, NO_KEYRING)
    assert apply_key_op("list", None, b"") == NodeKeyResponse(False, EMPTY_KEYRING)
    assert apply_key_op("install", ring, b"short") == NodeKeyResponse(False, BAD_KEY_SIZE)
    assert apply_key_op("use", ring, K2) == NodeKeyResponse(False, NOT_IN_RING)
    assert apply_key_op("remove", ring, K1) == NodeKeyResponse(False, REMOVE_PRIMARY)
    assert apply_key_op("remove", ring, K3).result  # absent: nothing to do, success
    assert apply_key_op("install", ring, K2).result and ring.keys == (K1, K2)
    assert apply_key_op("use", ring, K2).result and ring.keys == (K2, K1)
    assert apply_key_op("remove", ring, K1).result and ring.keys == (K2,)
    b2 = base64.b64encode(K2).decode()
    assert apply_key_op("list", ring, b"") == NodeKeyResponse(True, "", (b2,), b2)


def test_key_response_aggregation_counts_like_keymanager() -> None:
    agg = KeyResponse(num_nodes=3)
    agg.add("a", encode_key_response(NodeKeyResponse(True, "", ("x", "y"), "x")))
    agg.add("b", encode_key_response(NodeKeyResponse(False, "nope")))
    agg.add("c", b"\x09garbage")
    assert (agg.num_resp, agg.num_err, agg.complete) == (3, 2, True)
    assert agg.keys == {"x": 1, "y": 1} and agg.primary_keys == {"x": 1, "": 1}
    assert agg.messages["b"] == "nope" and agg.messages["c"].startswith("Invalid key query")
    assert agg.error() == "2/3 nodes reported failure"
    assert KeyResponse(num_nodes=2, num_resp=1).error() == "1/2 nodes reported success"


# --- across a simulated cluster ----------------------------------------------------------------


def encrypted_cluster(n: int) -> SerfCluster:
    c = SerfCluster(n, seed=3)
    for node in c.nodes:
        node.ml.keyring = Keyring([K1])
    c.join_all()
    c.run_until(lambda: c.all_see({f"n{i}" for i in range(n)}), 30)
    return c


def key_op(c: SerfCluster, origin: str, op: str, key: bytes) -> KeyResponse:
    done: list[KeyResponse] = []
    agg = c.by_name[origin].queries.start_key_op(c.sim.now, op, key,
                                                 done=lambda t, r: done.append(r))
    c.sim.poke(c.addr[origin])
    c.run_until(lambda: bool(done), 10, step=0.05)
    assert done == [agg]
    return agg


def test_rotation_across_an_encrypted_cluster_keeps_events_flowing() -> None:
    c = encrypted_cluster(5)
    saved: dict[str, tuple[bytes, ...]] = {}
    for node in c.nodes:
        node.queries.keyring_saver = lambda keys, name=node.name: saved.__setitem__(name,
                                                                                  tuple(keys))
    names = set(c.by_name)
    for i, (op, key) in enumerate([("install", K2), ("use", K2), ("remove", K1)]):
        origin = f"n{i}"
        c.by_name[origin].user_event(c.sim.now, "during", bytes([i]))
        agg = key_op(c, origin, op, key)
        assert agg.error() is None, agg
        assert (agg.num_nodes, agg.num_resp, agg.num_err) == (5, 5, 0)
    assert all(node.ml.keyring.keys == (K2,) for node in c.nodes)  # type: ignore[union-attr]
    assert saved == {n: (K2,) for n in names}
    listed = key_op(c, "n4", "list", b"")
    b2 = base64.b64encode(K2).decode()
    assert listed.keys == {b2: 5} and listed.primary_keys == {b2: 5}
    refused = key_op(c, "n3", "remove", K2)
    assert refused.num_err == 5 and set(refused.messages.values()) == {REMOVE_PRIMARY}
    assert refused.error() == "5/5 nodes reported failure"
    c.by_name["n2"].user_event(c.sim.now, "after", b"")
    c.run_until(lambda: all(sum(e.name == "after" for e in c.user_events[n]) == 1
                            for n in names), 10)
    for n in names:
        assert sorted(e.payload for e in c.user_events[n] if isinstance(e, UserEvent)
                      and e.name == "during") == [b"\x00", b"\x01", b"\x02"]
    assert c.all_see(names)


def test_unencrypted_cluster_reports_every_node_failing() -> None:
    c = SerfCluster(3, seed=5)
    c.join_all()
    c.run_until(lambda: c.all_see({"n0", "n1", "n2"}), 30)
    agg = key_op(c, "n0", "list", b"")
    assert agg.num_err == 3 and set(agg.messages.values()) == {EMPTY_KEYRING}
    agg = key_op(c, "n1", "install", K1)
    assert agg.num_err == 3 and set(agg.messages.values()) == {NO_KEYRING}


def test_key_query_times_out_with_a_crashed_member() -> None:
    c = encrypted_cluster(4)
    c.crash("n3")
    agg = key_op(c, "n0", "install", K2)  # n3 is still alive to the others for a while
    assert (agg.num_nodes, agg.num_resp) == (4, 3)
    assert agg.error() == "3/4 nodes reported success"


def test_name_conflict_the_impostor_loses() -> None:
    c = SerfCluster(3, seed=7)
    c.join_all()
    c.run_until(lambda: c.all_see({"n0", "n1", "n2"}), 30)
    real = c.by_name["n1"]
    impostor = c.add_node("n1")  # same name, another address
    assert impostor.ml.local.addr != real.ml.local.addr
    c.join(impostor, ["n0"])
    c.run(8)
    lost = [(node, d) for _, node, d in c.other_deliveries if isinstance(d, NameConflict)]
    assert lost and all(node is impostor for node, _ in lost)
    assert lost[0][1].matching == 0 and lost[0][1].responses == 2  # n0 and n2 answered
    for observer in (c.nodes[0], c.nodes[2]):
        view = observer.members["n1"]
        assert (view.addr, view.status) == (real.ml.local.addr, MemberStatus.ALIVE)


# --- relays and filters ----------------------------------------------------------------------


def test_relay_bytes_and_forwarding_rules() -> None:
    inner = encode_query_response(QueryResponse(3, 9, "n2", 1, None))
    raw = encode_relay(("10.0.0.1", 7946), "n1", inner)
    assert raw == (b"\x09\x82" + s("DestAddr") + b"\x83" + s("IP") + b"\xa4\x0a\x00\x00\x01"
                   + s("Port") + b"\xcd\x1f\x0a" + s("Zone") + b"\xa0" + s("DestName") + s("n1")
                   + inner)
    assert decode_relay(raw) == (("10.0.0.1", 7946), inner)
    for bad in (b"\x09", b"\x09\x80", b"\x09\xc1", raw[:20],
                encode_relay(("10.0.0.1", 7946), "n1", b"")):
        with pytest.raises(DecodeError):
            decode_relay(bad)
    c = SerfCluster(2, seed=1)
    with pytest.raises(DecodeError):  # only query answers are forwarded
        c.nodes[0].queries.on_relay(encode_relay(("10.0.0.1", 7946), "n1", b"\x03\x80"))


def test_relayed_answers_are_forwarded_and_deduplicated() -> None:
    c = encrypted_cluster(5)
    done: list[KeyResponse] = []
    c.by_name["n0"].queries.start_key_op(c.sim.now, "list", b"", relay_factor=2,
                                         done=lambda t, r: done.append(r))
    c.sim.poke(c.addr["n0"])
    c.run_until(lambda: bool(done), 10, step=0.05)
    assert done[0].num_resp == 5 and done[0].error() is None
    c.run(1)
    assert sum(n.queries.metrics.relayed for n in c.nodes) >= 8  # 4 remote answers x 2


def test_query_filters_decide_who_acks() -> None:
    c = SerfCluster(4, seed=2, tags={"role": "web"})
    c.join_all()
    c.run_until(lambda: c.all_see({"n0", "n1", "n2", "n3"}), 30)
    c.by_name["n2"].tags = {"role": "db"}

    def acks(**kw: object) -> list[str]:
        done: list[QueryResult] = []
        c.by_name["n0"].queries.start(c.sim.now, "hello", b"x", request_ack=True, timeout=2,
                                      done=lambda t, r: done.append(r), **kw)  # type: ignore
        c.sim.poke(c.addr["n0"])
        c.run_until(lambda: bool(done), 5, step=0.05)
        assert done[0].responses == {}  # no handlers: acks only, like a plain serf agent
        return sorted(done[0].acks)
    assert acks() == ["n0", "n1", "n2", "n3"]
    assert acks(filter_nodes=["n1", "n3"]) == ["n1", "n3"]
    assert acks(filter_tags={"role": "^d"}) == ["n2"]
    assert acks(filter_tags={"role": "("}) == []  # does not compile: matches nothing


def test_restored_query_clock_ignores_replayed_old_queries() -> None:
    """After a restart the snapshot's query clock keeps an old install-key from re-applying."""
    c = encrypted_cluster(2)
    n1 = c.by_name["n1"]
    old = encode_query(Query(5, 77, bytes([10, 0, 0, 1]), 7946, "n0", (), 0, 0, 10**9,
                             "_serf_install-key", encode_key_request(K2)))
    n1.query_min_time = 6  # what GossipNode.restore_clocks sets from a snapshot at 5
    n1.notify_msg(c.sim.now, b"\x04" + old[1:])
    assert n1.ml.keyring.keys == (K1,)  # type: ignore[union-attr]
    assert n1.queries.metrics.queries_answered == 0
    n1.query_min_time = 0
    n1.notify_msg(c.sim.now, old)
    assert n1.ml.keyring.keys == (K1, K2)  # type: ignore[union-attr]
