"""The agent's local service catalog: what ``/v1/agent/service/register`` stores.

It exists for two readers: the user-event service/tag filters (``agent.filters``), which match
against the local services keyed by **service ID**, and ``GET /v1/agent/services``.

``parse_registration`` accepts the JSON body of Consul's ``PUT /v1/agent/service/register``.
Like Go's ``encoding/json``, keys match case-insensitively (``Name``, ``name``, ``NAME``; the last
spelling wins) and unknown keys (``Check``, ``Checks``, ``EnableTagOverride`` ...) are ignored.
Every problem raises ``CatalogError`` and leaves the catalog unchanged. Meta is validated with
Consul's rules and messages (64 pairs, keys ``[A-Za-z0-9_-]{1,128}`` not starting with
``consul-``, values up to 512 characters).

``Catalog(path=...)`` persists the services as one JSON document, rewritten atomically (temp file
+ ``os.replace``) on every change, and reloaded at start (bad entries are skipped with a warning
naming the file and the entry; an unusable file raises ``agent.datadir.DataFileError``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.datadir import read_data_file, replace_file
from agent.meta import KEY_MAX, MAX_PAIRS, RESERVED_PREFIX, VALUE_MAX, meta_problem

__all__ = ["Catalog", "CatalogError", "ServiceEntry", "parse_registration"]

log = logging.getLogger(__name__)



class CatalogError(ValueError):
    """A service registration Consul would refuse (the message is safe to show the client)."""


@dataclass(frozen=True)
class ServiceEntry:
    """One locally registered service instance."""

    id: str
    name: str
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict, hash=False)

    def to_json(self, datacenter: str = "dc1") -> dict[str, Any]:
        """The value shape of ``GET /v1/agent/services`` (keys in Consul's order)."""
        return {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
            "Port": self.port,
            "Address": self.address,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
            "Datacenter": datacenter,
        }

    def to_registration(self) -> dict[str, Any]:
        """A registration body that ``parse_registration`` turns back into this entry."""
        return {
            "ID": self.id,
            "Name": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "Port": self.port,
            "Meta": dict(self.meta),
        }


def _string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CatalogError(f"Invalid {what}: expected a string")
    return value


def _validate_meta(meta: Mapping[str, str]) -> None:
    problem = meta_problem(meta, allow_reserved=False)
    if problem is None:
        return
    if problem.kind == "too_many":
        raise CatalogError(
            f"Invalid Service Meta: Node metadata cannot contain more than "
            f"{MAX_PAIRS} key/value pairs"
        )
    text = {
        "empty_key": "Key cannot be blank",
        "key_chars": "Key contains invalid characters",
        "key_long": f"Key is too long (limit: {KEY_MAX} characters)",
        "reserved_key": f"Key prefix '{RESERVED_PREFIX}' is reserved for internal use",
        "value_long": f"Value is too long (limit: {VALUE_MAX} characters)",
    }[problem.kind]
    raise CatalogError(f"Invalid Service Meta: Couldn't load metadata pair "
                       f"('{problem.key}', '{problem.value}'): {text}")


def parse_registration(obj: Any) -> ServiceEntry:
    """Validate a ``PUT /v1/agent/service/register`` body (already JSON-decoded)."""
    if not isinstance(obj, dict):
        raise CatalogError("Request decode failed: expected a JSON object")
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(key, str):
            fields[key.lower()] = value  # Go's encoding/json: case-insensitive, last one wins
    name = _string(fields.get("name"), "Name")
    if not name:
        raise CatalogError("Missing service name")
    service_id = _string(fields.get("id"), "ID") or name
    raw_tags = fields.get("tags")
    if raw_tags is None:
        raw_tags = []
    if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
        raise CatalogError("Invalid Tags: expected a list of strings")
    address = _string(fields.get("address"), "Address")
    port = fields.get("port")
    if port is None:
        port = 0
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise CatalogError("Invalid Port: expected an integer between 0 and 65535")
    raw_meta = fields.get("meta")
    if raw_meta is None:
        raw_meta = {}
    if not isinstance(raw_meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw_meta.items()
    ):
        raise CatalogError("Invalid Meta: expected an object of string values")
    _validate_meta(raw_meta)
    return ServiceEntry(
        id=service_id,
        name=name,
        tags=tuple(raw_tags),
        address=address,
        port=port,
        meta=dict(raw_meta),
    )


class Catalog:
    """Local services keyed by ID, optionally persisted to a JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self._services: dict[str, ServiceEntry] = {}
        self._path = path
        self.version = 0  # bumped on every change (for caches and watchers)
        if path is not None:
            self._load(path)

    def register(self, entry: ServiceEntry) -> None:
        """Add or replace the service with ``entry.id``."""
        self._services[entry.id] = entry
        self._changed()

    def deregister(self, service_id: str) -> bool:
        """Remove a service; False when no such ID was registered."""
        if self._services.pop(service_id, None) is None:
            return False
        self._changed()
        return True

    def get(self, service_id: str) -> ServiceEntry | None:
        return self._services.get(service_id)

    @property
    def services(self) -> Mapping[str, ServiceEntry]:
        """A read-only live view keyed by service ID (what ``should_process`` takes)."""
        return MappingProxyType(self._services)

    def to_json(self, datacenter: str = "dc1") -> dict[str, dict[str, Any]]:
        """The whole ``GET /v1/agent/services`` body."""
        return {sid: e.to_json(datacenter) for sid, e in sorted(self._services.items())}

    def __len__(self) -> int:
        return len(self._services)

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._services

    def __iter__(self) -> Iterator[ServiceEntry]:
        return iter(list(self._services.values()))

    # -- persistence -------------------------------------------------------------------------

    def _changed(self) -> None:
        self.version += 1
        if self._path is not None:
            self._save(self._path)

    def _save(self, path: Path) -> None:
        doc = [e.to_registration() for e in self._services.values()]
        replace_file(path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())

    def _load(self, path: Path) -> None:
        data = read_data_file(path)  # DataFileError (named file) when unusable
        if data is None:
            return
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8; absurd nesting
            log.warning("corrupt service catalog %s: %s; starting empty", path,
                        str(exc)[:200] or type(exc).__name__)
            return
        if not isinstance(doc, list):
            log.warning("corrupt service catalog %s: not a list; starting empty", path)
            return
        for n, item in enumerate(doc, 1):
            try:
                entry = parse_registration(item)
            except CatalogError as exc:
                log.warning("skipping bad service #%d in %s: %s", n, path, exc)
                continue
            self._services[entry.id] = entry
