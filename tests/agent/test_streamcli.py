"""``rumor stream``'s rendering and resume bookkeeping, and the -stream-buffer setting."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from agent.client import Client
from agent.config import ConfigError, load_config
from agent.streamcli import _resume_point, follow, render, salt_tag

EV = {"Topic": "Event", "Type": "UserEvent", "Key": "deploy", "Namespace": "",
      "FilterKeys": None, "Index": 7, "Payload": {"Name": "deploy"}}
NODE = {"Topic": "Node", "Type": "NodeFailed", "Key": "n2", "Index": 8, "Payload": {}}
GAP = {"Topic": "Stream", "Type": "Gap", "Key": "", "Index": 40,
       "Payload": {"Requested": 3, "FirstAvailable": 41}}
CLOSED = {"Topic": "Stream", "Type": "Closed", "Key": "", "Index": 12,
          "Payload": {"Reason": "too slow", "LastIndex": 12}}


def test_salt_style_tags_and_formats() -> None:
    assert salt_tag(EV) == "rumor/event/deploy"
    assert salt_tag(NODE) == "rumor/node/n2/failed"
    assert salt_tag(GAP) == "rumor/stream/gap"
    assert json.loads(render(EV, "json", False)) == EV and "\n" not in render(EV, "json", False)
    pretty = render(EV, "pretty", False)
    assert pretty.startswith("rumor/event/deploy\t{\n    \"Topic\": \"Event\",")
    coloured = render(NODE, "pretty", True)
    assert coloured.startswith("\x1b[1;36mrumor/node/n2/failed\x1b[0m\t{")


def test_resume_points() -> None:
    assert _resume_point(EV, 3) == 7
    assert _resume_point(GAP, 3) == 40
    assert _resume_point(CLOSED, 3) == 12  # the Closed record carries where to resume
    assert _resume_point({"Index": "x"}, 5) == 5


class FakeClient(Client):
    """Serves canned stream answers; records the index each connection asked for."""

    def __init__(self, answers: list[Any]) -> None:
        super().__init__("127.0.0.1:1")
        self.answers = answers
        self.asked: list[str] = []

    def stream(self, path: str, params: Any = None, idle_timeout: float | None = None) -> Any:
        self.asked.append(dict(params)["index"])
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        yield from answer


def test_follow_reconnects_and_resumes_after_the_last_printed_index() -> None:
    from agent.client import ClientError, StatusError

    line = json.dumps({"Index": 7, "Events": [EV]})
    client = FakeClient([["{}", line], ClientError("refused"),
                         [json.dumps({"Index": 8, "Events": [NODE]})],
                         StatusError(400, "Invalid topic query")])
    out, err = io.StringIO(), io.StringIO()
    assert follow(client, [], 5, "json", out, err, sleep=lambda s: None) == 1
    assert client.asked == ["5", "7", "7", "8"]
    assert [json.loads(x)["Index"] for x in out.getvalue().splitlines()] == [7, 8]
    assert "reconnecting" in err.getvalue() and "Invalid topic query" in err.getvalue()


@pytest.mark.parametrize("value", ["0", "-1", "1000001", "x"])
def test_stream_buffer_is_range_checked(value: str) -> None:
    with pytest.raises(ConfigError, match="stream.buffer"):
        load_config([f"-stream-buffer={value}"], {})
    assert load_config(["-stream-buffer=500"], {}).stream_buffer == 500
