"""The snapshot file: Serf's line format, replay rules, range checks and compaction."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.snapshot import (
    MAX_FILE_BYTES,
    MIN_COMPACT_SIZE,
    Previous,
    Snapshotter,
    parse_addr,
    replay,
)
from gossip.node import Clocks


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "local.snapshot"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_replay_later_lines_win(tmp_path: Path) -> None:
    path = write(tmp_path, "alive: a 10.0.0.1:8301\nalive: b 10.0.0.2:8301\nclock: 5\n"
                 "event-clock: 9\nquery-clock: 3\nnot-alive: a\nalive: c d [::1]:7946\n"
                 "clock: 7\n# comment\ncoordinate: ignored\n")
    prev = replay(path)
    assert prev.members == {"b": "10.0.0.2:8301", "c d": "[::1]:7946"}
    assert prev.clocks == Clocks(7, 9, 3)


def test_leave_forgets_members_but_keeps_clocks(tmp_path: Path) -> None:
    text = "alive: a 10.0.0.1:8301\nclock: 5\nevent-clock: 9\nleave\n"
    assert replay(write(tmp_path, text)) == Previous(Clocks(5, 9, 0), {})
    assert replay(write(tmp_path, text), rejoin_after_leave=True).members == {
        "a": "10.0.0.1:8301"}
    after = replay(write(tmp_path, text + "alive: b 10.0.0.2:8301\n"))
    assert after.members == {"b": "10.0.0.2:8301"}


@pytest.mark.parametrize("line", [
    "clock: 18446744073709551616", "clock: -1", "event-clock: 1e9", "query-clock: ",
    "clock: 00000000000000000000001", "alive: a 10.0.0.1:0", "alive: a 10.0.0.1:65536",
    "alive: a 300.0.0.1:8301", "alive: a10.0.0.1:8301", "alive:  10.0.0.1:8301",
    "alive: a\x01b 10.0.0.1:8301", "alive: a ::1:8301", "bogus", "x" * 5000,
])
def test_bad_lines_are_skipped_with_file_and_line(tmp_path: Path, line: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, f"clock: 4\nalive: ok 10.0.0.9:8301\n{line}\n")
    with caplog.at_level(logging.WARNING, "rumor.agent"):
        prev = replay(path)
    assert prev.clocks == Clocks(4, 0, 0) and prev.members == {"ok": "10.0.0.9:8301"}
    assert any(str(path) in r.message and "line 3" in r.message for r in caplog.records)


def test_clock_range_leaves_room_to_advance(tmp_path: Path) -> None:
    assert replay(write(tmp_path, "clock: 9223372036854775807\n")).clocks.member == 2**63 - 1
    assert replay(write(tmp_path, "clock: 9223372036854775808\n")).clocks.member == 0
    assert replay(write(tmp_path, "clock: 18446744073709551615\n")).clocks.member == 0


def test_torn_last_line_binary_and_unreadable_files(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "rumor.agent"):
        assert replay(write(tmp_path, "clock: 3\nclock: 9")).clocks.member == 3
        assert replay(write(tmp_path, b"\xff\xfe\x00\nclock: 2\n")).clocks.member == 2
        assert replay(tmp_path / "missing") == Previous()
        d = tmp_path / "dir.snapshot"
        d.mkdir()
        assert replay(d) == Previous()
    assert "torn" in caplog.text and "unreadable" in caplog.text


def test_oversized_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "local.snapshot"
    with path.open("wb") as fh:
        fh.write(b"clock: 5\n")
        fh.truncate(MAX_FILE_BYTES + 1)
    assert replay(path) == Previous()


def test_parse_addr() -> None:
    assert parse_addr("10.0.0.1:8301") == ("10.0.0.1", 8301)
    assert parse_addr("[::1]:7946") == ("::1", 7946)
    for bad in ("10.0.0.1", "[::1]7946", "host:8301", ":8301"):
        with pytest.raises(ValueError):
            parse_addr(bad)


def test_snapshotter_appends_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "serf" / "local.snapshot"
    snap = Snapshotter(path, Previous())
    snap.alive("a", "10.0.0.1", 8301)
    snap.update_clocks(Clocks(3, 4, 5))
    snap.update_clocks(Clocks(2, 4, 6))  # only forward movement is written
    snap.flush()
    assert path.read_text() == ("alive: a 10.0.0.1:8301\nclock: 3\nevent-clock: 4\n"
                                "query-clock: 5\nquery-clock: 6\n")
    sizes = []
    for i in range(MIN_COMPACT_SIZE // 10):  # ~10 bytes a line: well past one compaction
        snap.update_clocks(Clocks(10 + i, 4, 6))
        snap.flush()
        sizes.append(path.stat().st_size)
    assert max(sizes) <= MIN_COMPACT_SIZE
    assert any(b < a for a, b in zip(sizes, sizes[1:], strict=False))  # it was compacted
    prev = replay(path)
    assert prev.members == {"a": "10.0.0.1:8301"} and prev.clocks.member >= 10
    snap.not_alive("a")
    snap.leave(Clocks(1, 1, 1))
    assert replay(path) == Previous(Clocks(prev.clocks.member, 4, 6), {})
