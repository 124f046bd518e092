"""Go time.ParseDuration / Duration.String compatibility (agent/duration.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.duration import (
    format_go_duration,
    format_go_duration_ns,
    parse_go_duration,
    parse_go_duration_ns,
)

MAX = (1 << 63) - 1
MIN = -(1 << 63)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("-0", 0),
        ("+0", 0),
        ("0s", 0),
        ("10s", 10_000_000_000),
        ("1m30s", 90_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("250ms", 250_000_000),
        ("1ns", 1),
        ("1us", 1_000),
        ("1\u00b5s", 1_000),
        ("1\u03bcs", 1_000),
        (".5s", 500_000_000),
        ("5.s", 5_000_000_000),
        ("-1.5s", -1_500_000_000),
        ("+2m", 120_000_000_000),
        ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ("1.0000000009s", 1_000_000_000),  # below 1 ns is truncated
        ("0.3333333333s", 333_333_333),
        ("0000000000000000000000000001s", 1_000_000_000),
        ("9223372036854775807ns", MAX),
        ("-9223372036854775808ns", MIN),
        ("2562047h47m16.854775807s", MAX),
        ("3s3s", 6_000_000_000),  # Go allows repeated units
    ],
)
def test_parse_valid(text: str, ns: int) -> None:
    assert parse_go_duration_ns(text) == ns
    assert parse_go_duration(text) == ns / 1e9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("1", 'time: missing unit in duration "1"'),
        ("10", 'time: missing unit in duration "10"'),
        ("00", 'time: missing unit in duration "00"'),
        ("0.0", 'time: missing unit in duration "0.0"'),
        ("s", 'time: invalid duration "s"'),
        (".s", 'time: invalid duration ".s"'),
        ("-.s", 'time: invalid duration "-.s"'),
        ("-", 'time: invalid duration "-"'),
        ("+", 'time: invalid duration "+"'),
        ("--1s", 'time: invalid duration "--1s"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("1 s", 'time: unknown unit " s" in duration "1 s"'),
        ("1S", 'time: unknown unit "S" in duration "1S"'),
        ("1e3s", 'time: unknown unit "e" in duration "1e3s"'),
        ("1s ", 'time: unknown unit "s " in duration "1s "'),
        (" 1s", 'time: invalid duration " 1s"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("2562048h", 'time: invalid duration "2562048h"'),
        ("1" + "0" * 5000 + "s", None),
    ],
)
def test_parse_invalid(text: str, message: str | None) -> None:
    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    if message is not None:
        assert str(info.value) == message


def test_parse_rejects_non_str() -> None:
    with pytest.raises(ValueError):
        parse_go_duration(10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_000, "1\u00b5s"),
        (1_500, "1.5\u00b5s"),
        (250_000_000, "250ms"),
        (1_000_000_001, "1.000000001s"),
        (10_000_000_000, "10s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-1_500_000_000, "-1.5s"),
        (MAX, "2562047h47m16.854775807s"),
        (MIN, "-2562047h47m16.854775808s"),
    ],
)
def test_format_matches_go(ns: int, text: str) -> None:
    assert format_go_duration_ns(ns) == text


def test_format_seconds() -> None:
    assert format_go_duration(10) == "10s"
    assert format_go_duration(90.0) == "1m30s"
    assert format_go_duration(0.25) == "250ms"
    with pytest.raises(ValueError):
        format_go_duration_ns(MAX + 1)


@given(st.integers(min_value=MIN, max_value=MAX))
def test_round_trip_exact(ns: int) -> None:
    assert parse_go_duration_ns(format_go_duration_ns(ns)) == ns


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_round_trip_seconds(seconds: float) -> None:
    assert parse_go_duration(format_go_duration(seconds)) == round(seconds * 1e9) / 1e9


@given(st.text(alphabet="0123456789.+-nsuµμmhx ", max_size=12))
def test_parse_fuzz_only_valueerror(text: str) -> None:
    try:
        ns = parse_go_duration_ns(text)
    except ValueError:
        return
    assert MIN <= ns <= MAX
