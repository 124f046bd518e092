"""Go ``time.Duration`` text: parsing (``time.ParseDuration``) and formatting (``Duration.String``).

Consul's HTTP API takes ``?wait=10s`` style durations, so rumor accepts exactly the grammar
Go's ``time.ParseDuration`` accepts and nothing else:

    [-+]? ( [0-9]* ( "." [0-9]* )? unit )+      or      [-+]? "0"

with units ``ns``, ``us``, ``µs`` (U+00B5), ``μs`` (U+03BC), ``ms``, ``s``, ``m``, ``h``. A number
without a unit is invalid, except a lone ``0``. Every component needs at least one digit (``.s`` is
invalid). The value must fit a signed 64-bit count of nanoseconds; fractions below a nanosecond
are truncated per component, as Go does.

The integer functions (``*_ns``) are exact; the ``float`` seconds wrappers are what callers use.
Errors are ``ValueError`` with Go's own message texts (``time: invalid duration "x"``).
"""

from __future__ import annotations

import json

__all__ = [
    "format_go_duration",
    "format_go_duration_ns",
    "parse_go_duration",
    "parse_go_duration_ns",
]

NANOSECOND = 1
MICROSECOND = 1_000
MILLISECOND = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS: dict[str, int] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}

_MAX_NS = (1 << 63) - 1  # largest positive Duration
_MIN_MAGNITUDE = 1 << 63  # magnitude of the most negative Duration
# Digits beyond these counts cannot change a valid result; capping them keeps a hostile
# 100 kB "wait" string from costing big-integer arithmetic.
_MAX_INT_DIGITS = 20
_MAX_FRAC_DIGITS = 30

_DIGITS = frozenset("0123456789")


def _quote(s: str) -> str:
    # Go's strconv.Quote is close enough to a JSON string for error messages.
    return json.dumps(s, ensure_ascii=False)


def parse_go_duration_ns(text: str) -> int:
    """Parse a Go duration string into an exact signed count of nanoseconds."""
    if not isinstance(text, str):
        raise ValueError(f"time: invalid duration {text!r}")
    orig = text
    invalid = ValueError(f"time: invalid duration {_quote(orig)}")
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    i = 0
    n = len(s)
    while i < n:
        if not (s[i] == "." or s[i] in _DIGITS):
            raise invalid
        start = i
        while i < n and s[i] in _DIGITS:
            i += 1
        int_digits = s[start:i].lstrip("0")
        has_int = i > start
        frac_digits = ""
        has_frac = False
        if i < n and s[i] == ".":
            i += 1
            fstart = i
            while i < n and s[i] in _DIGITS:
                i += 1
            has_frac = i > fstart
            frac_digits = s[fstart:i][:_MAX_FRAC_DIGITS]
        if not has_int and not has_frac:
            raise invalid
        ustart = i
        while i < n and not (s[i] == "." or s[i] in _DIGITS):
            i += 1
        if i == ustart:
            raise ValueError(f"time: missing unit in duration {_quote(orig)}")
        unit_text = s[ustart:i]
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise ValueError(
                f"time: unknown unit {_quote(unit_text)} in duration {_quote(orig)}"
            )
        if len(int_digits) > _MAX_INT_DIGITS:
            raise invalid
        value = int(int_digits or "0") * unit
        if frac_digits.strip("0"):
            # digits/10**k of a unit, truncated toward zero like Go's uint64 conversion
            value += int(frac_digits) * unit // 10 ** len(frac_digits)
        total += value
        if total > _MIN_MAGNITUDE:
            raise invalid
    if neg:
        return -total
    if total > _MAX_NS:
        raise invalid
    return total


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string (``"10s"``, ``"1m30s"``, ``"1.5h"``, ``"0"``) into seconds.

    Raises ``ValueError`` for anything Go's ``time.ParseDuration`` rejects.
    """
    return parse_go_duration_ns(text) / SECOND


def _frac(value: int, prec: int) -> tuple[str, int]:
    """Split ``value`` into (".fraction" without trailing zeros, value // 10**prec)."""
    scale = 10**prec
    whole, rest = divmod(value, scale)
    if rest == 0:
        return "", whole
    digits = str(rest).rjust(prec, "0").rstrip("0")
    return "." + digits, whole


def format_go_duration_ns(ns: int) -> str:
    """Format nanoseconds exactly like Go's ``Duration.String`` (``1h0m0s``, ``1.5µs``, ``0s``)."""
    if not -_MIN_MAGNITUDE <= ns <= _MAX_NS:
        raise ValueError(f"duration {ns}ns does not fit a Go Duration")
    u = abs(ns)
    sign = "-" if ns < 0 else ""
    if u == 0:
        return "0s"
    if u < SECOND:
        if u < MICROSECOND:
            return f"{sign}{u}ns"
        if u < MILLISECOND:
            frac, whole = _frac(u, 3)
            return f"{sign}{whole}{frac}\u00b5s"
        frac, whole = _frac(u, 6)
        return f"{sign}{whole}{frac}ms"
    frac, secs = _frac(u, 9)
    minutes, secs = divmod(secs, 60)
    out = f"{secs}{frac}s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        out = f"{minutes}m{out}"
        if hours:
            out = f"{hours}h{out}"
    return sign + out


def format_go_duration(seconds: float) -> str:
    """Format seconds (rounded to the nanosecond) as Go would print the Duration."""
    return format_go_duration_ns(round(seconds * SECOND))
