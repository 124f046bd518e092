"""agent.config: precedence, flag syntax, file/env parsing, and that every error names its field."""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.config import (
    AGENT_FLAGS,
    AgentConfig,
    ConfigError,
    FlagError,
    FlagSpec,
    HelpRequested,
    load_config,
    parse_flags,
)
from agent.meta import NODE_META_WIRE_MAX, node_tags, tags_wire_size
from gossip.serf import encode_tags

KEY32 = base64.b64encode(bytes(range(32))).decode()


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_defaults() -> None:
    c = load_config([], {})
    assert c == AgentConfig(node_name=socket.gethostname())
    assert (c.datacenter, c.bind_addr, c.serf_lan_port, c.http_port) == ("dc1", "0.0.0.0",
                                                                          8301, 8500)
    assert (c.client_addr, c.retry_interval, c.retry_max, c.log_level) == ("127.0.0.1", 30.0,
                                                                            0, "INFO")
    assert (c.event_size_limit, c.event_buffer, c.gossip_profile) == (512, 256, "lan")
    assert c.advertise_addr is None and c.data_dir is None and c.encrypt is None
    assert c.leave_on_terminate is True and c.dev is False and c.node_meta == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.http_port = 1  # type: ignore[misc]


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", {
        "node_name": "from-file", "datacenter": "filedc", "ports": {"http": 1111, "serf_lan": 7001},
        "log_level": "warn", "retry_interval": "1m30s", "leave_on_terminate": False,
    })
    env = {"RUMOR_NODE_NAME": "from-env", "RUMOR_HTTP_PORT": "2222", "RUMOR_LOG_LEVEL": "err"}
    c = load_config(["-config-file", path, "-node=from-flag"], env)
    assert c.node_name == "from-flag"  # flag beats env and file
    assert c.http_port == 2222  # env beats file
    assert c.log_level == "ERR"
    assert c.datacenter == "filedc" and c.serf_lan_port == 7001  # file beats default
    assert c.retry_interval == 90.0 and c.leave_on_terminate is False
    assert c.bind_addr == "0.0.0.0"  # nobody set it
    # the same config without the flag / without the env
    assert load_config(["-config-file", path], env).node_name == "from-env"
    assert load_config(["-config-file", path], {}).http_port == 1111


def test_lists_append_and_meta_merges_across_sources(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", {"retry_join": ["a"], "start_join": ["s1"],
                                      "node_meta": {"a": "1", "b": "1"}})
    env = {"RUMOR_RETRY_JOIN": "b, c,,", "RUMOR_NODE_META": "b:2,x:y:z"}
    c = load_config(["-config-file=" + path, "-retry-join", "d", "--retry-join=a",
                     "-join", "s2", "-join=s3", "-join=s3", "-node-meta", "c:3"], env)
    assert c.retry_join == ("a", "b", "c", "d")
    assert c.start_join == ("s1", "s2", "s3")
    assert c.node_meta == {"a": "1", "b": "2", "x": "y:z", "c": "3"}


def test_later_files_win_and_config_dir_is_sorted(tmp_path: Path) -> None:
    one = write(tmp_path, "one.json", {"node_name": "one", "datacenter": "d1"})
    two = write(tmp_path, "two.json", {"node_name": "two"})
    assert load_config(["-config-file", one, "-config-file", two], {}).node_name == "two"
    assert load_config(["-config-file", two, "-config-file", one], {}).node_name == "one"
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d, "20-b.json", {"node_name": "b"})
    write(d, "10-a.json", {"node_name": "a", "datacenter": "x"})
    write(d, "README.txt", "not json, ignored")
    c = load_config(["-config-dir", str(d)], {})
    assert (c.node_name, c.datacenter) == ("b", "x")
    # file given after the dir overrides it, and vice versa
    assert load_config(["-config-dir", str(d), "-config-file", one], {}).node_name == "one"
    assert load_config(["-config-file", one, "-config-dir", str(d)], {}).node_name == "b"


@pytest.mark.parametrize("argv", [
    ["-node=x"], ["-node", "x"], ["--node", "x"], ["--node=x"],
])
def test_flag_syntaxes(argv: list[str]) -> None:
    assert load_config(argv, {}).node_name == "x"


def test_bool_flags_and_env() -> None:
    assert load_config(["-dev"], {}).dev is True
    assert load_config(["-dev=true"], {}).dev is True
    assert load_config(["--dev=false"], {}).dev is False
    assert load_config([], {"RUMOR_DEV": "1"}).dev is True
    assert load_config(["-dev=false"], {"RUMOR_DEV": "true"}).dev is False
    assert load_config([], {"RUMOR_LEAVE_ON_TERMINATE": "false"}).leave_on_terminate is False
    with pytest.raises(FlagError, match="^-dev: invalid boolean"):
        load_config(["-dev=maybe"], {})
    # a bool flag never eats the next argument
    with pytest.raises(FlagError, match="unexpected argument"):
        load_config(["-dev", "true"], {})


def test_env_values_are_typed() -> None:
    env = {"RUMOR_BIND_ADDR": "10.0.0.1", "RUMOR_SERF_LAN_PORT": "7946", "RUMOR_ENCRYPT": KEY32,
           "RUMOR_DATA_DIR": "/var/lib/rumor", "RUMOR_RETRY_INTERVAL": "250ms",
           "RUMOR_RETRY_MAX": "3", "RUMOR_EVENT_SIZE_LIMIT": "9216", "RUMOR_NODE_NAME": "",
           "RUMOR_GOSSIP_PROFILE": "WAN", "RUMOR_DATACENTER": "EU-West_1"}
    c = load_config([], env)
    assert (c.bind_addr, c.serf_lan_port, c.encrypt, c.data_dir) == (
        "10.0.0.1", 7946, KEY32, "/var/lib/rumor")
    assert (c.retry_interval, c.retry_max, c.event_size_limit) == (0.25, 3, 9216)
    assert c.node_name == socket.gethostname()  # an empty variable counts as unset
    assert (c.gossip_profile, c.datacenter) == ("wan", "eu-west_1")
    assert c.encrypt_key() == bytes(range(32))


def test_dev_mode() -> None:
    c = load_config(["-dev", "-data-dir=/tmp/x"], {})
    assert (c.node_name, c.bind_addr, c.data_dir, c.log_level) == ("dev", "127.0.0.1", None,
                                                                   "DEBUG")
    c = load_config(["-dev", "-node", "n1", "-log-level=info", "-bind=127.0.0.5"], {})
    assert (c.node_name, c.bind_addr, c.log_level) == ("n1", "127.0.0.5", "INFO")


def test_ipv6_and_join_addresses() -> None:
    c = load_config(["-bind", "::1", "-advertise", "0:0::1", "-join", "[::1]:8301",
                     "-retry-join", "host.example:7946", "-retry-join", "fe80::1"], {})
    assert (c.bind_addr, c.advertise_addr) == ("::1", "::1")
    assert c.start_join == ("[::1]:8301",)


def test_parse_flags_go_semantics() -> None:
    specs = [FlagSpec("name", "str", ""), FlagSpec("v", "bool", ""), FlagSpec("j", "list", "")]
    p = parse_flags(specs, ["-name", "-x", "-v", "-j=1", "--j", "2", "pos", "-name=late"])
    assert p.get_str("name") == "-x" and p.get_bool("v") and p.get_list("j") == ["1", "2"]
    assert p.args == ["pos", "-name=late"]  # parsing stops at the first positional
    assert parse_flags(specs, ["--", "-v"]).args == ["-v"]
    assert parse_flags(specs, ["-", "x"]).args == ["-", "x"]
    for helpflag in ("-h", "-help", "--help", "--help=1"):
        with pytest.raises(HelpRequested):
            parse_flags(specs, [helpflag])
    with pytest.raises(FlagError, match="^flag provided but not defined: -nope$"):
        parse_flags(specs, ["-nope"])
    with pytest.raises(FlagError, match="^flag needs an argument: -name$"):
        parse_flags(specs, ["-name"])
    with pytest.raises(FlagError, match="bad flag syntax"):
        parse_flags(specs, ["---name=x"])
    assert {s.name for s in AGENT_FLAGS} >= {
        "node", "bind", "advertise", "serf-lan-port", "client", "http-port", "join",
        "retry-join", "retry-interval", "retry-max", "datacenter", "data-dir", "config-file",
        "encrypt", "node-meta", "dev", "log-level", "event-size-limit"}


def _meta_flags(n: int) -> list[str]:
    return [a for i in range(n) for a in ("-node-meta", f"k{i}:v")]


@pytest.mark.parametrize(("argv", "env", "prefix"), [
    (["-http-port=70000"], {}, "http_port: must be 1-65535, got 70000"),
    (["-serf-lan-port=0"], {}, "serf_lan_port: must be 1-65535, got 0"),
    (["-http-port=abc"], {}, "-http-port: invalid value 'abc'"),
    ([], {"RUMOR_HTTP_PORT": "80x"}, "RUMOR_HTTP_PORT: invalid value"),
    ([], {"RUMOR_HTTP_PORT": "0"}, "http_port: must be 1-65535, got 0 (from environment"),
    (["-encrypt", base64.b64encode(b"x" * 10).decode()], {},
     "encrypt: key must be 16, 24 or 32 bytes after base64 decoding"),
    (["-encrypt", "not base64!"], {}, "encrypt: key is not valid base64"),
    (["-node-meta", ":v"], {}, "node_meta: key must not be empty"),
    (["-node-meta", "k" * 129 + ":v"], {}, "node_meta: key"),
    (["-node-meta", "k:" + "v" * 513], {}, "node_meta: value for key 'k' longer than 512"),
    (["-node-meta", "a b:c"], {}, "node_meta: key 'a b' may only contain"),
    (_meta_flags(65), {}, "node_meta: at most 64 pairs"),
    (["-node-meta", "k:" + "v" * 510], {}, "node_meta: tags encode to 546 bytes; gossip"),
    (["-node-meta", "k:" + "v" * 477], {}, "node_meta: tags encode to 513 bytes; gossip"),
    (["-node-meta", "novalue"], {}, "-node-meta: node meta must be key:value"),
    ([], {"RUMOR_NODE_META": "a:1,b"}, "RUMOR_NODE_META: node meta must be key:value"),
    (["-log-level=LOUD"], {}, "log_level: must be one of TRACE, DEBUG, INFO, WARN, ERR"),
    (["-event-size-limit=0"], {}, "event_size_limit: must be 1-9216, got 0"),
    (["-event-size-limit=9217"], {}, "event_size_limit: must be 1-9216, got 9217"),
    (["-event-buffer=0"], {}, "event_buffer: must be 1-65536"),
    (["-gossip-profile=lan2"], {}, "gossip_profile: must be one of lan, wan, local"),
    (["-retry-interval=0s"], {}, "retry_interval: must be positive"),
    (["-retry-interval=30"], {}, "-retry-interval: invalid value '30'"),
    (["-retry-max=-1"], {}, "retry_max: must be >= 0"),
    (["-bind=not-an-ip"], {}, "bind_addr: must be an IP address"),
    (["-client=localhost"], {}, "client_addr: must be an IP address"),
    (["-advertise=0.0.0.0"], {}, "advertise_addr: cannot be the unspecified address"),
    (["-datacenter=dc 1"], {}, "datacenter: may only contain"),
    (["-node="], {}, "node_name: must be non-empty"),
    (["-retry-join=host:99999"], {}, "retry_join: invalid port"),
    (["-join=a b"], {}, "start_join: invalid address"),
    (["-nope"], {}, "flag provided but not defined: -nope"),
    (["-node"], {}, "flag needs an argument: -node"),
    (["extra"], {}, "unexpected argument: 'extra'"),
])
def test_errors_name_the_field(argv: list[str], env: dict[str, str], prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(argv, env)
    assert str(info.value).startswith(prefix), str(info.value)


def test_tags_wire_size_is_what_gossip_sends() -> None:
    for tags in ({}, {"a": "b"}, {f"k{i}": "v" * i for i in range(40)}, {"é": "x" * 31}):
        assert tags_wire_size(tags) == len(encode_tags(tags))
    # the agent's own tags (role, dc, build) count: the largest value that fits, exactly
    c = load_config(["-node-meta", "k:" + "v" * 476], {})
    assert c.node_meta["k"] == "v" * 476
    assert tags_wire_size(node_tags(c.datacenter, c.node_meta)) == NODE_META_WIRE_MAX


def test_error_reports_where_the_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", {"ports": {"http": 70000}})
    with pytest.raises(ConfigError) as info:
        load_config(["-config-file", path], {})
    assert str(info.value) == f"http_port: must be 1-65535, got 70000 (from config file {path})"
    with pytest.raises(ConfigError, match=r"\(from flag -http-port\)$"):
        load_config(["-config-file", path, "-http-port=0"], {})


def test_data_dir_must_not_be_a_file(tmp_path: Path) -> None:
    f = write(tmp_path, "file", "x")
    with pytest.raises(ConfigError, match="^data_dir: .* is not a directory"):
        load_config(["-data-dir", f], {})
    assert load_config(["-data-dir", str(tmp_path / "new")], {}).data_dir == str(tmp_path / "new")


@pytest.mark.parametrize(("content", "message"), [
    ('{\n  "node_name": "a",\n  "datacenter" "x"\n}', "line 3: Expecting ':' delimiter"),
    ('{"server": true}', "unknown key 'server'"),
    ('{"ports": {"dns": 8600}}', "unknown key 'ports.dns'"),
    ('{"ports": 8500}', "ports: must be an object"),
    ('{"ports": {"http": "8500"}}', 'ports.http: must be an integer, got "8500"'),
    ('{"retry_interval": 30}', "retry_interval: must be a duration string"),
    ('{"retry_interval": "30 s"}', "retry_interval: time: "),
    ('{"retry_join": "a"}', "retry_join: must be a list of strings"),
    ('{"node_meta": {"a": 1}}', "node_meta: must be an object of string values"),
    ('{"leave_on_terminate": "yes"}', "leave_on_terminate: must be true or false"),
    ('{"dev": true}', "unknown key 'dev'"),
    ("[1, 2]", "top level must be a JSON object"),
])
def test_config_file_errors(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, "bad.json", content)
    with pytest.raises(ConfigError) as info:
        load_config(["-config-file", path], {})
    assert str(info.value).startswith(f"config file {path}: {message}"), str(info.value)


def test_missing_config_file_and_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^config file {tmp_path}/nope.json: cannot read"):
        load_config(["-config-file", str(tmp_path / "nope.json")], {})
    with pytest.raises(ConfigError, match=f"^config dir {tmp_path}/nope: cannot read"):
        load_config(["-config-dir", str(tmp_path / "nope")], {})


def test_validate_paths_as_positionals(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", {"node_name": "pos"})
    assert load_config([path], {}, allow_paths=True).node_name == "pos"
    assert load_config(["-node=flag", path], {}, allow_paths=True).node_name == "flag"
    with pytest.raises(ConfigError):
        load_config([path], {})
