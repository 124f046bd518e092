"""Hostile input against real ``rumor agent`` processes (issue 13, agent side; issue 9 filters).

* A bad ``events.jsonl`` (clocks past 2**64 or 2**63, negative or non-integer clocks, a deeply
  nested line, invalid UTF-8) never keeps the agent from starting: each bad line is skipped
  with a warning naming the file and the line, and fires answer 200 afterwards.
* An unusable data file (a directory, a symlink loop) or data dir stops the agent with one line,
  ``==> Error starting agent: …`` naming the path, never a traceback.
* Filters are RE2: the patterns that stall a backtracking engine cost nothing, on the firing
  agent, on receivers, and on an agent that joins later and gets the event replayed.
* ``rumor watch -timeout`` kills a handler that hangs and exits non-zero.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from tests.agent.helpers import (
    RUMOR,
    AgentProcess,
    free_host,
    free_subnet,
    run_cli,
    stop_all,
    wait_for,
)


def record(seq: int, ltime: object, name: str = "ok", **extra: object) -> bytes:
    rec = {"seq": seq, "ID": str(uuid.uuid4()), "Name": name,
           "Payload": base64.b64encode(b"p").decode(), "NodeFilter": "", "ServiceFilter": "",
           "TagFilter": "", "Version": 1, "LTime": ltime, **extra}
    return json.dumps(rec).encode()


def test_bad_lines_in_the_event_log_are_skipped_with_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "a"
    data.mkdir()
    log_file = data / "events.jsonl"
    good1, good2 = record(1, 3, "first"), record(7, 5, "second")
    lines = [
        json.dumps({"meta": {"next_seq": 1, "max_ltime": 2**64}}).encode(),  # 1: past uint64
        good1,  # 2
        record(2, 2**64),  # 3
        record(3, -1),  # 4
        record(4, "5"),  # 5
        record(5, 1.5),  # 6
        b"[" * 200_000,  # 7: RecursionError in the JSON decoder
        b'{"seq": 6, "ID": "\xff\xfe"}',  # 8: not UTF-8
        json.dumps({"meta": {"max_ltime": 2**64 - 1}}).encode(),  # 9: uint64, but past 2**63
        json.dumps({"meta": {"next_seq": "x"}}).encode(),  # 10
        record(6, 2**63),  # 11
        b"9" * 5000,  # 12: more digits than Python converts
        good2,  # 13
    ]
    log_file.write_bytes(b"\n".join(lines) + b"\n")
    a = AgentProcess("a", free_host(), data)
    try:
        a.start().wait_ready()
        assert [e["Name"] for e in a.events()] == ["first", "second"]
        text = a.log_path.read_text(errors="replace")
        for n in (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12):
            assert f"skipping corrupt line {n} of {log_file}" in text, n
        assert "Traceback" not in text
        r = a.fire("after")
        assert r.status == 200, r
        assert r.json()["LTime"] < 100  # the clock was restored from the good lines only
        assert a.request("GET", "/v1/agent/metrics").status == 200
    finally:
        a.stop()
    # the log was rewritten without the bad lines: a second start warns about nothing
    assert b"2**64" not in log_file.read_bytes()
    a2 = AgentProcess("a", a.host, data)
    try:
        a2.start().wait_ready()
        assert [e["Name"] for e in a2.events()] == ["first", "second", "after"]
    finally:
        a2.stop()
    assert a2.log_path.read_text().count("skipping corrupt line") == 11


def unusable(tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    host = free_host()
    return run_cli("agent", "-node=u", f"-bind={host}", f"-client={host}", f"-data-dir={data}",
                   timeout=30)


def one_line_start_error(result: subprocess.CompletedProcess[str], names: str,
                         prefix: str = "==> Error starting agent: ") -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("==> ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(prefix) and names in errors[0], errors


@pytest.mark.parametrize("target", ["events.jsonl", "services.json"])
def test_a_directory_where_a_data_file_belongs_is_a_one_line_error(
        tmp_path: Path, target: str) -> None:
    data = tmp_path / "d"
    (data / target).mkdir(parents=True)
    result = unusable(tmp_path, data)
    one_line_start_error(result, str(data / target))
    assert "directory" in result.stderr


def test_an_unreadable_event_log_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    os.symlink("events.jsonl", data / "events.jsonl")  # a loop: unreadable, even for root
    one_line_start_error(unusable(tmp_path, data), str(data / "events.jsonl"))


def test_a_data_dir_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "file"
    data.write_text("not a directory")
    # the configuration check catches this one before the agent starts
    one_line_start_error(unusable(tmp_path, data), str(data), "==> Error: data_dir: ")


def test_a_deeply_nested_service_catalog_is_skipped_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "c"
    data.mkdir()
    (data / "services.json").write_bytes(b"[" * 200_000)
    a = AgentProcess("c", free_host(), data)
    try:
        a.start().wait_ready()
        assert a.get_json("/v1/agent/services") == {}
        text = a.log_path.read_text()
        assert f"corrupt service catalog {data / 'services.json'}" in text
        assert "Traceback" not in text
    finally:
        a.stop()


# ---- filters --------------------------------------------------------------------------------

LONG = "b" * 60 + "!"  # a node name a backtracking engine cannot match these against


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProcess]]:
    net = free_subnet(3)
    root = tmp_path_factory.mktemp("filters")
    a = AgentProcess("a1", f"{net}.1", root / "a1")
    b = AgentProcess(LONG, f"{net}.2", root / "b")
    try:
        a.start().wait_ready()
        b.start(f"-join={a.serf_addr}").wait_ready()
        wait_for(lambda: a.alive_members() == {a.name, b.name}, 10, "the pair to meet")
        yield [a, b]
    finally:
        stop_all([a, b], signal.SIGKILL)


def fire_filtered(a: AgentProcess, name: str, node: str) -> tuple[int, str]:
    r = a.request("PUT", f"/v1/event/fire/{name}?node={quote(node)}", b"x")
    return r.status, r.text


def test_go_syntax_and_perl_only_syntax(pair: list[AgentProcess]) -> None:
    a, b = pair
    status, text = fire_filtered(a, "brefs", r"(a)\1")
    assert status == 400
    assert text == ("Invalid node filter: error parsing regexp: invalid escape sequence: "
                    "`\\1`")
    status, text = fire_filtered(a, "look", r"a(?=1)")
    assert status == 400 and "invalid or unsupported Perl syntax" in text
    assert fire_filtered(a, "rep", "a{1001}")[0] == 400
    assert fire_filtered(a, "ci", "(?i)^A1$")[0] == 200  # Go's inline flag
    wait_for(lambda: [e["Name"] for e in a.events("ci")] == ["ci"], 10, "a1 to keep ci")
    assert a.metrics()["rumor_events_fired_total"] >= 1


def test_pathological_filters_cost_linear_time_everywhere(
        pair: list[AgentProcess], tmp_path: Path) -> None:
    a, b = pair
    for name, pattern in (("redos1", r"(\w|\w\w)+$"), ("redos2", "(.?){1000}!!"),
                          ("redos3", r"(b|bb)+$")):
        assert fire_filtered(a, name, pattern)[0] == 200
    # b evaluates them against its long name, answers at once and gets the next event
    r = a.fire("plain")
    assert r.status == 200
    wait_for(lambda: [e["Name"] for e in b.events("plain")] == ["plain"], 10,
             "b to get the event after the hostile filters")
    assert b.events("redos1") == [] and b.events("redos3") == []
    assert [e["Name"] for e in a.events("redos1")] == ["redos1"]  # a1 matches \w+$
    # a late joiner gets all of them replayed on join and is not stalled either
    c = AgentProcess("c" * 60 + "!", free_host(a.host.rsplit(".", 1)[0]), tmp_path / "c")
    try:
        c.start(f"-join={a.serf_addr}").wait_ready()
        wait_for(lambda: [e["Name"] for e in c.events("plain")] == ["plain"], 10,
                 "the late joiner to get the history")
        assert c.events("redos2") == []
        assert c.request("GET", "/v1/agent/self", timeout=5).status == 200
    finally:
        c.stop(signal.SIGKILL)


# ---- watch -timeout ---------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_watch_timeout_kills_a_hanging_handler(pair: list[AgentProcess], tmp_path: Path) -> None:
    a, _ = pair
    assert a.fire("hang").status == 200
    pid_file = tmp_path / "pid"
    handler = f"sleep 300 & echo $! > {pid_file}; wait"
    proc = subprocess.Popen([*RUMOR, "watch", f"-http-addr={a.http_addr}", "-type=event",
                             "-name=hang", "-timeout=3s", handler],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (out, err)
    assert "-timeout=3s ran out" in err and "killed" in err, err
    pid = int(pid_file.read_text())
    wait_for(lambda: not alive(pid), 5, "the handler's child to be gone")


# ---- a clock the network moved to the edge (in process) ------------------------------------


async def test_an_exhausted_event_clock_is_a_503_with_a_reason_not_a_500() -> None:
    from tests.agent.helpers import in_process_agent, random_subnet

    with trio.fail_after(20):
        async with in_process_agent(f"{random_subnet()}.1", "edge") as a:
            a.agent.node._serf.event_clock.counter = 2**64 - 1  # the clock saturates there
            r = await a.client.put("/v1/event/fire/late", content=b"x")
            assert r.status_code == 503, r.text
            assert "event clock cannot advance" in r.text
            assert (await a.client.get("/v1/event/list")).json() == []
            assert (await a.client.get("/v1/agent/self")).status_code == 200
