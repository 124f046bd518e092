"""User events: record shape, Consul wire codec, index, EventStore (agent/events/)."""

from __future__ import annotations

import json
import logging
import random
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import (
    CONSUL_EVENT_PREFIX,
    MAX_QUERY_TIME,
    Event,
    EventDecodeError,
    EventStore,
    decode_consul_event,
    decode_serf_event,
    effective_wait,
    encode_consul_event,
    id_to_index,
    is_event_id,
    make_event,
    new_event_id,
    plain_serf_event,
    serf_event_name,
)
from agent.filters import FilterError

DOC_ID = "b54fe110-7af5-cafc-d1fb-afc8ba432b1c"  # the ID in Consul's event API docs


def mk(n: int, name: str = "deploy", ltime: int = 0) -> Event:
    """A distinct event per ``n`` with a reproducible ID."""
    return Event(new_event_id(random.Random(n)), name, str(n).encode(), ltime=ltime)


# -- record and JSON ----------------------------------------------------------------------------


def test_to_json_shape_matches_consul_docs() -> None:
    ev = Event(DOC_ID, "deploy", b"1609030", ltime=19)
    out = ev.to_json()
    assert list(out) == [
        "ID",
        "Name",
        "Payload",
        "NodeFilter",
        "ServiceFilter",
        "TagFilter",
        "Version",
        "LTime",
    ]
    assert out == {
        "ID": DOC_ID,
        "Name": "deploy",
        "Payload": "MTYwOTAzMA==",
        "NodeFilter": "",
        "ServiceFilter": "",
        "TagFilter": "",
        "Version": 1,
        "LTime": 19,
    }
    assert Event(DOC_ID, "deploy", None).to_json()["Payload"] is None
    assert Event(DOC_ID, "deploy", b"").to_json()["Payload"] is None
    assert Event.from_json(out) == ev


def test_empty_payload_normalised() -> None:
    assert Event(DOC_ID, "x", b"") == Event(DOC_ID, "x", None)
    assert Event(DOC_ID, "x", bytearray(b"ab")).payload == b"ab"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "record",
    [
        [],
        {"ID": "nope", "Name": "x"},
        {"ID": DOC_ID, "Name": 1},
        {"ID": DOC_ID, "Name": "x", "Payload": "***"},
        {"ID": DOC_ID, "Name": "x", "Payload": 5},
        {"ID": DOC_ID, "Name": "x", "LTime": -1},
        {"ID": DOC_ID, "Name": "x", "LTime": 1 << 64},
        {"ID": DOC_ID, "Name": "x", "Version": "1"},
        {"ID": DOC_ID, "Name": "x", "Version": True},
    ],
)
def test_from_json_rejects(record: Any) -> None:
    with pytest.raises(EventDecodeError):
        Event.from_json(record)


# -- IDs and index ------------------------------------------------------------------------------


def test_index_worked_example() -> None:
    assert id_to_index(DOC_ID) == 7256511592453824992
    assert id_to_index(DOC_ID.upper()) == 7256511592453824992
    assert id_to_index("00000000-0000-0000-0000-000000000000") == 0
    assert id_to_index("ffffffff-ffff-ffff-0000-000000000000") == (1 << 64) - 1


@pytest.mark.parametrize(
    "bad", ["", "b54fe110", DOC_ID + "0", "0x4fe110-7af5-cafc-d1fb-afc8ba432b1c", DOC_ID[:-1] + "g"]
)
def test_index_rejects_non_uuid(bad: str) -> None:
    with pytest.raises(ValueError):
        id_to_index(bad)


def test_new_event_id() -> None:
    a, b = new_event_id(), new_event_id()
    assert a != b and uuid.UUID(a).version == 4
    assert new_event_id(bytes(16)) == "00000000-0000-4000-8000-000000000000"
    assert new_event_id(random.Random(7)) == new_event_id(random.Random(7))
    with pytest.raises(ValueError):
        new_event_id(b"short")


def test_effective_wait() -> None:
    assert effective_wait(None) == MAX_QUERY_TIME == 600.0
    assert effective_wait(0) == 600.0
    assert effective_wait(5) == 5
    assert effective_wait(3600) == 600.0
    assert effective_wait(-5) == 0.0


# -- Consul wire codec --------------------------------------------------------------------------


def test_encode_exact_bytes() -> None:
    # Consul agent/user_event.go declares, in this order:
    #   ID string; Name `codec:"n"`; Payload []byte `codec:"p,omitempty"`;
    #   NodeFilter `codec:"nf,omitempty"`; ServiceFilter `codec:"sf,omitempty"`;
    #   TagFilter `codec:"tf,omitempty"`; Version int `codec:"v"`; LTime `codec:"-"`.
    # The Go codec writes struct fields as a map in declaration order, skipping empty omitempty
    # fields, and Consul's handle has WriteExt=true: a 36-byte string is str8 (d9 24), []byte is
    # bin8 (c4 len). So with no filters there are 4 keys: ID, n, p, v.
    ev = Event(DOC_ID, "deploy", b"1609030", ltime=19)
    expected = (
        b"\x84"  # fixmap, 4 pairs
        + b"\xa2ID" + b"\xd9\x24" + DOC_ID.encode()
        + b"\xa1n" + b"\xa6deploy"
        + b"\xa1p" + b"\xc4\x07" + b"1609030"
        + b"\xa1v" + b"\x01"
    )  # fmt: skip
    assert encode_consul_event(ev) == expected
    # LTime is not on the wire; with every filter set and no payload: 6 keys in struct order.
    full = Event(DOC_ID, "d", None, "^n", "svc", "t", ltime=5)
    assert encode_consul_event(full) == (
        b"\x86\xa2ID\xd9\x24" + DOC_ID.encode() + b"\xa1n\xa1d"
        + b"\xa2nf\xa2^n" + b"\xa2sf\xa3svc" + b"\xa2tf\xa1t" + b"\xa1v\x01"
    )  # fmt: skip
    # All seven keys: "p" sits between "n" and "nf".
    seven = Event(DOC_ID, "d", b"P", "^n", "svc", "t")
    assert encode_consul_event(seven) == (
        b"\x87\xa2ID\xd9\x24" + DOC_ID.encode() + b"\xa1n\xa1d" + b"\xa1p\xc4\x01P"
        + b"\xa2nf\xa2^n" + b"\xa2sf\xa3svc" + b"\xa2tf\xa1t" + b"\xa1v\x01"
    )  # fmt: skip


def test_encode_decode_round_trip() -> None:
    ev = Event(DOC_ID, "deploy", b"\x00\xffbin", "^web", "api", "v1", ltime=42)
    assert decode_consul_event(encode_consul_event(ev), 42) == ev
    plain = Event(DOC_ID, "x", None)
    assert decode_consul_event(encode_consul_event(plain), 0) == plain


def test_decode_accepts_old_spec_raw_strings() -> None:
    # An old-spec encoder writes every string and []byte as raw (str) type.
    blob = msgpack.packb(
        {"ID": DOC_ID, "n": "deploy", "p": "payload", "nf": "web", "v": 1, "extra": [1, 2]},
        use_bin_type=False,
    )
    ev = decode_consul_event(blob, 3)
    assert (ev.name, ev.payload, ev.node_filter, ev.ltime) == ("deploy", b"payload", "web", 3)
    bin_everywhere = msgpack.packb({b"ID": DOC_ID.encode(), b"n": b"x"}, use_bin_type=True)
    assert decode_consul_event(bin_everywhere, 0).version == 0  # missing "v" decodes as 0


def test_decode_invalid_utf8_replaced() -> None:
    blob = msgpack.packb({"ID": DOC_ID, "n": b"\xffname", "v": 1}, use_bin_type=True)
    assert decode_consul_event(blob, 0).name == "\ufffdname"


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xc1",
        b"\x93\x01\x02\x03",
        msgpack.packb({"n": "no id", "v": 1}),
        msgpack.packb({"ID": "not-a-uuid", "n": "x"}),
        msgpack.packb({"ID": DOC_ID, "n": 5}),
        msgpack.packb({"ID": DOC_ID, "n": "x", "p": 5}),
        msgpack.packb({"ID": DOC_ID, "n": "x", "v": "1"}),
        msgpack.packb({"ID": DOC_ID, "n": "x", "v": 1 << 63}),
        msgpack.packb({"ID": DOC_ID, "n": "x", "v": 1}) + b"\x00",  # trailing bytes
    ],
)
def test_decode_rejects(blob: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode_consul_event(blob, 0)


def test_decode_rejects_bad_ltime_and_non_bytes() -> None:
    blob = encode_consul_event(Event(DOC_ID, "x", None))
    for ltime in (-1, 1 << 64, True):
        with pytest.raises(EventDecodeError):
            decode_consul_event(blob, ltime)
    with pytest.raises(EventDecodeError):
        decode_consul_event("text", 1)  # type: ignore[arg-type]
    assert decode_consul_event(memoryview(blob), 1).ltime == 1


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_fuzz_bytes(blob: bytes) -> None:
    try:
        decode_consul_event(blob, 1)
    except EventDecodeError:
        pass


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
)
_value = st.one_of(_leaf, st.lists(_leaf, max_size=3))
_keys = st.sampled_from(["ID", "n", "p", "nf", "sf", "tf", "v", "x"])


@settings(max_examples=300)
@given(st.dictionaries(_keys, st.one_of(_value, st.just(DOC_ID)), max_size=7), st.booleans())
def test_decode_fuzz_structured(body: dict[str, Any], bin_type: bool) -> None:
    blob = msgpack.packb(body, use_bin_type=bin_type)
    try:
        ev = decode_consul_event(blob, 9)
    except EventDecodeError:
        return
    assert ev.ltime == 9 and is_event_id(ev.id)  # whatever the input, a well-formed event


# -- Serf events --------------------------------------------------------------------------------


def test_plain_serf_event_deterministic_id() -> None:
    a = plain_serf_event("deploy", b"v1", 10)
    assert a == plain_serf_event("deploy", b"v1", 10)
    assert uuid.UUID(a.id).version == 5 and uuid.UUID(a.id).variant == uuid.RFC_4122
    assert (a.name, a.payload, a.ltime, a.version) == ("deploy", b"v1", 10, 1)
    others = {
        plain_serf_event("deploy", b"v1", 11).id,
        plain_serf_event("deploy", b"v2", 10).id,
        plain_serf_event("deplo", b"yv1", 10).id,  # length-prefixed name: no ambiguity
        plain_serf_event("deploy", b"", 10).id,
    }
    assert a.id not in others and len(others) == 4


def test_decode_serf_event_routing() -> None:
    ev = Event(DOC_ID, "deploy", b"x")
    assert decode_serf_event(serf_event_name(ev), encode_consul_event(ev), 7) == Event(
        DOC_ID, "deploy", b"x", ltime=7
    )
    assert serf_event_name(ev) == CONSUL_EVENT_PREFIX + "deploy"
    assert decode_serf_event("consul:new-leader", b"", 7) is None
    plain = decode_serf_event("foo", b"bar", 7)
    assert plain == plain_serf_event("foo", b"bar", 7)
    with pytest.raises(EventDecodeError):
        decode_serf_event("consul:event:x", b"junk", 7)


def test_make_event() -> None:
    ev = make_event("deploy", b"p", service_filter="web", tag_filter="v1", rng=bytes(16))
    assert ev == Event(
        "00000000-0000-4000-8000-000000000000", "deploy", b"p", "", "web", "v1", 1, 0
    )
    with pytest.raises(FilterError):
        make_event("deploy", tag_filter="v1")


# -- EventStore: contents -----------------------------------------------------------------------


def test_empty_store_index_is_one() -> None:
    store = EventStore()
    assert store.list() == (1, [])
    assert store.list("deploy") == (1, [])
    assert len(store) == 0 and store.last_seq == 0 and store.first_seq == 1


def test_add_list_and_name_filter() -> None:
    store = EventStore()
    a, b, c = mk(1, "deploy"), mk(2, "restart"), mk(3, "deploy")
    for ev in (a, b, c):
        assert store.add(ev)
    assert store.list() == (id_to_index(c.id), [a, b, c])
    assert store.list("") == store.list(None)
    assert store.list("deploy") == (id_to_index(c.id), [a, c])
    assert store.list("restart") == (id_to_index(b.id), [b])
    assert store.list("nope") == (1, [])
    assert store.index("restart") == id_to_index(b.id)
    assert list(store) == [a, b, c] and a.id in store


def test_dedupe_by_id() -> None:
    store = EventStore()
    ev = mk(1)
    assert store.add(ev) is True
    assert store.add(Event(ev.id, "other-name", b"z")) is False
    assert (store.stored, store.deduped, len(store), store.last_seq) == (1, 1, 1, 1)
    assert store.list()[1] == [ev]


def test_bad_id_rejected_without_change() -> None:
    store = EventStore()
    with pytest.raises(ValueError):
        store.add(Event("nope", "x", None))
    assert len(store) == 0 and store.last_seq == 0 and store.stored == 0


def test_eviction_keeps_newest_256_in_arrival_order() -> None:
    store = EventStore()
    events = [mk(i, ltime=1000 - i) for i in range(300)]  # LTime order opposite to arrival
    for ev in events:
        store.add(ev)
    index, held = store.list()
    assert held == events[44:] and len(store) == 256
    assert index == id_to_index(events[-1].id)
    assert (store.stored, store.evicted) == (300, 44)
    assert (store.first_seq, store.last_seq) == (45, 300)
    assert store.max_ltime == 1000
    assert store.add(events[0]) is True  # evicted IDs are no longer known
    assert store.last_seq == 301


def test_since_and_seq() -> None:
    store = EventStore(capacity=4)
    events = [mk(i, "a" if i % 2 else "b") for i in range(6)]
    for ev in events:
        store.add(ev)
    assert store.since(0) == [(3, events[2]), (4, events[3]), (5, events[4]), (6, events[5])]
    assert store.since(4) == [(5, events[4]), (6, events[5])]
    assert store.since(4, "a") == [(6, events[5])]
    assert store.since(6) == []


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventStore(capacity=0)


# -- EventStore: blocking -----------------------------------------------------------------------


async def test_index_zero_and_differing_index_return_at_once(autojump_clock: Any) -> None:
    store = EventStore()
    ev = mk(1)
    store.add(ev)
    idx = id_to_index(ev.id)
    start = trio.current_time()
    assert await store.wait_list(None, 0, 60) == (idx, [ev])
    assert await store.wait_list(None, idx + 1, 60) == (idx, [ev])
    assert await store.wait_list(None, idx - 1, 60) == (idx, [ev])
    assert await store.wait_list("other", idx, 60) == (1, [])  # index for that name is 1
    assert trio.current_time() == start


async def test_returns_unchanged_at_timeout(autojump_clock: Any) -> None:
    store = EventStore()
    ev = mk(1)
    store.add(ev)
    idx = id_to_index(ev.id)
    start = trio.current_time()
    assert await store.wait_list(None, idx, 30) == (idx, [ev])
    assert trio.current_time() - start == pytest.approx(30)
    assert store.parked == 0


async def test_wakes_on_matching_add(autojump_clock: Any) -> None:
    store = EventStore()
    result: list[tuple[int, list[Event]]] = []
    start = trio.current_time()

    async def waiter() -> None:
        result.append(await store.wait_list("deploy", 1, 600))
        result.append((round(trio.current_time() - start), []))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(5)
        assert store.parked == 1 and not result
        ev = mk(1, "deploy")
        store.add(ev)
    assert result == [(id_to_index(ev.id), [ev]), (5, [])]
    assert store.parked == 0


async def test_non_matching_add_keeps_waiting(autojump_clock: Any) -> None:
    store = EventStore()
    first = mk(1, "deploy")
    store.add(first)
    idx = id_to_index(first.id)
    result: list[tuple[int, list[Event]]] = []
    start = trio.current_time()

    async def waiter() -> None:
        result.append(await store.wait_list("deploy", idx, 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(5)
        store.add(mk(2, "other"))
        await trio.sleep(5)
        assert not result and store.parked == 1  # woke, re-checked, parked again
    assert result == [(idx, [first])]
    assert trio.current_time() - start == pytest.approx(20)  # the original deadline


async def test_thousand_waiters_one_add(autojump_clock: Any) -> None:
    store = EventStore()
    done: list[int] = []

    async def waiter() -> None:
        index, events = await store.wait_list(None, 1, 600)
        assert len(events) == 1
        done.append(index)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(1000):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert store.parked == 1000
        ev = mk(1)
        store.add(ev)
    assert done == [id_to_index(ev.id)] * 1000
    assert store.parked == 0
    assert trio.current_time() == start


async def test_wait_seq(autojump_clock: Any) -> None:
    store = EventStore()
    a = mk(1, "a")
    store.add(a)
    assert await store.wait_seq(0, 10) == [(1, a)]
    start = trio.current_time()
    assert await store.wait_seq(1, 10) == []
    assert trio.current_time() - start == pytest.approx(10)
    got: list[list[tuple[int, Event]]] = []

    async def streamer() -> None:
        got.append(await store.wait_seq(1, 100, name="b"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(streamer)
        await trio.sleep(1)
        store.add(mk(2, "a"))  # not for this stream
        await trio.sleep(1)
        assert not got
        b = mk(3, "b")
        store.add(b)
    assert got == [[(3, b)]]


# -- EventStore: persistence --------------------------------------------------------------------


def test_persistence_round_trip_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    events = [mk(i, ltime=10 + i) for i in range(3)]
    with EventStore(path=path) as store:
        for ev in events:
            store.add(ev)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["seq"] == 1
    with EventStore(path=path) as again:
        assert again.list() == store.list()
        assert (again.loaded, again.stored, again.last_seq, again.max_ltime) == (3, 0, 3, 12)
        assert again.add(events[1]) is False  # still deduped after a restart
        new = mk(9)
        assert again.add(new) is True
        assert again.since(3) == [(4, new)]
    with EventStore(path=path) as third:
        assert third.last_seq == 4 and len(third) == 4


def test_compaction_keeps_file_bounded(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    cap = 4
    events = [mk(i, ltime=500 if i == 0 else i) for i in range(50)]  # evicted one has max LTime
    with EventStore(capacity=cap, path=path) as store:
        for ev in events:
            store.add(ev)
            assert len(path.read_text().splitlines()) <= 4 * cap + 1
    with EventStore(capacity=cap, path=path) as again:
        assert again.list()[1] == events[-cap:]
        assert [s for s, _ in again.since(0)] == [47, 48, 49, 50]
        assert again.last_seq == 50 and again.max_ltime == 500
        again.add(mk(99))
        assert again.last_seq == 51
    assert not list(tmp_path.glob("*.tmp"))


def test_load_keeps_newest_capacity(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventStore(capacity=10, path=path) as store:
        for i in range(10):
            store.add(mk(i))
    with EventStore(capacity=3, path=path) as smaller:
        assert [s for s, _ in smaller.since(0)] == [8, 9, 10]
        assert len(path.read_text().splitlines()) == 10  # not compacted: within 4x
        assert smaller.evicted == 0


def test_corrupt_lines_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.jsonl"
    a, b = mk(1), mk(2)
    good = [json.dumps({"seq": 1, **a.to_json()}), json.dumps({"seq": 2, **b.to_json()})]
    path.write_bytes(
        (
            good[0] + "\n"
            + "{not json\n"
            + json.dumps({"seq": 5, "ID": "bad", "Name": "x"}) + "\n"
            + json.dumps({"seq": 1, **mk(3).to_json()}) + "\n"  # out of order
            + "\xff\n"
            + good[1] + "\n"
        ).encode("utf-8", "surrogateescape")
        + b"\xff\xfe\n"
        + b'{"seq": 3, "ID": "torn'
    )  # fmt: skip
    with caplog.at_level(logging.WARNING), EventStore(path=path) as store:
        assert store.list()[1] == [a, b]
        assert store.last_seq == 2
        store.add(mk(4))
    assert caplog.text.count("skipping corrupt line") == 6
    lines = path.read_text().splitlines()  # compacted, then appended to
    assert [json.loads(x).get("seq") for x in lines] == [None, 1, 2, 3]


def test_persist_failure_keeps_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gone" / "events.jsonl"  # parent directory does not exist
    store = EventStore(path=path)
    with caplog.at_level(logging.ERROR):
        assert store.add(mk(1)) is True
    assert len(store) == 1 and store.persist_errors == 1
    assert "cannot persist event" in caplog.text
