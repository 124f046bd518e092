"""`rumor watch -type=event`: the long-poll loop over /v1/event/list and handler invocation.

Consul semantics (GET /v1/agent/self first, then blocking `GET /v1/event/list?index=`; no
handler prints the JSON once and exits; a handler gets the new events as one JSON line on
stdin and `CONSUL_INDEX` in its environment; errors back off `min(5 s * failures**2, 180 s)`),
without Consul's index-reset bug (consul #3742): event indexes are hashes of event IDs, not
counters, so "new" is decided by remembering the IDs already delivered (the last 4096, kept in
least-recently-seen order, optionally persisted to a state file), never by comparing indexes.
The loop takes its HTTP client, clock, sleep and handler runner as arguments, for tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from agent.client import ClientError, Params, Response
from agent.datadir import replace_file
from agent.duration import format_go_duration

BACKOFF_BASE, BACKOFF_MAX = 5.0, 180.0
MIN_REPOLL = 1.0  # an agent that answers a blocking query at once with the same index
HTTP_GRACE = 15.0  # socket timeout beyond the requested wait
EXIT_TIMEOUT = 2  # -timeout ran out before -max-events events were delivered
EXIT_HANDLER_KILLED = 1  # -timeout ran out while a handler ran: it was killed (like a failure)


class Getter(Protocol):
    def get(self, path: str, params: Params = None,
            timeout: float | None = None) -> Response: ...


class HandlerRunner(Protocol):
    def __call__(self, argv: Sequence[str], shell: bool, stdin: bytes, env: Mapping[str, str],
                 timeout: float | None = None) -> int: ...


class HandlerTimeout(Exception):
    """The handler was still running when the watch's -timeout ran out; it was killed."""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the handler and anything it started
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_handler(argv: Sequence[str], shell: bool, stdin: bytes, env: Mapping[str, str],
                timeout: float | None = None) -> int:
    """Run a handler (through `/bin/sh -c` when shell) with stdin; return its exit status.

    The handler runs in its own process group. If it is still running after ``timeout``
    seconds (or the watch is interrupted), the whole group is killed; on timeout
    ``HandlerTimeout`` is raised."""
    cmd = ["/bin/sh", "-c", " ".join(argv)] if shell else list(argv)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, env={**os.environ, **env},
                                process_group=0)
    except OSError as e:
        print(f"Error starting handler: {e}", file=sys.stderr)
        return 127
    try:
        proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise HandlerTimeout(f"handler still running after {timeout:g}s; killed its "
                             f"process group {proc.pid}") from None
    except BaseException:
        _kill_group(proc)
        raise
    return proc.returncode


def backoff(failures: int) -> float:
    return min(BACKOFF_BASE * failures * failures, BACKOFF_MAX)


def event_key(event: Mapping[str, Any]) -> str:
    """The identity used for de-duplication: the event ID, else a hash of the whole event."""
    ident = event.get("ID")
    if isinstance(ident, str) and ident:
        return ident
    blob = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


class SeenIDs:
    """A bounded set of event IDs, evicting the least recently seen first."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def touch(self, key: str) -> None:
        """Add key, or mark it recently seen; evict the oldest beyond the limit."""
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    def load(self, path: str) -> None:
        """Read a state file written by save(); a missing file is an empty state."""
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise ValueError(f"Error reading state file {path}: {e}") from None
        ids = data.get("seen") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"Error reading state file {path}: not a rumor watch state file")
        for key in ids:
            self.touch(key)

    def save(self, path: str) -> None:
        replace_file(Path(path), json.dumps({"version": 1, "seen": list(self._ids)}).encode())


@dataclass(frozen=True)
class WatchOptions:
    name: str | None = None
    handler: tuple[str, ...] = ()  # empty: print the JSON once and exit
    shell: bool = True
    since_now: bool = False  # skip the events already buffered when the watch starts
    state_file: str | None = None
    max_events: int | None = None  # exit 0 after delivering this many events
    timeout: float | None = None  # exit after this many seconds
    wait: float = 300.0  # blocking-query wait sent to the agent
    seen_limit: int = 4096


class WatchError(Exception):
    pass


class EventWatch:
    def __init__(self, client: Getter, options: WatchOptions, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 runner: HandlerRunner = run_handler,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.client, self.opts = client, options
        self.clock, self.sleep, self.runner = clock, sleep, runner
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.seen = SeenIDs(options.seen_limit)
        self.delivered = 0
        self.polls: list[int] = []
        self.deadline: float | None = None  # index sent with each poll, for diagnostics and tests

    def _say(self, msg: str) -> None:
        print(msg, file=self.err, flush=True)

    def run(self) -> int:
        opts = self.opts
        if opts.state_file:
            try:
                self.seen.load(opts.state_file)
            except ValueError as e:
                self._say(str(e))
                return 1
        try:
            self_resp = self.client.get("/v1/agent/self")
        except ClientError as e:
            self._say(f"Error querying rumor agent: {e}")
            return 1
        if self_resp.status != 200:
            self._say("Error querying rumor agent: Unexpected response code: "
                      f"{self_resp.status} ({self_resp.text()})")
            return 1

        deadline = None if opts.timeout is None else self.clock() + opts.timeout
        self.deadline = deadline
        index, failures, first = 0, 0, True
        while True:
            remaining = None if deadline is None else deadline - self.clock()
            if remaining is not None and remaining < 0.001:
                return 0 if opts.max_events is None else EXIT_TIMEOUT
            wait = opts.wait if remaining is None else min(opts.wait, remaining)
            started = self.clock()
            try:
                events, new_index = self._poll(index, wait)
            except (ClientError, WatchError) as e:
                failures += 1
                delay = backoff(failures)
                self._say(f"Watch (type: event) errored: {e}, retry in {delay:g}s")
                self._pause(delay, deadline)
                continue
            failures = 0
            keys = [event_key(ev) for ev in events]
            if first and opts.since_now:
                for key in keys:
                    self.seen.touch(key)
                self._save()
            else:
                done = self._deliver(events, keys, new_index, first)
                if done is not None:
                    return done
            if index and new_index == index and self.clock() - started < MIN_REPOLL:
                self._pause(MIN_REPOLL - (self.clock() - started), deadline)
            index, first = new_index, False

    def _pause(self, delay: float, deadline: float | None) -> None:
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - self.clock()))
        if delay > 0:
            self.sleep(delay)

    def _poll(self, index: int, wait: float) -> tuple[list[dict[str, Any]], int]:
        params: list[tuple[str, str | None]] = [("name", self.opts.name or None)]
        timeout = None
        if index:
            params += [("index", str(index)), ("wait", format_go_duration(round(wait, 3)))]
            timeout = wait + HTTP_GRACE
        self.polls.append(index)
        resp = self.client.get("/v1/event/list", params, timeout=timeout)
        if resp.status != 200:
            raise WatchError(f"Unexpected response code: {resp.status} ({resp.text()})")
        raw_index = resp.header("X-Consul-Index") or ""
        if not raw_index.isdigit() or int(raw_index) == 0:
            raise WatchError(f"bad or missing X-Consul-Index header {raw_index!r}")
        try:
            events = json.loads(resp.body)
        except ValueError as e:
            raise WatchError(f"invalid JSON from agent: {e}") from None
        if not isinstance(events, list) or not all(isinstance(ev, dict) for ev in events):
            raise WatchError("invalid response from agent: expected a JSON array of events")
        return events, int(raw_index)

    def _deliver(self, events: list[dict[str, Any]], keys: list[str], index: int,
                 first: bool) -> int | None:
        """Hand the unseen events on; return an exit code when the watch should stop."""
        fresh, fresh_keys = [], []
        for ev, key in zip(events, keys, strict=True):
            if key not in self.seen and key not in fresh_keys:
                fresh.append(ev)
                fresh_keys.append(key)
        if not self.opts.handler:
            if not (first or fresh):
                return None
            print(json.dumps(fresh, indent=4, ensure_ascii=False), file=self.out, flush=True)
            self._mark(keys)
            return 0
        if fresh:
            data = (json.dumps(fresh, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
            remaining = None if self.deadline is None else max(self.deadline - self.clock(), 0.0)
            try:
                code = self.runner(self.opts.handler, self.opts.shell, data,
                                   {"CONSUL_INDEX": str(index)}, timeout=remaining)
            except HandlerTimeout as e:
                self._say(f"Error executing handler: -timeout={self.opts.timeout:g}s ran "
                          f"out: {e}")
                return EXIT_HANDLER_KILLED
            if code != 0:
                self._say(f"Error executing handler: exit status {code}")
                return 1
        self._mark(keys)
        self.delivered += len(fresh)
        if self.opts.max_events is not None and self.delivered >= self.opts.max_events:
            return 0
        return None

    def _mark(self, keys: list[str]) -> None:
        new = [k for k in keys if k not in self.seen]
        for key in keys:
            self.seen.touch(key)
        if new:
            self._save()

    def _save(self) -> None:
        if not self.opts.state_file:
            return
        try:
            self.seen.save(self.opts.state_file)
        except OSError as e:
            self._say(f"Warning: cannot write state file {self.opts.state_file}: {e}")
