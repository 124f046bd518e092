"""agent.watch: dedupe across index resets and restarts, handler contract, backoff, exits.

The loop runs against a scripted fake client and a fake clock: no sockets, no real sleeps
(except the one test that runs a real /bin/sh handler)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agent.client import ClientError, Params, Response
from agent.watch import (
    EXIT_TIMEOUT,
    EventWatch,
    HandlerTimeout,
    SeenIDs,
    WatchOptions,
    backoff,
    run_handler,
)
from tests.agent.helpers import wait_for


def ev(n: int, name: str = "deploy") -> dict[str, Any]:
    return {"ID": f"0000000{n}-0000-0000-0000-000000000000", "Name": name, "Payload": None,
            "NodeFilter": "", "ServiceFilter": "", "TagFilter": "", "Version": 1, "LTime": n}


def listing(events: list[dict[str, Any]], index: int) -> Response:
    return Response(200, {"X-Consul-Index": str(index)}, json.dumps(events).encode())


SELF = Response(200, {}, b'{"Config": {"NodeName": "n1"}}')
Step = Response | Exception | Callable[["FakeClock"], Response]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeClient:
    """Answers GETs from a script; records (path, params, timeout) of each."""

    def __init__(self, clock: FakeClock, steps: Sequence[Step], self_resp: Step = SELF) -> None:
        self.clock, self.steps, self.self_resp = clock, list(steps), self_resp
        self.calls: list[tuple[str, dict[str, str], float | None]] = []

    def get(self, path: str, params: Params = None, timeout: float | None = None) -> Response:
        items = params.items() if isinstance(params, Mapping) else (params or [])
        self.calls.append((path, {k: v for k, v in items if v is not None}, timeout))
        if path == "/v1/agent/self":
            step = self.self_resp
        else:
            assert path == "/v1/event/list"
            assert self.steps, "the watch polled more often than the script allows"
            step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step(self.clock) if callable(step) else step

    def list_params(self) -> list[dict[str, str]]:
        return [p for path, p, _ in self.calls if path == "/v1/event/list"]


class Recorder:
    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.calls: list[tuple[list[dict[str, Any]], str]] = []
        self.raw: list[bytes] = []

    def __call__(self, argv: Sequence[str], shell: bool, stdin: bytes,
                 env: Mapping[str, str], timeout: float | None = None) -> int:
        assert list(argv) == ["handler.sh"] and shell
        self.raw.append(stdin)
        self.calls.append((json.loads(stdin), env["CONSUL_INDEX"]))
        return self.code


def make(steps: Sequence[Step], runner: Recorder | None = None, **opts: Any,
         ) -> tuple[EventWatch, FakeClient, FakeClock, io.StringIO, io.StringIO]:
    clock = FakeClock()
    client = FakeClient(clock, steps)
    out, err = io.StringIO(), io.StringIO()
    if runner is not None:
        opts.setdefault("handler", ("handler.sh",))
    w = EventWatch(client, WatchOptions(**opts), clock=clock, sleep=clock.sleep,
                   runner=runner or Recorder(), out=out, err=err)
    return w, client, clock, out, err


def ids(batch: list[dict[str, Any]]) -> list[int]:
    return [e["LTime"] for e in batch]


def test_index_reset_and_agent_restart_never_replay() -> None:
    a, b, c = ev(1), ev(2), ev(3)
    rec = Recorder()
    w, client, clock, _, _ = make([
        listing([a], 100),          # first poll (index 0): the buffer is delivered once
        listing([a, b], 50),        # new event, index went *down* (hash-derived)
        listing([a, b], 50),        # blocking query timed out, nothing new
        listing([], 1),             # the agent restarted with an empty buffer
        listing([a, b], 77),        # ...and push-pull replayed old events to it
        listing([b, a, c], 7),      # finally one really new event, in another order
    ], rec, max_events=3)
    assert w.run() == 0
    assert [(ids(batch), idx) for batch, idx in rec.calls] == [([1], "100"), ([2], "50"),
                                                             ([3], "7")]
    sent = [int(p.get("index", "0")) for p in client.list_params()]
    assert sent == [0, 100, 50, 50, 1, 77]  # never back to 0 (Consul's reset bug)
    assert client.calls[0][0] == "/v1/agent/self"
    # the handler gets one compact JSON line, newline terminated
    assert rec.raw[0] == (json.dumps([a], separators=(",", ":")) + "\n").encode()


def test_duplicates_in_one_response_and_events_without_ids() -> None:
    rec = Recorder()
    no_id = {"Name": "x", "LTime": 9}
    w, *_ = make([listing([ev(1), ev(1), no_id, dict(no_id)], 5),
                  listing([ev(1), no_id, ev(2)], 6)], rec, max_events=3)
    assert w.run() == 0
    assert [ids(b) for b, _ in rec.calls] == [[1, 9], [2]]


def test_since_now_skips_the_existing_buffer() -> None:
    rec = Recorder()
    w, *_ = make([listing([ev(1), ev(2)], 9), listing([ev(1), ev(2), ev(3)], 4)], rec,
                 since_now=True, max_events=1)
    assert w.run() == 0
    assert [ids(b) for b, _ in rec.calls] == [[3]]


def test_no_handler_prints_buffer_once_and_exits() -> None:
    w, client, _, out, _ = make([listing([ev(1), ev(2)], 9)])
    assert w.run() == 0
    assert out.getvalue() == json.dumps([ev(1), ev(2)], indent=4) + "\n"
    assert client.list_params() == [{}]
    w, _, _, out, _ = make([listing([], 1)], name="deploy")
    assert w.run() == 0 and out.getvalue() == "[]\n"


def test_no_handler_since_now_waits_for_a_new_event() -> None:
    w, client, _, out, _ = make([listing([ev(1)], 9), listing([ev(1)], 12),
                                 listing([ev(1), ev(2)], 3)], since_now=True, name="deploy")
    assert w.run() == 0
    assert json.loads(out.getvalue()) == [ev(2)]
    assert [p.get("index") for p in client.list_params()] == [None, "9", "12"]
    assert all(p["name"] == "deploy" for p in client.list_params())


def test_state_file_survives_a_watch_restart(tmp_path: Path) -> None:
    state = str(tmp_path / "seen.json")
    rec = Recorder()
    w, *_ = make([listing([ev(1), ev(2)], 5)], rec, state_file=state, max_events=2)
    assert w.run() == 0
    rec2 = Recorder()
    w, *_ = make([listing([ev(1), ev(2), ev(3)], 8)], rec2, state_file=state, max_events=1)
    assert w.run() == 0
    assert [ids(b) for b, _ in rec2.calls] == [[3]]
    assert json.loads(Path(state).read_text())["seen"][-3:] == [ev(i)["ID"] for i in (1, 2, 3)]


def test_corrupt_state_file_is_an_error(tmp_path: Path) -> None:
    state = tmp_path / "seen.json"
    state.write_text("{not json")
    w, client, _, _, err = make([], Recorder(), state_file=str(state))
    assert w.run() == 1
    assert err.getvalue().startswith(f"Error reading state file {state}")
    assert client.calls == []


def test_failed_handler_stops_and_does_not_mark_events_seen(tmp_path: Path) -> None:
    state = tmp_path / "seen.json"
    w, _, _, _, err = make([listing([ev(1)], 5)], Recorder(code=3), state_file=str(state))
    assert w.run() == 1
    assert "Error executing handler: exit status 3" in err.getvalue()
    assert not state.exists()  # a restarted watch retries the batch


def test_errors_back_off_quadratically_then_reset() -> None:
    boom = ClientError("Error connecting to rumor agent at 127.0.0.1:8500: Connection refused")
    steps: list[Step] = [boom, Response(500, {}, b"oops"), Response(200, {}, b"[]"),
                         Response(200, {"X-Consul-Index": "3"}, b"{bad"),
                         Response(200, {"X-Consul-Index": "3"}, b'{"a": 1}'),
                         boom, boom, boom, boom]
    rec = Recorder()
    w, _, clock, _, err = make([*steps, listing([ev(1)], 4), boom, listing([ev(2)], 6)], rec,
                               max_events=2)
    assert w.run() == 0
    assert clock.sleeps == [5, 20, 45, 80, 125, 180, 180, 180, 180, 5]
    assert [backoff(n) for n in (1, 2, 3, 6, 7, 100)] == [5, 20, 45, 180, 180, 180]
    text = err.getvalue()
    assert "Unexpected response code: 500 (oops)" in text
    assert "bad or missing X-Consul-Index" in text and "invalid JSON" in text
    assert "retry in 5s" in text and "expected a JSON array" in text


def test_agent_self_failure_aborts() -> None:
    clock = FakeClock()
    cases: list[tuple[Step, str]] = [
        (ClientError("Error connecting to rumor agent at x:1: Connection refused"),
         "Error querying rumor agent: Error connecting"),
        (Response(403, {}, b"Permission denied"),
         "Error querying rumor agent: Unexpected response code: 403 (Permission denied)"),
    ]
    for self_resp, msg in cases:
        client = FakeClient(clock, [], self_resp)
        err = io.StringIO()
        w = EventWatch(client, WatchOptions(), clock=clock, sleep=clock.sleep, err=err)
        assert w.run() == 1
        assert err.getvalue().startswith(msg)


def test_timeout_bounds_each_wait_and_exit_code() -> None:
    def block(events: list[dict[str, Any]], index: int) -> Callable[[FakeClock], Response]:
        def step(clock: FakeClock) -> Response:
            wait = client.list_params()[-1].get("wait")
            if wait is not None:
                clock.now += float(wait.rstrip("s"))
            return listing(events, index)
        return step

    for max_events, code in [(None, 0), (5, EXIT_TIMEOUT)]:
        steps = [block([ev(1)], 9)] + [block([ev(1)], 9) for _ in range(6)]
        w, client, clock, _, _ = make(steps, Recorder(), timeout=10.0, wait=3.0,
                                      max_events=max_events)
        assert w.run() == code
        waits = [(p.get("index"), p.get("wait")) for p in client.list_params()]
        assert waits == [(None, None), ("9", "3s"), ("9", "3s"), ("9", "3s"), ("9", "1s")]
        assert clock.now == 1010.0 and clock.sleeps == []
        timeouts = [t for path, _, t in client.calls if path == "/v1/event/list"]
        assert timeouts[0] is None and timeouts[1] == pytest.approx(18.0)


def test_agent_that_does_not_block_is_not_hammered() -> None:
    # same index, answered instantly: the loop waits MIN_REPOLL before asking again
    w, client, clock, _, _ = make([listing([ev(1)], 9)] * 4, Recorder(), timeout=2.5)
    assert w.run() == 0
    assert clock.sleeps == [1.0, 1.0, 0.5]
    assert len(client.list_params()) == 4


def test_seen_ids_is_bounded_lru(tmp_path: Path) -> None:
    s = SeenIDs(limit=3)
    for k in "abc":
        s.touch(k)
    s.touch("a")  # a is recent again, so b goes first
    s.touch("d")
    assert "b" not in s and all(k in s for k in "acd") and len(s) == 3
    path = str(tmp_path / "state")
    s.save(path)
    t = SeenIDs(limit=3)
    t.load(path)
    assert all(k in t for k in "acd")
    SeenIDs().load(str(tmp_path / "missing"))  # no file: empty state, no error
    (tmp_path / "wrong").write_text('{"seen": [1]}')
    with pytest.raises(ValueError, match="not a rumor watch state file"):
        SeenIDs().load(str(tmp_path / "wrong"))


def test_real_shell_handler_gets_json_on_stdin_and_consul_index(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = f'cat >> {out}; echo "index=$CONSUL_INDEX" >> {out}'
    clock = FakeClock()
    client = FakeClient(clock, [listing([ev(1)], 123), listing([ev(1), ev(2)], 45)])
    w = EventWatch(client, WatchOptions(handler=(script,), max_events=2), clock=clock,
                   sleep=clock.sleep, runner=run_handler, err=io.StringIO())
    assert w.run() == 0
    lines = out.read_text().splitlines()
    assert [json.loads(lines[0]), lines[1]] == [[ev(1)], "index=123"]
    assert [json.loads(lines[2]), lines[3]] == [[ev(2)], "index=45"]
    assert len(lines) == 4
    # exit status comes back; shell=False runs argv directly
    assert run_handler(["exit 7"], True, b"", {}) == 7
    assert run_handler(["/bin/sh", "-c", "exit 5"], False, b"", {}) == 5
    assert run_handler(["/nonexistent/handler"], False, b"", {}) == 127


def test_a_handler_past_the_deadline_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(HandlerTimeout, match="still running after 0.5s"):
        run_handler([f"sleep 60 & echo $! > {pid_file}; wait"], True, b"", {}, timeout=0.5)
    pid = int(pid_file.read_text())
    # SIGKILL is queued at once but takes effect when the child next runs: on a busy machine
    # it may still show "R" for a moment; it must be a zombie or gone within a bounded wait
    wait_for(partial(killed, pid), 10.0, f"the handler's child {pid} to be killed")


def killed(pid: int) -> bool:
    """``pid`` is a zombie (killed, not yet reaped) or gone (killed and reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_watch_gets_the_remaining_time_and_a_timed_out_handler_is_not_a_delivery(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    seen_timeouts: list[float | None] = []

    def hangs(argv: Sequence[str], shell: bool, stdin: bytes, env: Mapping[str, str],
              timeout: float | None = None) -> int:
        seen_timeouts.append(timeout)
        raise HandlerTimeout("handler still running after 8s; killed its process group 1")

    clock = FakeClock()
    client = FakeClient(clock, [listing([ev(1)], 5)])
    err = io.StringIO()
    w = EventWatch(client, WatchOptions(handler=("h",), timeout=8.0, state_file=str(state)),
                   clock=clock, sleep=clock.sleep, runner=hangs, err=err)
    assert w.run() == 1
    assert seen_timeouts == [pytest.approx(8.0)]
    assert "-timeout=8s ran out" in err.getvalue()
    assert not state.exists()  # nothing was marked delivered
