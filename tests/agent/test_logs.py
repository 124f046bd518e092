"""``agent.logs``: Consul-style lines and the ``/v1/agent/monitor`` fan-out hub."""

from __future__ import annotations

import logging
import re

import pytest
import trio

from agent.logs import MonitorHub, level_number


def make_logger(hub: MonitorHub) -> logging.Logger:
    logger = logging.getLogger("rumor.test-logs")
    logger.handlers[:] = [hub]
    logger.propagate = False
    logger.setLevel(5)
    return logger


def test_levels() -> None:
    assert level_number("warn") == logging.WARNING and level_number("TRACE") == 5
    with pytest.raises(ValueError, match="Unknown log level: loud"):
        level_number("loud")


async def test_fan_out_by_level_and_format() -> None:
    hub = MonitorHub()
    logger = make_logger(hub)
    info, errors = hub.subscribe(logging.INFO), hub.subscribe(logging.ERROR)
    logger.debug("hidden")
    logger.info("hello %s", "world")
    logger.error("boom")
    got = [info.receive_nowait(), info.receive_nowait()]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[INFO\]  rumor\.test-logs: "
                    r"hello world$", got[0]), got[0]
    assert got[1].endswith("[ERROR] rumor.test-logs: boom")
    assert errors.receive_nowait().endswith("boom")
    with pytest.raises(trio.WouldBlock):
        info.receive_nowait()
    hub.unsubscribe(info)
    hub.unsubscribe(errors)
    logger.error("nobody listens")  # no subscribers: nothing to do, nothing raised


async def test_bad_log_call_does_not_raise_into_the_caller(
        capsys: pytest.CaptureFixture[str]) -> None:
    hub = MonitorHub()
    logger = make_logger(hub)
    recv = hub.subscribe(logging.DEBUG)
    logger.info("count %d", "not a number")  # TypeError while formatting
    logger.info("next")
    assert recv.receive_nowait().endswith("next")
    assert "not a number" in capsys.readouterr().err  # reported by logging.handleError


async def test_slow_subscriber_is_lossy_and_gone_ones_are_dropped() -> None:
    hub = MonitorHub()
    logger = make_logger(hub)
    slow = hub.subscribe(logging.INFO)
    for i in range(600):
        logger.info("line %d", i)
    assert hub.dropped == 600 - 512
    assert slow.receive_nowait().endswith("line 0")
    slow.close()  # the reader went away without unsubscribing
    logger.info("after")
    assert hub._subs == []
