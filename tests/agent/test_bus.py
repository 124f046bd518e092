"""The bus on its own: indexes, topic filters, catch-up, gaps, slow subscribers, the log."""

from __future__ import annotations

import json
import logging
import time
import zlib
from pathlib import Path

import pytest
import trio

from agent.bus import Bus, Record
from agent.topics import TopicError, parse_topics


def fire(bus: Bus, name: str, n: int = 0) -> Record:
    ev = {"ID": f"00000000-0000-4000-8000-{n:012d}", "Name": name, "Payload": None,
          "NodeFilter": "", "ServiceFilter": "", "TagFilter": "", "Version": 1, "LTime": n}
    return bus.publish_event(ev)


def member(bus: Bus, kind: str, name: str) -> Record:
    return bus.publish_member(kind, {"Name": name, "Addr": "127.0.0.1", "Port": 8301,
                                     "Tags": {}, "Status": 1})


async def drain(sub, count: int) -> list[Record]:
    out = []
    with trio.fail_after(5):
        for _ in range(count):
            r = await sub.next()
            assert r is not None
            out.append(r)
    return out


def test_without_a_data_dir_numbering_starts_at_the_clock() -> None:
    before = int(time.time() * 1000)
    first = fire(Bus(), "e").index
    assert before <= first <= int(time.time() * 1000)
    assert first < 2**53  # a JSON number a browser reads exactly


def test_a_new_or_wiped_log_starts_at_the_clock(tmp_path: Path) -> None:
    bus = Bus(path=tmp_path / "bus.log")
    old = fire(bus, "e").index
    bus.close()
    reopened = Bus(path=tmp_path / "bus.log")
    try:
        assert fire(reopened, "e").index == old + 1  # continues
    finally:
        reopened.close()
    (tmp_path / "bus.log").unlink()
    time.sleep(0.01)  # the clock moves on faster than 1 record per ms was published
    wiped = Bus(path=tmp_path / "bus.log")
    try:
        assert fire(wiped, "e").index > old + 1  # never reused
    finally:
        wiped.close()


def test_index_only_grows_and_buffer_keeps_newest() -> None:
    bus = Bus(capacity=3, start=1)
    recs = [fire(bus, f"e{i}", i) for i in range(10)]
    assert [r.index for r in recs] == list(range(1, 11))
    assert bus.first_index == 8 and bus.last_index == 10 and len(bus) == 3
    assert [r.index for r in bus.held()] == [8, 9, 10]
    assert bus.after(8) is recs[8] and bus.after(10) is None and bus.after(0) is recs[7]


def test_nomad_shapes() -> None:
    bus = Bus(start=1)
    r = fire(bus, "deploy", 7)
    line = json.loads(r.ndjson())
    assert list(line) == ["Index", "Events"] and line["Index"] == 1
    ev = line["Events"][0]
    assert list(ev) == ["Topic", "Type", "Key", "Namespace", "FilterKeys", "Index", "Payload"]
    assert ev["Topic"] == "Event" and ev["Key"] == "deploy" and ev["Payload"]["LTime"] == 7
    assert ev["FilterKeys"] == ["00000000-0000-4000-8000-000000000007"]
    assert r.ndjson() is r.ndjson()  # rendered once
    m = json.loads(member(bus, "failed", "n2").ndjson())["Events"][0]
    assert (m["Topic"], m["Type"], m["Key"], m["FilterKeys"]) == ("Node", "NodeFailed", "n2",
                                                                  None)
    assert r.sse().startswith(b"id: 1\nevent: Event\ndata: {") and r.sse().endswith(b"}\n\n")


@pytest.mark.parametrize("bad", ["", ":x", "Event:", "Foo", "Foo:bar", "event:x",
                                 "Event:" + "a" * 300, "Event:a\nb"])
def test_topic_syntax_errors(bad: str) -> None:
    with pytest.raises(TopicError):
        parse_topics([bad])


def test_topic_matching() -> None:
    bus = Bus(start=1)
    a, b, n = fire(bus, "deploy-web", 1), fire(bus, "other", 2), member(bus, "join", "n1")
    assert all(parse_topics([])(r) for r in (a, b, n))
    f = parse_topics(["Event:deploy-*"])
    assert f(a) and not f(b) and not f(n)
    f = parse_topics(["Node"])
    assert f(n) and not f(a)
    f = parse_topics(["Node:*", "Event:other"])
    assert f(n) and f(b) and not f(a)
    assert parse_topics(["*:n1"])(n) and not parse_topics(["*:n1"])(a)
    assert parse_topics(["Event:00000000-0000-4000-8000-000000000002"])(b)  # FilterKeys
    assert not parse_topics(["Eval"])(a)  # a Nomad topic: accepted, never published
    with pytest.raises(TopicError):
        parse_topics(["Node"] * 33)


async def test_catch_up_then_live_in_order() -> None:
    bus = Bus(start=1)
    for i in range(5):
        fire(bus, "e", i)
    sub = bus.subscribe(parse_topics([]), after=2)
    got = await drain(sub, 3)
    assert [r.index for r in got] == [3, 4, 5]
    assert sub.poll() is None  # caught up: now live
    fire(bus, "e", 6)
    assert [r.index for r in await drain(sub, 1)] == [6]
    assert sub.live and bus.subscribers == 1
    bus.unsubscribe(sub)
    assert bus.subscribers == 0


async def test_gap_when_requested_records_are_gone_and_future_index() -> None:
    bus = Bus(capacity=4, start=1)
    for i in range(10):
        fire(bus, "e", i)
    sub = bus.subscribe(parse_topics([]), after=2)
    got = await drain(sub, 5)
    assert (got[0].topic, got[0].type) == ("Stream", "Gap")
    assert json.loads(got[0].payload) == {"Requested": 2, "FirstAvailable": 7}
    assert got[0].index == 6
    assert [r.index for r in got[1:]] == [7, 8, 9, 10]
    # an Index from another history (the agent lost its log): Gap, then everything held
    sub = bus.subscribe(parse_topics([]), after=99)
    got = await drain(sub, 5)
    assert got[0].type == "Gap" and json.loads(got[0].payload)["Requested"] == 99
    assert [r.index for r in got[1:]] == [7, 8, 9, 10]
    # 0: everything held, no gap; None: only new records
    assert [r.index for r in await drain(bus.subscribe(parse_topics([]), after=0), 1)] == [7]
    fresh = bus.subscribe(parse_topics([]), after=None)
    assert fresh.poll() is None
    fire(bus, "e", 11)
    assert [r.index for r in await drain(fresh, 1)] == [11]


async def test_may_read_hook_withholds_records() -> None:
    bus = Bus(start=1)
    fire(bus, "secret", 1)
    fire(bus, "public", 2)

    def may_read(r: Record) -> bool:
        if r.key == "boom":
            raise RuntimeError("resolver broke")
        return r.key != "secret"
    sub = bus.subscribe(parse_topics([]), may_read, after=0)
    assert [r.key for r in await drain(sub, 1)] == ["public"]
    fire(bus, "boom", 3)  # a failing hook withholds, never crashes publish
    fire(bus, "secret", 4)
    fire(bus, "public", 5)
    assert [r.index for r in await drain(sub, 1)] == [5]


async def test_slow_subscriber_is_closed_with_a_final_record_and_memory_bounded() -> None:
    bus = Bus(capacity=100, queue_limit=8, start=1)
    slow = bus.subscribe(parse_topics([]), after=None)
    fast = bus.subscribe(parse_topics([]), after=None)
    assert slow.poll() is None and fast.poll() is None  # both live
    got = []
    for i in range(50):
        fire(bus, "e", i)
        got.append(fast.poll())  # the fast one keeps reading
    assert [r.index for r in got] == list(range(1, 51))
    assert slow.done and len(slow.queue) == 1 and slow.high_water <= 8
    assert bus.subscribers == 1 and bus.slow_closed == 1
    final = await drain(slow, 1)
    assert (final[0].topic, final[0].type) == ("Stream", "Closed")
    body = json.loads(final[0].payload)
    assert body["LastIndex"] == 0 and "too slow" in body["Reason"]
    with trio.fail_after(1):
        assert await slow.next() is None


def test_persistence_keeps_indexes_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "bus.log"
    bus = Bus(capacity=5, path=path, start=1)
    for i in range(12):  # forces compactions
        fire(bus, "e", i)
    bus.close()
    again = Bus(capacity=5, path=path, start=1)
    assert [r.index for r in again.held()] == [8, 9, 10, 11, 12]
    assert again.held()[0].ndjson() == bus.after(7).ndjson()  # type: ignore[union-attr]
    assert fire(again, "e", 13).index == 13
    again.close()
    third = Bus(capacity=5, path=path, start=1)
    assert third.last_index == 13
    third.close()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def test_torn_tail_is_cut_and_its_index_never_reused(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bus.log"
    bus = Bus(capacity=100, path=path, start=1)
    for i in range(6):
        fire(bus, "e", i)
    bus.log.close()  # type: ignore[union-attr]  # killed while writing: no clean marker
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # record 6 torn in the middle
    with caplog.at_level(logging.WARNING, "rumor.bus"):
        again = Bus(capacity=100, path=path, start=1)
    assert "kept 5 records" in caplog.text
    assert again.last_index >= 6 and [r.index for r in again.held()] == [1, 2, 3, 4, 5]
    new = fire(again, "e", 7).index  # 6 may have been seen: numbering resumes past it
    assert new > 6
    sub = again.subscribe(parse_topics([]), after=4)  # reads across the hole
    assert [sub.poll().index, sub.poll().index] == [5, new]  # type: ignore[union-attr]
    again.close()
    assert Bus(capacity=100, path=path, start=1).last_index == new


def test_unclean_stop_never_reuses_an_index_clean_stop_does_not_jump(tmp_path: Path) -> None:
    path = tmp_path / "bus.log"
    bus = Bus(capacity=100, path=path, start=1)
    for i in range(3):
        fire(bus, "e", i)
    bus.close()  # clean
    bus = Bus(capacity=100, path=path, start=1)
    assert fire(bus, "e", 4).index == 4
    bus.log.close()  # type: ignore[union-attr]  # as if killed: no clean marker
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:-2]) + b"\n")  # and record 4 never reached the disk
    again = Bus(capacity=100, path=path, start=1)
    assert again.last_index >= 4  # 4 may have been streamed before the crash
    assert fire(again, "e", 5).index > 4
    again.close()


@pytest.mark.parametrize("corrupt", [
    lambda body: body.replace(b'"Index":3', b'"Index":-3'),
    lambda body: body.replace(b'"Index":3', b'"Index":18446744073709551616'),
    lambda body: body.replace(b'"Topic":"Event"', b'"Topic":"Evil"'),
    lambda body: body.replace(b'"Time":', b'"Time":"x","T":'),
    lambda body: body.replace(b'"Payload":{', b'"Payload":[{').replace(b"}}", b"}]}"),
    lambda body: body.replace(b'"Index":3', b'"Index":2'),
])
def test_corrupt_record_cuts_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                      corrupt) -> None:
    path = tmp_path / "bus.log"
    bus = Bus(capacity=100, path=path, start=1)
    for i in range(5):
        fire(bus, "e", i)
    bus.close()
    lines = _lines(path)
    assert b'"NextIndex"' in lines[0]  # the reservation comes first
    body = corrupt(lines[3][9:])  # re-checksummed, so only the range checks can catch it
    assert body != lines[3][9:]
    lines[3] = b"%08x %s" % (zlib.crc32(body), body)
    path.write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING, "rumor.bus"):
        again = Bus(capacity=100, path=path, start=1)
    assert "line 4 is corrupt" in caplog.text and "kept 2 records" in caplog.text
    assert [r.index for r in again.held()] == [1, 2]
    assert again.last_index >= 5  # nothing that was on disk is handed out again
    again.close()


def test_flipped_bit_fails_the_checksum(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bus.log"
    bus = Bus(capacity=100, path=path, start=1)
    for i in range(3):
        fire(bus, "abc", i)
    bus.close()
    path.write_bytes(path.read_bytes().replace(b"abc", b"abd", 1))
    with caplog.at_level(logging.WARNING, "rumor.bus"):
        again = Bus(capacity=100, path=path, start=1)
    assert "checksum mismatch" in caplog.text and len(again) == 0 and again.last_index >= 3
    again.close()
