"""The Go-``flag``-style command-line parser shared by every ``rumor`` sub-command.

``-flag value``, ``-flag=value``, ``--flag``; booleans take ``-flag`` or ``-flag=false``;
repeatable (list) flags append; parsing stops at the first non-flag argument or ``--``.
Errors read like Go's (``flag provided but not defined: -nope``) and raise ``FlagError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.errors import ConfigError


class FlagError(ConfigError):
    """A command line that does not parse."""


class HelpRequested(Exception):
    """`-h`, `-help` or `--help` was given."""


@dataclass(frozen=True)
class FlagSpec:
    """One command-line flag. kind: "str" (takes a value), "bool", or "list" (repeatable)."""

    name: str
    kind: str
    help: str
    metavar: str = "VALUE"


@dataclass
class ParsedFlags:
    """Flag values as given (strings, bools, lists of strings) plus the positional args."""

    values: dict[str, str | bool | list[str]]
    args: list[str]
    order: list[tuple[str, str | bool]] = field(default_factory=list)  # every flag, as given

    def has(self, name: str) -> bool:
        return name in self.values

    def get_str(self, name: str, default: str | None = None) -> str | None:
        v = self.values.get(name)
        return v if isinstance(v, str) else default

    def get_bool(self, name: str, default: bool = False) -> bool:
        v = self.values.get(name)
        return v if isinstance(v, bool) else default

    def get_list(self, name: str) -> list[str]:
        v = self.values.get(name)
        return list(v) if isinstance(v, list) else []


_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}")


def parse_flags(specs: Sequence[FlagSpec], argv: Sequence[str]) -> ParsedFlags:
    """Parse like Go's `flag` package: `-f=v`, `-f v`, `--f v`, `--f=v`; bools as `-b` or
    `-b=false`; parsing stops at the first non-flag argument or after `--`."""
    by_name = {s.name: s for s in specs}
    values: dict[str, str | bool | list[str]] = {}
    order: list[tuple[str, str | bool]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or arg[0] != "-":
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        name, eq, inline = body.partition("=")
        if name in ("h", "help"):
            raise HelpRequested()
        spec = by_name.get(name)
        if spec is None:
            raise FlagError(f"flag provided but not defined: -{name}")
        i += 1
        if spec.kind == "bool":
            try:
                flag = parse_bool(inline) if eq else True
            except ValueError:
                raise FlagError(f"-{name}: invalid boolean value {inline!r}") from None
            values[name] = flag
            order.append((name, flag))
            continue
        if not eq:
            if i >= len(argv):
                raise FlagError(f"flag needs an argument: -{name}")
            inline = argv[i]
            i += 1
        if spec.kind == "list":
            prev = values.get(name)
            values[name] = [*(prev if isinstance(prev, list) else []), inline]
        else:
            values[name] = inline
        order.append((name, inline))
    return ParsedFlags(values, list(argv[i:]), order)


def flags_usage(specs: Sequence[FlagSpec]) -> str:
    lines = []
    for s in specs:
        head = f"  -{s.name}" if s.kind == "bool" else f"  -{s.name}=<{s.metavar}>"
        lines.append(f"{head}\n      {s.help}")
    return "\n".join(lines)
