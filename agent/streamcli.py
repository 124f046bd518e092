"""``rumor stream``: follow ``/v1/event/stream`` from the command line, across agent restarts.

Owns the CLI watcher: it prints each record as one JSON line (``-format json``, like
``vault events subscribe``) or in Salt's ``state.event pretty=True`` look (``-format pretty``:
a tag line such as ``rumor/event/deploy`` or ``rumor/node/dev2/join``, a tab, then the
record indented; the tag in colour on a terminal unless ``NO_COLOR`` is set).  It remembers
the last Index it printed; when the connection drops, or stays silent past two heartbeats
(the agent died), it reconnects with ``?index=<last>`` (backing off 0.5 s doubling to 5 s),
so nothing is missed and nothing printed twice.  Without ``-index`` it starts with the
records that arrive from now on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from agent.client import Client, ClientError, StatusError

IDLE_TIMEOUT = 25.0  # the agent sends a heartbeat every 10 s
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0
_COLOURS = {"Event": "\x1b[1;32m", "Node": "\x1b[1;36m", "Stream": "\x1b[1;33m"}
_RESET = "\x1b[0m"


def salt_tag(ev: Mapping[str, Any]) -> str:
    topic, kind, key = str(ev.get("Topic", "")), str(ev.get("Type", "")), str(ev.get("Key", ""))
    if topic == "Event":
        return f"rumor/event/{key}"
    if topic == "Node":
        what = kind[4:].lower() if kind.startswith("Node") else kind.lower()
        return f"rumor/node/{key}/{what}"
    return f"rumor/{topic.lower()}/{kind.lower()}"


def render(ev: Mapping[str, Any], fmt: str, colour: bool) -> str:
    if fmt == "json":
        return json.dumps(ev, separators=(",", ":"), ensure_ascii=False)
    tag = salt_tag(ev)
    if colour:
        tag = _COLOURS.get(str(ev.get("Topic")), "\x1b[1m") + tag + _RESET
    return f"{tag}\t{json.dumps(ev, indent=4, ensure_ascii=False)}"


def current_index(client: Client) -> int:
    resp = client.get("/v1/agent/self")
    if resp.status != 200:
        raise ClientError(f"Unexpected response code: {resp.status} ({resp.text()})")
    try:
        return int(json.loads(resp.body)["Stats"]["bus"]["last_index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"agent did not report its bus index: {exc}") from None


def follow(client: Client, topics: Sequence[str], index: int | None, fmt: str,
           out: TextIO = sys.stdout, err: TextIO = sys.stderr,
           sleep: Callable[[float], None] = time.sleep, max_records: int | None = None) -> int:
    """Print records until interrupted (or ``max_records`` printed); 1 on a 4xx answer."""
    colour = fmt == "pretty" and out.isatty() and "NO_COLOR" not in os.environ
    last = current_index(client) if index is None else index
    printed = 0
    delay = BACKOFF_FIRST
    while True:
        params = [("topic", t) for t in topics] + [("index", str(last))]
        try:
            for line in client.stream("/v1/event/stream", params, idle_timeout=IDLE_TIMEOUT):
                delay = BACKOFF_FIRST
                if not line.strip():
                    continue
                try:
                    batch = json.loads(line)
                except ValueError:
                    print(f"ignoring a line that is not JSON: {line[:80]!r}", file=err)
                    continue
                for ev in batch.get("Events") or [] if isinstance(batch, dict) else []:
                    print(render(ev, fmt, colour), file=out, flush=True)
                    last = _resume_point(ev, last)
                    printed += 1
                    if max_records is not None and printed >= max_records:
                        return 0
            reason = "the agent ended the stream"
        except StatusError as exc:
            print(f"Error streaming events: {exc}", file=err)
            return 1
        except ClientError as exc:
            reason = str(exc)
        print(f"==> {reason}; reconnecting in {delay:g}s (resuming after Index {last})",
              file=err, flush=True)
        sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


def _resume_point(ev: Mapping[str, Any], last: int) -> int:
    """The Index to resume after, once ``ev`` has been printed."""
    index = ev.get("Index")
    if type(index) is not int or index < 0:
        return last
    if ev.get("Topic") == "Stream" and ev.get("Type") == "Gap":
        payload = ev.get("Payload") or {}
        first = payload.get("FirstAvailable") if isinstance(payload, dict) else None
        return first - 1 if type(first) is int and first > 0 else last
    return index
