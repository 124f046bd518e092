"""Consul's node/service/tag event filters (agent/filters.py)."""

from __future__ import annotations

import logging

import pytest

from agent.catalog import ServiceEntry
from agent.events import Event
from agent.filters import FilterError, compile_filter, should_process, validate_filters

ID = "b54fe110-7af5-cafc-d1fb-afc8ba432b1c"

SERVICES = {
    "web-1": ServiceEntry("web-1", "web", ("v1", "canary")),
    "api": ServiceEntry("api", "api", ("v2",)),
    "redis-cache": ServiceEntry("redis-cache", "redis", ()),
}


def ev(node: str = "", service: str = "", tag: str = "", version: int = 1) -> Event:
    return Event(ID, "deploy", None, node, service, tag, version)


# -- validate_filters ---------------------------------------------------------------------------


def test_validate_accepts_good_filters() -> None:
    validate_filters("", "", "")
    validate_filters("^web-[0-9]+$", "redis|api", "v[12]")
    validate_filters("(?i)WEB", "(?P<svc>api)", "(?:a|b)*c")
    validate_filters("x{2,1000}", "[[:alpha:]]+", "a\\z")


def test_tag_needs_service() -> None:
    with pytest.raises(FilterError) as info:
        validate_filters("", "", "v1")
    assert str(info.value) == "Cannot provide tag filter without service filter"


@pytest.mark.parametrize(
    ("args", "prefix"),
    [
        (("(", "", ""), "Invalid node filter: error parsing regexp: "),
        (("", "[a-", ""), "Invalid service filter: error parsing regexp: "),
        (("", "ok", "*x"), "Invalid tag filter: error parsing regexp: "),
    ],
)
def test_invalid_regex_messages(args: tuple[str, str, str], prefix: str) -> None:
    with pytest.raises(FilterError) as info:
        validate_filters(*args)
    assert str(info.value).startswith(prefix)


@pytest.mark.parametrize(
    ("pattern", "go_error"),
    [
        (r"(a)\1", "invalid escape sequence: `\\1`"),  # backreference
        (r"(?P<x>a)(?P=x)", "invalid named capture: `(?P=`"),
        (r"web(?=-1)", "invalid or unsupported Perl syntax: `(?=`"),  # lookahead
        (r"web(?!-1)", "invalid or unsupported Perl syntax: `(?!`"),
        (r"(?<=w)eb", "invalid or unsupported Perl syntax: `(?<=`"),  # lookbehind
        (r"(?<!w)eb", "invalid or unsupported Perl syntax: `(?<!`"),
        (r"(?>ab)", "invalid or unsupported Perl syntax: `(?>`"),  # atomic group
        (r"a*+", "invalid nested repetition operator: `*+`"),  # possessive
        (r"(a)?(?(1)b|c)", "invalid or unsupported Perl syntax: `(?(`"),  # conditional
        (r"a(?#comment)", "invalid or unsupported Perl syntax: `(?#`"),  # comment group
        (r"(?x) a b", "invalid or unsupported Perl syntax: `(?x`"),  # no x flag in Go
        (r"a{1001}", "invalid repeat count: `{1001}`"),  # RE2's repeat limit
        (r"a{2,1001}", "invalid repeat count: `{2,1001}`"),
        (r"(a{100}){100}", "invalid repeat count: `{100}`"),  # nested repeats multiply
        (r"a\Z", "invalid escape sequence: `\\Z`"),
        (r"\C", "invalid escape sequence: `\\C`"),  # C++ RE2 accepts it, Go does not
        (r"[[:nope:]]", "invalid character class range: `[:nope:]`"),
        ("abc\\", "trailing backslash at end of expression: ``"),
        ("(", "missing closing ): `(`"),
        ("x)", "unexpected ): `x)`"),
        ("*x", "missing argument to repetition operator: `*`"),
        ("[z-a]", "invalid character class range: `z-a`"),
        ("(?P<>a)", "invalid named capture: `(?P<>`"),
    ],
)
def test_unsupported_constructs_rejected_with_gos_message(pattern: str, go_error: str) -> None:
    with pytest.raises(FilterError) as info:
        validate_filters(pattern, "", "")
    assert str(info.value).startswith("Invalid node filter: error parsing regexp: ")
    if "(?P=" not in pattern:  # RE2 reports "(?P" here, Go "(?P="; only the code matters
        assert str(info.value) == f"Invalid node filter: error parsing regexp: {go_error}"


def test_go_syntax_accepted() -> None:
    for pattern in [r"(?i)WEB", r"\pL+", r"\p{Greek}", r"\Q.*\E", r"(?U)a+", r"(?<n>a)",
                    r"x{1000}", r"(a{10}){100}", r"(a+)+$", r"(\w|\w\w)+$", r"\Qa\Cb\E",
                    r"(.?){1000}!"]:
        compile_filter(pattern)


def test_go_semantics() -> None:
    assert compile_filter("(?i)WEB").search("my-web-1")
    assert compile_filter("(?i)Σ").search("σ")  # Unicode case folding, as Go
    assert compile_filter(r"\pL+$").search("été")
    assert compile_filter(r"^\Q.*\E$").search(".*") and not compile_filter(r"^\Q.*\E$").search("ab")
    assert not compile_filter("a$").search("a\n")  # $ is end of text only (Python: matches)
    assert not compile_filter("a.b").search("a\nb")
    assert compile_filter("(?s)a.b").search("a\nb")
    assert compile_filter("(?m)^b$").search("a\nb\nc")
    assert compile_filter("").search("anything")
    assert compile_filter("x").search("lone \ud800 surrogate x")  # from JSON: no crash


def test_literal_brackets_in_classes_are_not_groups() -> None:
    validate_filters("[(?=]", "[]a]", "")
    assert compile_filter("[]a]").search("]")
    assert compile_filter("[(?=]+").search("=")
    assert compile_filter("[[a]").search("[")  # RE2: "[" is literal inside a class
    assert compile_filter("[a&&b]").search("&")


def test_go_escapes() -> None:
    end = compile_filter(r"web\z")
    assert end.search("web") and not end.search("webx")
    alpha = compile_filter("^[[:alpha:]_]+$")
    assert alpha.search("ab_c") and not alpha.search("ab1")
    assert compile_filter(r"^\d+$").search("123")
    assert not compile_filter(r"^\d+$").search("١٢٣")  # ASCII digits only, as in RE2


def test_compiled_filters_are_cached() -> None:
    assert compile_filter("^cache-me$") is compile_filter("^cache-me$")
    with pytest.raises(FilterError):
        compile_filter("(")


# -- should_process ---------------------------------------------------------------------------


def test_no_filters_always_processed() -> None:
    assert should_process(ev(), "node-1", {})


def test_node_filter_is_unanchored() -> None:
    assert should_process(ev(node="eb"), "web-1", {})
    assert should_process(ev(node="^web-\\d$"), "web-1", {})
    assert not should_process(ev(node="^db"), "web-1", {})


def test_service_filter_matches_service_ids() -> None:
    assert should_process(ev(service="^redis-cache$"), "n", SERVICES)
    assert not should_process(ev(service="^redis$"), "n", SERVICES)  # the name is not the key
    assert should_process(ev(service="web"), "n", SERVICES)
    assert not should_process(ev(service="web"), "n", {})


def test_tag_filter_needs_a_matching_service_with_a_matching_tag() -> None:
    assert should_process(ev(service="web|api", tag="^v2$"), "n", SERVICES)
    assert should_process(ev(service="web", tag="canary"), "n", SERVICES)
    assert not should_process(ev(service="web", tag="^v2$"), "n", SERVICES)
    assert not should_process(ev(service="redis", tag="."), "n", SERVICES)  # no tags at all


def test_tag_filter_without_service_is_ignored_on_receive() -> None:
    assert should_process(ev(tag="nomatch"), "n", {})


def test_node_and_service_must_both_match() -> None:
    assert should_process(ev(node="^n1$", service="api"), "n1", SERVICES)
    assert not should_process(ev(node="^n2$", service="api"), "n1", SERVICES)
    assert not should_process(ev(node="^n1$", service="nope"), "n1", SERVICES)


@pytest.mark.parametrize(
    "event",
    [ev(node="("), ev(service="("), ev(service="web", tag="("), ev(node=r"(a)\1")],
)
def test_uncompilable_filter_on_receiver_drops(
    event: Event, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert not should_process(event, "web-1", SERVICES)
    assert "failed to parse" in caplog.text


def test_newer_version_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert should_process(ev(version=2), "n", {})
    assert "version 2" in caplog.text


LONG = "a" * 5000


@pytest.mark.parametrize(
    ("pattern", "miss", "hit"),
    [
        (r"(a+)+$", LONG + "!", LONG),
        (r"(\w|\w\w)+$", LONG + "!", LONG),
        (r"(a|aa)+$", LONG + "!", LONG),
        (r"(.?){1000}!", LONG, LONG + "!"),
        (r"^(a?){1000}a{1000}$", "a" * 999, "a" * 1000),
    ],
)
def test_backtracking_shapes_run_in_linear_time(pattern: str, miss: str, hit: str) -> None:
    # A backtracking engine (Python's re) needs minutes to ages for these; RE2 is linear.
    # No timing is asserted: a regression to backtracking hangs until the test run's timeout.
    assert not should_process(ev(node=pattern), miss, {})
    assert should_process(ev(node=pattern), hit, {})
