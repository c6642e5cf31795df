"""Which handler a request goes to: method and path against the route table.

Patterns are written as `/v2/models/{model}/versions/{version:[0-9]+}/infer`: a
`{name}` matches one path segment, `{name:regex}` what the regex matches. A path that matches no
pattern is a 404; one that matches with another method is a 405 that lists the allowed ones.
Lookups are cached per path: clients send the same few paths again and again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

_PARAM = re.compile(r"\{(\w+)(?::([^{}]+))?\}")
_CACHE_SIZE = 1024


@dataclass(frozen=True)
class Match:
    """The handlers a path has, by method, and the values of its `{name}` parts."""

    methods: dict[str, Any]
    match_info: dict[str, str]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    out, last = [], 0
    for m in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[last:m.start()]))
        out.append(f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})")
        last = m.end()
    out.append(re.escape(pattern[last:]))
    return re.compile("".join(out) + r"\Z")


class Router:
    def __init__(self, routes: Iterable[tuple[str, str, Any]] = ()) -> None:
        self._exact: dict[str, dict[str, Any]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Any]]] = []
        self._by_pattern: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, Match | None] = {}
        for method, pattern, handler in routes:
            self.add(method, pattern, handler)

    def add(self, method: str, pattern: str, handler: Any) -> None:
        methods = self._by_pattern.get(pattern)
        if methods is None:
            methods = self._by_pattern[pattern] = {}
            if _PARAM.search(pattern):
                self._patterns.append((compile_pattern(pattern), methods))
            else:
                self._exact[pattern] = methods
        methods[method] = handler
        if method == "GET":
            methods.setdefault("HEAD", handler)  # as HTTP has it: the GET's head, no body
        self._cache.clear()

    def match(self, path: str) -> Match | None:
        """The route of `path` (percent-decoded per segment), or None: no such endpoint."""
        try:
            return self._cache[path]  # one lookup on a hit, the usual case
        except KeyError:
            pass
        found = self._match(path)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[path] = found
        return found

    def _match(self, path: str) -> Match | None:
        methods = self._exact.get(path)
        if methods is not None:
            return Match(methods, {})
        for pattern, methods in self._patterns:
            m = pattern.match(path)
            if m is not None:
                return Match(methods, {k: unquote(v) for k, v in m.groupdict().items()})
        return None

    def routes(self) -> list[tuple[str, str]]:
        """(method, pattern) of every route, in the order they were added (HEAD, which every
        GET answers, left out)."""
        return [(method, pattern) for pattern, methods in self._by_pattern.items()
                for method in methods if method != "HEAD"]
