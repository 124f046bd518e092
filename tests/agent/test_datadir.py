"""agent/datadir.py and the loaders built on it: no data-dir file can crash or hang a start."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from agent import datadir
from agent.catalog import Catalog
from agent.datadir import DataFileError, prepare_data_dir, read_data_file
from agent.events import EventStore, make_event


def test_missing_is_none_and_regular_files_are_read(tmp_path: Path) -> None:
    assert read_data_file(tmp_path / "nope") is None
    (tmp_path / "f").write_bytes(b"abc")
    assert read_data_file(tmp_path / "f") == b"abc"


@pytest.mark.parametrize("kind", ["dir", "fifo", "loop"])
def test_unusable_files_are_named_errors_and_never_block(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "events.jsonl"
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # reading it would block the start forever
    else:
        os.symlink(path.name, path)
    with pytest.raises(DataFileError, match=f"^cannot read {path}: "):
        read_data_file(path)
    with pytest.raises(DataFileError, match=str(path)):
        EventStore(8, path)
    with pytest.raises(DataFileError, match=str(path)):
        Catalog(path)


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datadir, "MAX_DATA_FILE", 10)
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(DataFileError, match="11 bytes is more than the 10"):
        read_data_file(tmp_path / "big")


def test_prepare_data_dir(tmp_path: Path) -> None:
    prepare_data_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataFileError, match="exists and is not a directory"):
        prepare_data_dir(tmp_path / "file")
    with pytest.raises(DataFileError, match="cannot create data_dir"):
        prepare_data_dir(tmp_path / "file" / "sub")


def test_event_log_clock_bounds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ok = make_event("ok").to_json()
    lines = [
        {"meta": {"next_seq": 1, "max_ltime": 2**63 - 1}},  # the largest restorable clock
        {"seq": 1, **ok, "LTime": 2**63 - 1},
        {"seq": 2, **make_event("edge").to_json(), "LTime": 2**63},
        {"meta": {"next_seq": 2**63}},
        {"meta": {"max_ltime": True}},
        {"seq": 2**63, **make_event("seq").to_json()},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with caplog.at_level(logging.WARNING):
        store = EventStore(8, path)
    assert [e.name for e in store] == ["ok"] and store.max_ltime == 2**63 - 1
    for n in (3, 4, 5, 6):
        assert f"skipping corrupt line {n} of {path}" in caplog.text
    store.close()


def test_catalog_entries_are_named_by_position(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps([{"Name": "web"}, {"Name": 5}, [[[]]]]))
    with caplog.at_level(logging.WARNING):
        cat = Catalog(path)
    assert [e.id for e in cat] == ["web"]
    assert f"skipping bad service #2 in {path}" in caplog.text
    assert f"skipping bad service #3 in {path}" in caplog.text
