"""Local service catalog: registration parsing, the /v1/agent/services shape, persistence."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from agent.catalog import Catalog, CatalogError, ServiceEntry, parse_registration


def test_minimal_registration_defaults_id_to_name() -> None:
    entry = parse_registration({"Name": "web"})
    assert entry == ServiceEntry(id="web", name="web", tags=(), address="", port=0, meta={})


def test_full_registration_and_unknown_keys_ignored() -> None:
    entry = parse_registration(
        {
            "ID": "web-1",
            "Name": "web",
            "Tags": ["v1", "primary"],
            "Address": "10.0.0.5",
            "Port": 8080,
            "Meta": {"version": "1.2", "team_a": "x"},
            "Check": {"HTTP": "http://localhost/health", "Interval": "10s"},
            "EnableTagOverride": True,
        }
    )
    assert entry.id == "web-1"
    assert entry.name == "web"
    assert entry.tags == ("v1", "primary")
    assert entry.address == "10.0.0.5"
    assert entry.port == 8080
    assert entry.meta == {"version": "1.2", "team_a": "x"}


def test_keys_are_case_insensitive_like_go_json() -> None:
    entry = parse_registration(
        {"name": "api", "id": "api-2", "tags": ["a"], "address": "h", "port": 1, "meta": {}}
    )
    assert (entry.id, entry.name, entry.tags, entry.address, entry.port) == (
        "api-2",
        "api",
        ("a",),
        "h",
        1,
    )
    assert parse_registration({"NAME": "x", "Name": "y"}).name == "y"  # last spelling wins


def test_nulls_mean_defaults() -> None:
    entry = parse_registration(
        {"Name": "web", "ID": None, "Tags": None, "Meta": None, "Port": None, "Address": None}
    )
    assert entry == ServiceEntry(id="web", name="web")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "Request decode failed"),
        ("web", "Request decode failed"),
        ({}, "Missing service name"),
        ({"Name": ""}, "Missing service name"),
        ({"Name": None}, "Missing service name"),
        ({"Name": 5}, "Invalid Name"),
        ({"Name": "w", "ID": 3}, "Invalid ID"),
        ({"Name": "w", "Port": "80"}, "Invalid Port"),
        ({"Name": "w", "Port": 80.0}, "Invalid Port"),
        ({"Name": "w", "Port": True}, "Invalid Port"),
        ({"Name": "w", "Port": -1}, "Invalid Port"),
        ({"Name": "w", "Port": 65536}, "Invalid Port"),
        ({"Name": "w", "Tags": "a,b"}, "Invalid Tags"),
        ({"Name": "w", "Tags": ["a", 1]}, "Invalid Tags"),
        ({"Name": "w", "Address": ["x"]}, "Invalid Address"),
        ({"Name": "w", "Meta": ["x"]}, "Invalid Meta"),
        ({"Name": "w", "Meta": {"k": 1}}, "Invalid Meta"),
        ({"Name": "w", "Meta": {"": "v"}}, "Key cannot be blank"),
        ({"Name": "w", "Meta": {"a b": "v"}}, "Key contains invalid characters"),
        ({"Name": "w", "Meta": {"k" * 129: "v"}}, "Key is too long (limit: 128 characters)"),
        ({"Name": "w", "Meta": {"consul-x": "v"}}, "Key prefix 'consul-' is reserved"),
        ({"Name": "w", "Meta": {"k": "v" * 513}}, "Value is too long (limit: 512 characters)"),
        (
            {"Name": "w", "Meta": {f"k{i}": "v" for i in range(65)}},
            "cannot contain more than 64 key/value pairs",
        ),
    ],
)
def test_bad_registrations(body: Any, message: str) -> None:
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_registration(body)


def test_meta_limits_inclusive() -> None:
    entry = parse_registration(
        {"Name": "w", "Meta": {"k" * 128: "v" * 512, **{f"k{i}": "" for i in range(63)}}}
    )
    assert len(entry.meta) == 64


def test_to_json_shape() -> None:
    entry = ServiceEntry("web-1", "web", ("v1",), "10.0.0.5", 80, {"a": "b"})
    out = entry.to_json("east")
    assert list(out) == [
        "ID",
        "Service",
        "Tags",
        "Meta",
        "Port",
        "Address",
        "Weights",
        "EnableTagOverride",
        "Datacenter",
    ]
    assert out == {
        "ID": "web-1",
        "Service": "web",
        "Tags": ["v1"],
        "Meta": {"a": "b"},
        "Port": 80,
        "Address": "10.0.0.5",
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
        "Datacenter": "east",
    }
    assert ServiceEntry("x", "x").to_json()["Datacenter"] == "dc1"
    assert parse_registration(entry.to_registration()) == entry


def test_entry_is_hashable_and_frozen() -> None:
    entry = ServiceEntry("a", "a", ("t",), meta={"k": "v"})
    assert hash(entry) == hash(ServiceEntry("a", "a", ("t",), meta={"k": "v"}))
    with pytest.raises(AttributeError):
        entry.port = 5  # type: ignore[misc]


def test_catalog_register_deregister() -> None:
    cat = Catalog()
    assert len(cat) == 0 and cat.get("web") is None
    web = parse_registration({"Name": "web", "Tags": ["v1"]})
    cat.register(web)
    cat.register(parse_registration({"Name": "db", "ID": "db-1"}))
    assert "web" in cat and "db-1" in cat and "db" not in cat
    assert cat.get("web") is web
    assert set(cat.services) == {"web", "db-1"}
    with pytest.raises(TypeError):
        cat.services["x"] = web  # type: ignore[index]
    replaced = parse_registration({"Name": "web", "Tags": ["v2"]})
    cat.register(replaced)
    assert cat.get("web") is replaced and len(cat) == 2
    assert cat.deregister("web") is True
    assert cat.deregister("web") is False
    assert list(cat.to_json()) == ["db-1"]
    assert [e.id for e in cat] == ["db-1"]
    assert cat.version == 4


def test_catalog_persistence(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    cat = Catalog(path)
    cat.register(parse_registration({"Name": "web", "ID": "web-1", "Port": 80, "Meta": {"a": "b"}}))
    cat.register(parse_registration({"Name": "db", "Tags": ["primary"]}))
    cat.deregister("db")
    cat.register(parse_registration({"Name": "api"}))
    again = Catalog(path)
    assert dict(again.services) == dict(cat.services)
    assert [p.name for p in tmp_path.iterdir()] == ["services.json"]  # no temp files left


def test_catalog_corrupt_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "services.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert len(Catalog(path)) == 0
    assert "corrupt service catalog" in caplog.text
    path.write_text(json.dumps([{"Name": "ok"}, {"Port": 1}, 7]))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cat = Catalog(path)
    assert list(cat.services) == ["ok"]
    assert caplog.text.count("skipping bad service") == 2
