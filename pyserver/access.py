"""Access control, as Triton's --http-restricted-api and --grpc-restricted-protocol have it.

    --http-restricted-api model-repository,logging:admin-key=env:PYSERVER_ADMIN_KEY

restricts the named API groups: a request to one of them must carry the header (gRPC: the
metadata key) with exactly that value, else it is refused (HTTP 403, gRPC PERMISSION_DENIED)
before anything else happens. The value may be given literally, or as `env:NAME` (an
environment variable) or `file:PATH` (a file's contents, without a trailing newline), so that it
stays out of process listings. Values are compared in constant time. Nothing is restricted by
default, as in Triton.

The groups are Triton's: model-repository, logging, metadata, inference, shared-memory,
statistics, trace, health (gRPC's model-config is pyserver's metadata group: the configuration
is metadata here).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pyserver.errors import Forbidden

API_GROUPS = ("model-repository", "logging", "metadata", "inference", "shared-memory",
              "statistics", "trace", "health")
_ALIASES = {"model-config": "metadata"}  # gRPC's name in Triton


@dataclass(frozen=True)
class Restriction:
    """API groups that need `header` (lower-case) to carry `value`."""

    groups: frozenset[str]
    header: str
    value: bytes


def parse_restriction(text: str) -> Restriction:
    """`<api>[,<api>...]:<header>=<value>`; ValueError names what is wrong."""
    apis, colon, rest = text.partition(":")
    header, equals, value = rest.partition("=")
    if not colon or not equals or not apis.strip() or not header.strip():
        raise ValueError(
            f"expected <api>[,<api>...]:<header>=<value> (e.g. model-repository:admin-key=secret)"
            f", got {text!r}")
    groups = set()
    for api in apis.split(","):
        name = _ALIASES.get(api.strip(), api.strip())
        if name not in API_GROUPS:
            raise ValueError(f"unknown API group {api.strip()!r}; expected one of "
                             f"{', '.join(API_GROUPS)}")
        groups.add(name)
    return Restriction(frozenset(groups), header.strip().lower(), _secret(value))


def _secret(value: str) -> bytes:
    if value.startswith("env:"):
        name = value[4:]
        found = os.environ.get(name)
        if not found:
            raise ValueError(f"environment variable {name!r} is not set (or empty)")
        return found.encode()
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            data = path.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        if not data:
            raise ValueError(f"{path} is empty")
        return data
    if not value:
        raise ValueError("the value is empty")
    return value.encode()


class AccessPolicy:
    """Which group needs which header value. Empty: everything open."""

    def __init__(self, restrictions: Iterable[Restriction] = ()) -> None:
        self._by_group: dict[str, Restriction] = {}
        for restriction in restrictions:
            for group in restriction.groups:
                if group in self._by_group:
                    raise ValueError(f"API group {group!r} is restricted twice")
                self._by_group[group] = restriction

    def any(self) -> bool:
        return bool(self._by_group)

    def restricted(self, group: str) -> bool:
        return group in self._by_group

    def check(self, group: str, header: Callable[[str], str | bytes | None]) -> None:
        """Raise Forbidden unless `header(name)` (the request's value for a lower-case name)
        carries the group's value."""
        restriction = self._by_group.get(group)
        if restriction is None:
            return
        given = header(restriction.header)
        if isinstance(given, str):
            given = given.encode("latin-1", "replace")
        if given is None or not hmac.compare_digest(given, restriction.value):
            raise Forbidden(
                f"the {group} API is restricted: the request needs the header "
                f"'{restriction.header}' with the value the server was given"
            )

    def check_mapping(self, group: str, headers: Mapping[str, str]) -> None:
        self.check(group, headers.get)
