"""Consul's node/service/tag event filters (agent/filters.py)."""

from __future__ import annotations

import logging

import pytest

from agent.catalog import ServiceEntry
from agent.events import UserEvent
from agent.filters import FilterError, compile_filter, should_process, validate_filters

ID = "b54fe110-7af5-cafc-d1fb-afc8ba432b1c"

SERVICES = {
    "web-1": ServiceEntry("web-1", "web", ("v1", "canary")),
    "api": ServiceEntry("api", "api", ("v2",)),
    "redis-cache": ServiceEntry("redis-cache", "redis", ()),
}


def ev(node: str = "", service: str = "", tag: str = "", version: int = 1) -> UserEvent:
    return UserEvent(ID, "deploy", None, node, service, tag, version)


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
    "pattern",
    [
        r"(a)\1",  # backreference
        r"(?P<x>a)(?P=x)",  # named backreference
        r"web(?=-1)",  # lookahead
        r"web(?!-1)",
        r"(?<=w)eb",  # lookbehind
        r"(?<!w)eb",
        r"(?>ab)",  # atomic group
        r"a*+",  # possessive
        r"(a)?(?(1)b|c)",  # conditional
        r"a(?#comment)",  # comment group
        r"(?x) a b",  # verbose flag (RE2 has no x)
        r"a{1001}",  # RE2 repeat limit
        r"a{2,1001}",
        r"(a+)+$",  # nested unbounded repetition (ReDoS shape)
        r"(?:\w*-)*x",
        r"(a{1,50}){1,50}",
        r"a\Z",  # not an RE2 escape
        r"[[:nope:]]",
        "abc\\",
        r"\pL",  # RE2-only syntax Python cannot compile: reported, not crashed on
    ],
)
def test_unsupported_constructs_rejected(pattern: str) -> None:
    with pytest.raises(FilterError, match="^Invalid node filter: error parsing regexp: "):
        validate_filters(pattern, "", "")


def test_literal_brackets_in_classes_are_not_groups() -> None:
    validate_filters("[(?=]", "[]a]", "")
    assert compile_filter("[]a]").search("]")
    assert compile_filter("[(?=]+").search("=")
    assert compile_filter("[[a]").search("[")  # RE2: "[" is literal inside a class
    assert compile_filter("[a&&b]").search("&")


def test_go_escapes_translated() -> None:
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
    event: UserEvent, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert not should_process(event, "web-1", SERVICES)
    assert "failed to parse" in caplog.text


def test_newer_version_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert should_process(ev(version=2), "n", {})
    assert "version 2" in caplog.text


def test_catastrophic_pattern_is_refused_quickly() -> None:
    # With Python's backtracking engine this would take minutes against the name below.
    assert not should_process(ev(node="(a+)+$"), "a" * 40 + "!", {})
