"""Consul's user-event filters: node / service / tag regular expressions (protocol.md §4.2-4.3).

A user event may carry three Go regular expressions. The firing side validates them
(``validate_filters``); every receiving agent decides with ``should_process`` whether the event is
meant for it, exactly as Consul's ``shouldProcessUserEvent`` does:

* ``NodeFilter`` must match this agent's node name;
* ``ServiceFilter`` must match the ID of at least one local service (Consul's service map is keyed
  by ID, which defaults to the service name);
* ``TagFilter`` (only looked at together with ``ServiceFilter``) additionally needs one of that
  service's tags to match;
* matching is unanchored (Go ``MatchString`` = Python ``re.search``); a filter that does not
  compile on the receiver drops the event.

Go RE2 versus Python ``re`` (decisions):

* Constructs RE2 rejects are rejected here too, so an expression rumor accepts is one a Consul
  agent accepts: backreferences (``\\1``, ``(?P=n)``), lookaround (``(?=``, ``(?!``, ``(?<=``,
  ``(?<!``), atomic groups, possessive quantifiers, conditionals, comments ``(?#...)``, flags
  other than ``i m s U``, and repeat counts above 1000 (RE2's limit).
* Python's engine backtracks, RE2's does not. A gossiped filter such as ``(a+)+$`` could stall
  every Python agent, so rumor also rejects *nested* wide repetition (an unbounded or >16-wide
  repeat inside another one). This is stricter than Consul, deliberately; ``(a|aa)+`` style
  ambiguity is not detected (subjects are short node names, IDs and tags).
* Go's ``\\z`` is translated to Python's ``\\Z``; Go's ``[[:alpha:]]`` ASCII classes are
  translated. Go-only syntax that is not translated (``\\pL``, ``\\Q...\\E``, mid-pattern flag
  groups such as ``a(?i)b``, ``(?U)``) fails to compile and is reported as invalid.
* Patterns are compiled with ``re.ASCII`` so ``\\d \\w \\s \\b`` are ASCII-only as in RE2 (side
  effect: ``(?i)`` folds only ASCII letters). ``$`` without ``(?m)`` also matches before a final
  newline in Python; the subjects never contain newlines.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.catalog import ServiceEntry
    from agent.events import UserEvent

__all__ = ["FilterError", "compile_filter", "should_process", "validate_filters"]

log = logging.getLogger(__name__)


class FilterError(ValueError):
    """A filter combination or expression that Consul would refuse."""


class _Unsupported(Exception):
    """Internal: a construct RE2 would reject; the message is Go-style."""


_MAX_REPEAT_COUNT = 1000  # RE2 rejects {n,m} with n or m above this
_WIDE_REPEAT = 16  # a repeat this wide (or unbounded) may not nest inside another one
_GO_FLAGS = frozenset("imsU-")

_POSIX_CLASSES: dict[str, str] = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

try:  # CPython's own regex parser; private, so guarded (absent => the tree checks are skipped)
    _sre_parser: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - other Python implementations
    _sre_parser = None


def _translate(pattern: str) -> str:
    """Rewrite Go-only spellings for Python and reject Python-only group syntax."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    body_start = 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise _Unsupported("trailing backslash at end of expression: ``")
            nxt = pattern[i + 1]
            if nxt == "z" and not in_class:
                out.append("\\Z")
            elif nxt == "Z":
                raise _Unsupported("invalid escape sequence: `\\Z`")
            else:
                out.append(c + nxt)
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                if end != -1:
                    name = pattern[i + 2 : end]
                    if name not in _POSIX_CLASSES:
                        raise _Unsupported(
                            f"invalid character class range: `{pattern[i:end + 2]}`"
                        )
                    out.append(_POSIX_CLASSES[name])
                    i = end + 2
                    continue
            if c == "]" and i > body_start:
                in_class = False
            elif c == "[" or (c in "&~|" and pattern.startswith(c * 2, i)):
                out.append("\\" + c)  # literal in RE2; Python warns of future set syntax
                i += 1
                continue
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            body_start = j  # a "]" right here is a literal, in Go and in Python
            out.append(pattern[i:j])
            i = j
            continue
        if c == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2 :]
            named = rest.startswith("P<") or (
                rest.startswith("<") and not rest.startswith(("<=", "<!"))
            )
            if not named:  # named capture groups are fine in both engines
                m = re.match(r"[A-Za-z-]*[:)]", rest)
                if m is None or not set(m.group()[:-1]) <= _GO_FLAGS:
                    raise _Unsupported(f"invalid or unsupported Perl syntax: `{pattern[i:i + 3]}`")
        out.append(c)
        i += 1
    return "".join(out)


def _name(op: object) -> str:
    return str(getattr(op, "name", op))


def _check_tree(items: Any, inside_wide: bool) -> None:
    """Walk CPython's parse tree and reject what RE2 rejects or what may backtrack badly."""
    for op, av in items:
        kind = _name(op)
        if kind in ("GROUPREF", "GROUPREF_EXISTS", "ASSERT", "ASSERT_NOT", "ATOMIC_GROUP"):
            raise _Unsupported(f"invalid or unsupported Perl syntax: {kind.lower()}")
        if kind == "POSSESSIVE_REPEAT":
            raise _Unsupported("invalid nested repetition operator: possessive")
        if kind in ("MAX_REPEAT", "MIN_REPEAT"):
            lo, hi, body = av
            unbounded = hi == _sre_parser.MAXREPEAT
            if lo > _MAX_REPEAT_COUNT or (not unbounded and hi > _MAX_REPEAT_COUNT):
                raise _Unsupported("invalid repeat count")
            wide = unbounded or hi - lo > _WIDE_REPEAT
            if wide and inside_wide:
                raise _Unsupported("nested unbounded repetition is not supported (backtracking)")
            _check_tree(body, inside_wide or wide)
        elif kind == "SUBPATTERN":
            _check_tree(av[-1], inside_wide)
        elif kind == "BRANCH":
            for alt in av[1]:
                _check_tree(alt, inside_wide)


@functools.lru_cache(maxsize=1024)
def _compile_cached(pattern: str) -> re.Pattern[str] | str:
    """Compile once; the result is the pattern or a Go-style error message (cached too)."""
    try:
        translated = _translate(pattern)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "Possible nested set" etc. => reject
            if _sre_parser is not None:
                _check_tree(_sre_parser.parse(translated, re.ASCII), False)
            return re.compile(translated, re.ASCII)
    except _Unsupported as exc:
        return f"error parsing regexp: {exc}"
    except (re.error, FutureWarning, DeprecationWarning, OverflowError, RecursionError) as exc:
        return f"error parsing regexp: {exc}: `{pattern}`"


def compile_filter(pattern: str) -> re.Pattern[str]:
    """Compile a Go-style filter expression, raising ``FilterError`` with a Go-like message."""
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


def _receiver_regex(expr: str, label: str, ev: UserEvent) -> re.Pattern[str] | None:
    result = _compile_cached(expr)
    if isinstance(result, str):
        log.error("failed to parse %s filter %r for event %r: %s", label, expr, ev.name, result)
        return None
    return result


def should_process(ev: UserEvent, node_name: str, services: Mapping[str, ServiceEntry]) -> bool:
    """True when this agent (``node_name``, local ``services`` keyed by ID) should keep ``ev``."""
    if ev.version > 1:
        log.warning("event version %d may have unsupported features (%s)", ev.version, ev.name)
    if ev.node_filter:
        node_re = _receiver_regex(ev.node_filter, "node", ev)
        if node_re is None or node_re.search(node_name) is None:
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
            if svc_re.search(service_id) is None:
                continue
            if tag_re is None:
                return True
            if any(tag_re.search(t) is not None for t in entry.tags):
                return True
        return False
    return True
