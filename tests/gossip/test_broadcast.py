"""The transmit-limited broadcast queue (memberlist TransmitLimitedQueue semantics)."""

from __future__ import annotations

import random

import pytest

from gossip.broadcast import BroadcastQueue, retransmit_limit


@pytest.mark.parametrize("n,want", [(0, 4), (1, 4), (9, 4), (10, 8), (99, 8), (100, 12),
                                    (999, 12), (1000, 16)])
def test_retransmit_limit(n: int, want: int) -> None:
    assert retransmit_limit(4, n) == want
    assert retransmit_limit(2, n) == want // 2


def drain(q: BroadcastQueue, limit: int = 1400, n: int = 5) -> list[list[bytes]]:
    out = []
    for _ in range(1000):
        got = q.get(2, limit, n)
        if not got:
            break
        out.append(got)
    return out


def test_each_message_is_sent_exactly_the_limit_then_finished() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    done: list[str] = []
    q.queue(b"a" * 10, on_done=lambda: done.append("a"))
    q.queue(b"b" * 10, key="b", on_done=lambda: done.append("b"))
    rounds = drain(q, n=5)  # limit 4 for 5 nodes
    assert [sorted(r) for r in rounds] == [[b"a" * 10, b"b" * 10]] * 4
    assert sorted(done) == ["a", "b"] and len(q) == 0
    q.queue(b"b2", key="b")  # the key is free again after its message finished
    assert len(drain(q, n=50)) == 8  # limit 8 for 50 nodes


def test_fewest_sent_first_then_newest() -> None:
    q = BroadcastQueue()
    q.queue(b"old-1")
    q.queue(b"old-2")
    assert q.get(2, 7, 5) == [b"old-2"]  # room for one: the newest
    q.queue(b"new-3")
    assert q.get(2, 7, 5) == [b"new-3"]  # never sent beats newest-but-sent
    assert q.get(2, 7, 5) == [b"old-1"]
    assert sorted(q.get(2, 100, 5)) == [b"new-3", b"old-1", b"old-2"]  # all at 1 transmit
    for i in range(5):
        q.queue(f"fresh-{i}".encode())
    assert q.get(2, 9 * 3, 5) == [b"fresh-4", b"fresh-3", b"fresh-2"]  # newest first


def test_size_limit_and_skipping_what_does_not_fit() -> None:
    q = BroadcastQueue()
    q.queue(b"s" * 10)
    q.queue(b"L" * 100)
    q.queue(b"m" * 20)
    got = q.get(2, 40, 5)  # the 100-byte one does not fit; the others do (12 + 22 <= 40)
    assert got == [b"m" * 20, b"s" * 10]
    assert sorted(q.get(2, 101, 5)) == [b"m" * 20, b"s" * 10]  # L costs 102: no fit
    assert q.get(2, 102, 5) == [b"L" * 100]  # never sent goes first, and fills the packet
    assert q.get(2, 1, 5) == []
    assert len(q) == 3


def test_keyed_message_invalidates_the_queued_one() -> None:
    q = BroadcastQueue()
    finished: list[int] = []
    q.queue(b"alive-1", key="n1", on_done=lambda: finished.append(1))
    q.get(2, 1400, 5)
    q.queue(b"suspect", key="n1", on_done=lambda: finished.append(2))
    q.queue(b"other", key="n2")
    assert finished == [1] and len(q) == 2
    assert sorted(q.get(2, 1400, 5)) == [b"other", b"suspect"]
    q.queue(b"dead", key="n1")
    assert finished == [1, 2]
    assert sorted(m for r in drain(q) for m in r) == sorted([b"dead"] * 4 + [b"other"] * 3)


def test_unkeyed_messages_never_invalidate() -> None:
    q = BroadcastQueue()
    q.queue(b"x")
    q.queue(b"x")
    assert q.get(2, 1400, 5) == [b"x", b"x"]


def test_prune_drops_most_transmitted_then_oldest() -> None:
    q = BroadcastQueue()
    dropped: list[bytes] = []
    for name in (b"a", b"b", b"c"):
        q.queue(name, on_done=lambda n=name: dropped.append(n))
    assert q.get(2, 3, 5) == [b"c"]  # room for one: the newest
    assert q.get(2, 3, 5) == [b"b"]  # fewest sent: b (0) before c (1)
    q.queue(b"d", on_done=lambda: dropped.append(b"d"))
    assert q.prune(10) == 0
    assert q.prune(2) == 2
    assert dropped == [b"c", b"b"]  # the sent ones go; never-sent a and d stay
    assert q.dropped == 2 and len(q) == 2
    assert sorted(q.get(2, 1400, 5)) == [b"a", b"d"]
    q.reset()
    assert len(q) == 0 and q.get(2, 1400, 5) == []


def test_gives_up_scanning_after_many_misses() -> None:
    q = BroadcastQueue()
    q.queue(b"small")
    for _ in range(20):
        q.queue(b"B" * 500)
    assert q.get(2, 100, 5) == []  # 17 misses in a row: treated as full
    assert len(q) == 21


def test_random_workload_keeps_count_and_limits() -> None:
    rng = random.Random(1)
    q = BroadcastQueue()
    sent: dict[bytes, int] = {}
    live: set[bytes] = set()
    keys: dict[str, bytes] = {}
    for i in range(3000):
        if rng.random() < 0.3:
            msg = f"m{i}".encode() * rng.randint(1, 30)
            key = rng.choice([None, "k1", "k2", "k3"])
            if key is not None and key in keys:
                live.discard(keys[key])
            if key is not None:
                keys[key] = msg
            q.queue(msg, key=key)
            live.add(msg)
        got = q.get(2, rng.randint(20, 600), 50)
        assert len(got) == len(set(got)) or len({id(g) for g in got}) == len(got)
        for m in got:
            assert m in live
            sent[m] = sent.get(m, 0) + 1
            if sent[m] == 8:
                live.discard(m)
        assert all(v <= 8 for v in sent.values())
        assert len(q) == len(live)
