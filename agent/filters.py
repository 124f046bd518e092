"""Consul's user-event filters: node / service / tag regular expressions (protocol.md §4.2-4.3).

A user event may carry three Go regular expressions. The firing side validates them
(``validate_filters``); every receiving agent decides with ``should_process`` whether the event is
meant for it, exactly as Consul's ``shouldProcessUserEvent`` does:

* ``NodeFilter`` must match this agent's node name;
* ``ServiceFilter`` must match the ID of at least one local service (Consul's service map is keyed
  by ID, which defaults to the service name);
* ``TagFilter`` (only looked at together with ``ServiceFilter``) additionally needs one of that
  service's tags to match;
* matching is unanchored (Go's ``MatchString``: a match anywhere in the subject); a filter that
  does not compile on the receiver drops the event.

Go's ``regexp`` package is RE2, so the expressions are compiled and run by RE2 itself (the
``google-re2`` binding): the syntax accepted is RE2's, which is Go's (``(?i)``, ``\\pL``,
``\\Q…\\E``, ``[[:alpha:]]``, ``\\z``; no backreferences, lookaround or possessive repeats;
repeat counts up to 1000, also across nested repeats), and every match costs time linear in the
subject, whatever the pattern (``(\\w|\\w\\w)+$``, ``(.?){1000}!``). Matching asks RE2 for a yes/no
answer only (``never_capture``), so capture groups add no cost. Semantics match Go's: ``$``
without ``(?m)`` matches only at the very end, ``.`` does not match ``\\n``, ``(?i)`` folds Unicode,
``\\d \\w \\s \\b`` are ASCII. Where C++ RE2 and Go differ, Go wins: ``\\C`` (any byte) is
refused, as Go refuses it; error messages use Go's wording (``error parsing regexp: missing
closing ): `(```), which is what Consul puts after ``Invalid node filter:``. One limit is RE2's
own: a pattern whose compiled program exceeds RE2's default 8 MiB budget is refused as
``expression too large`` (Go's limit is larger; no realistic filter comes near either).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import re2

    from agent.catalog import ServiceEntry
    from agent.events import Event

__all__ = ["FilterError", "GoRegexp", "compile_filter", "go_regexp_search", "should_process",
           "validate_filters"]

log = logging.getLogger(__name__)


class FilterError(ValueError):
    """A filter combination or expression that Consul would refuse."""


# RE2's error texts (re2.cc CodeText) and the Go ErrorCode text for the same error.
_GO_CODES: tuple[tuple[str, str], ...] = (
    ("invalid escape sequence", "invalid escape sequence"),
    ("invalid character class range", "invalid character class range"),
    ("invalid character class", "invalid character class"),
    ("missing ]", "missing closing ]"),
    ("missing )", "missing closing )"),
    ("unexpected )", "unexpected )"),
    ("trailing \\", "trailing backslash at end of expression"),
    ("no argument for repetition operator", "missing argument to repetition operator"),
    ("invalid repetition size", "invalid repeat count"),
    ("bad repetition operator", "invalid nested repetition operator"),
    ("invalid perl operator", "invalid or unsupported Perl syntax"),
    ("invalid UTF-8", "invalid UTF-8"),
    ("invalid named capture group", "invalid named capture"),
    ("pattern too large", "expression too large"),
)


@functools.cache
def _options() -> re2.Options:
    import re2  # ~2.7 MB of RSS: loaded with the first filter, not by every agent

    opts = re2.Options()
    opts.log_errors = False  # RE2 would print every bad pattern to stderr
    opts.never_capture = True  # yes/no matching: groups parse as usual but cost nothing
    return opts


class GoRegexp:
    """A compiled filter; ``search`` is Go's ``MatchString`` (unanchored, True/False)."""

    __slots__ = ("_re", "pattern")

    def __init__(self, pattern: str, compiled: re2._Regexp) -> None:
        self.pattern = pattern
        self._re = compiled

    def search(self, subject: str) -> bool:
        # Subjects are node names, service IDs and tags; a lone surrogate (possible in JSON)
        # becomes bytes that are not UTF-8, which RE2 matches like Go: as non-characters.
        data = subject.encode("utf-8", "surrogatepass")
        return self._re.search(data) is not None

    def __repr__(self) -> str:
        return f"GoRegexp({self.pattern!r})"


def _go_error(pattern: str, re2_message: str) -> str:
    code, _, arg = re2_message.partition(": ")
    if code == "trailing \\":
        return "error parsing regexp: trailing backslash at end of expression: ``"
    for re2_text, go_text in _GO_CODES:
        if code.startswith(re2_text):
            return f"error parsing regexp: {go_text}: `{arg or pattern}`"
    return f"error parsing regexp: {re2_message}: `{pattern}`"


def _refuse_go_unsupported(pattern: str) -> None:
    r"""Go refuses ``\C`` (one byte); C++ RE2 accepts it outside classes. Text in ``\Q…\E``
    is literal and skipped."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "\\" or i + 1 >= n:
            i += 1
            continue
        nxt = pattern[i + 1]
        if nxt == "C":
            raise FilterError("error parsing regexp: invalid escape sequence: `\\C`")
        if nxt == "Q":
            end = pattern.find("\\E", i + 2)
            i = n if end < 0 else end + 2
            continue
        i += 2


# A compiled pattern holds its program and DFA cache (measured: ~0.8 MiB for an adversarial
# one, a few KiB for a normal filter), so the cache is bounded to keep a flood of distinct
# hostile filters from growing the agent without limit.
@functools.lru_cache(maxsize=256)
def _compile_cached(pattern: str) -> GoRegexp | str:
    """Compile once; the result is the regexp or a Go-style error message (cached too)."""
    try:
        raw = pattern.encode("utf-8")
    except UnicodeEncodeError:
        return f"error parsing regexp: invalid UTF-8: `{pattern!r}`"
    import re2

    try:
        _refuse_go_unsupported(pattern)
        return GoRegexp(pattern, re2.compile(raw, _options()))
    except FilterError as exc:
        return str(exc)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        return _go_error(pattern, text)


def compile_filter(pattern: str) -> GoRegexp:
    """Compile a Go filter expression, raising ``FilterError`` with Go's message."""
    result = _compile_cached(pattern)
    if isinstance(result, str):
        raise FilterError(result)
    return result


def validate_filters(node: str, service: str, tag: str) -> None:
    """Consul's ``validateUserEventParams`` minus the name check (the caller owns the name)."""
    if tag and not service:
        raise FilterError("Cannot provide tag filter without service filter")
    for label, expr in (("node", node), ("service", service), ("tag", tag)):
        if expr:
            result = _compile_cached(expr)
            if isinstance(result, str):
                raise FilterError(f"Invalid {label} filter: {result}")


def _receiver_regex(expr: str, label: str, ev: Event) -> GoRegexp | None:
    result = _compile_cached(expr)
    if isinstance(result, str):
        log.error("failed to parse %s filter %r for event %r: %s", label, expr, ev.name, result)
        return None
    return result


def should_process(ev: Event, node_name: str, services: Mapping[str, ServiceEntry]) -> bool:
    """True when this agent (``node_name``, local ``services`` keyed by ID) should keep ``ev``."""
    if ev.version > 1:
        log.warning("event version %d may have unsupported features (%s)", ev.version, ev.name)
    if ev.node_filter:
        node_re = _receiver_regex(ev.node_filter, "node", ev)
        if node_re is None or not node_re.search(node_name):
            return False
    if ev.service_filter:
        svc_re = _receiver_regex(ev.service_filter, "service", ev)
        if svc_re is None:
            return False
        tag_re = None
        if ev.tag_filter:
            tag_re = _receiver_regex(ev.tag_filter, "tag", ev)
            if tag_re is None:
                return False
        for service_id, entry in services.items():
            if not svc_re.search(service_id):
                continue
            if tag_re is None:
                return True
            if any(tag_re.search(t) for t in entry.tags):
                return True
        return False
    return True


def go_regexp_search(expr: str, value: str) -> bool:
    """A query's tag filter, matched with the same Go-regexp rules as event filters."""
    try:
        return compile_filter(expr).search(value) is not None
    except FilterError:
        return False
