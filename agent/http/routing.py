"""Path + method dispatch for the HTTP API.

Owns the route table and its three pattern kinds:
- exact paths ("/v1/agent/members"): one dict lookup;
- a trailing single-segment parameter ("/v1/agent/service/deregister/{id}"): the rest of the
  path after the prefix, non-empty and without "/";
- a trailing rest parameter ("/v1/event/fire/{name...}"): the rest of the path, may contain "/"
  and may be empty.
Exact paths win; among prefix patterns the longest prefix wins. A path that matches no pattern
gets 404 "404 page not found"; a path that matches but not for this method gets 405 with an
`Allow` header. HEAD is served by the GET handler (the shell drops the body).
Patterns are matched against the percent-decoded path (`Request.path`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .types import AnyResponse, Handler, Request, Response

__all__ = ["Router", "NOT_FOUND_TEXT", "METHOD_NOT_ALLOWED_TEXT"]

NOT_FOUND_TEXT = "404 page not found"
METHOD_NOT_ALLOWED_TEXT = "Method not allowed"


@dataclass(slots=True)
class _Route:
    prefix: str  # for exact routes: the whole path
    param: str | None  # name of the trailing parameter
    rest: bool  # True for "{name...}"
    handlers: dict[str, Handler] = field(default_factory=dict)

    def allow(self) -> str:
        methods = set(self.handlers)
        if "GET" in methods:
            methods.add("HEAD")
        return ", ".join(sorted(methods))


def _parse(pattern: str) -> tuple[str, str | None, bool]:
    """Split a pattern into (prefix, param name, is-rest). Raises ValueError if unsupported."""
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    open_at = pattern.find("{")
    if open_at < 0:
        if "}" in pattern:
            raise ValueError(f"unbalanced '}}' in route pattern {pattern!r}")
        return pattern, None, False
    if not pattern.endswith("}") or pattern.count("{") != 1 or pattern.count("}") != 1:
        raise ValueError(f"only one trailing {{param}} is supported: {pattern!r}")
    prefix, name = pattern[:open_at], pattern[open_at + 1 : -1]
    if not prefix.endswith("/"):
        raise ValueError(f"a {{param}} must be a whole path segment: {pattern!r}")
    rest = name.endswith("...")
    if rest:
        name = name[:-3]
    if not name.isidentifier():
        raise ValueError(f"bad parameter name in route pattern {pattern!r}")
    return prefix, name, rest


class Router:
    """A Handler that dispatches on path and method. Build it once, then serve with it."""

    def __init__(
        self,
        not_found_text: str = NOT_FOUND_TEXT,
        method_not_allowed_text: str = METHOD_NOT_ALLOWED_TEXT,
    ) -> None:
        self._exact: dict[str, _Route] = {}
        self._prefixed: list[_Route] = []  # longest prefix first
        self._not_found = not_found_text
        self._not_allowed = method_not_allowed_text

    def add(self, methods: str | Iterable[str], pattern: str, handler: Handler) -> None:
        """Register `handler` for `methods` (one name or several) on `pattern`.

        Raises ValueError for an unsupported pattern or a (method, pattern) pair that is
        already registered; the router is unchanged in that case.
        """
        names = [methods] if isinstance(methods, str) else list(methods)
        upper = [m.upper() for m in names]
        if not upper or any(not m.isalpha() for m in upper):
            raise ValueError(f"bad method list {names!r} for {pattern!r}")
        prefix, param, rest = _parse(pattern)
        route = self._find_route(prefix, param, rest)
        if route is not None:
            taken = [m for m in upper if m in route.handlers]
            if taken:
                raise ValueError(f"{taken} {pattern!r} is already routed")
        else:
            route = _Route(prefix, param, rest)
            if param is None:
                self._exact[prefix] = route
            else:
                self._prefixed.append(route)
                self._prefixed.sort(key=lambda r: len(r.prefix), reverse=True)
        for method in upper:
            route.handlers[method] = handler

    def _find_route(self, prefix: str, param: str | None, rest: bool) -> _Route | None:
        if param is None:
            return self._exact.get(prefix)
        for route in self._prefixed:
            if route.prefix == prefix and route.rest == rest:
                if route.param != param:
                    raise ValueError(f"{prefix}{{...}} already uses parameter {route.param!r}")
                return route
        return None

    def _match(self, path: str) -> list[tuple[_Route, str]]:
        exact = self._exact.get(path)
        if exact is not None:
            return [(exact, "")]
        found: list[tuple[_Route, str]] = []
        for route in self._prefixed:
            if path.startswith(route.prefix):
                value = path[len(route.prefix) :]
                if route.rest or (value and "/" not in value):
                    found.append((route, value))
        return found

    async def __call__(self, req: Request) -> AnyResponse:
        exact = self._exact.get(req.path)
        if exact is not None:  # fast path: no parameters
            handler = exact.handlers.get(req.method)
            if handler is None and req.method == "HEAD":
                handler = exact.handlers.get("GET")
            if handler is not None:
                return await handler(req)
            matches = [(exact, "")]
        else:
            matches = self._match(req.path)
        if not matches:
            return Response.text(self._not_found, 404)
        for route, value in matches:
            handler = route.handlers.get(req.method)
            if handler is None and req.method == "HEAD":
                handler = route.handlers.get("GET")
            if handler is not None:
                if route.param is not None:
                    req.params[route.param] = value
                return await handler(req)
        allow = sorted({m for route, _ in matches for m in route.allow().split(", ")})
        response = Response.text(self._not_allowed, 405)
        response.headers.append(("Allow", ", ".join(allow)))
        return response
