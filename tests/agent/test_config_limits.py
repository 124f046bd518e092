"""`limits.http_max_conns_per_client` (Consul's key): file, environment, range check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config


def test_per_client_limit_from_file_and_env(tmp_path: Path) -> None:
    assert load_config([], {}).http_max_conns_per_client == 200
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"limits": {"http_max_conns_per_client": 0}}))
    assert load_config(["-config-file", str(path)], {}).http_max_conns_per_client == 0
    env = {"RUMOR_HTTP_MAX_CONNS_PER_CLIENT": "50"}
    assert load_config(["-config-file", str(path)], env).http_max_conns_per_client == 50


@pytest.mark.parametrize("body, message", [
    ({"limits": {"http_max_conns_per_client": -1}}, "must be 0-1000000, got -1"),
    ({"limits": {"http_max_conns_per_client": 2**64}}, "must be 0-1000000"),
    ({"limits": {"http_max_conns_per_client": "many"}}, "http_max_conns_per_client"),
    ({"limits": {"rpc_max_conns": 5}}, "unknown key 'limits.rpc_max_conns'"),
    ({"limits": 7}, "limits: must be an object"),
])
def test_bad_limits_stop_the_agent_naming_the_field(tmp_path: Path, body: object,
                                                     message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(body))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(["-config-file", str(path)], {})
