"""``/v1/operator/keyring`` through real HTTP on in-process agents, and the keyring file."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import trio

from agent.keyring import (
    KEYRING_FILE,
    KeyringFileError,
    load_keyring_file,
    startup_keys,
    write_keyring_file,
)
from tests.agent.helpers import eventually, in_process_agent, random_subnet

K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(100, 116))).decode()
K3 = base64.b64encode(bytes(range(200, 224))).decode()


def keys_on_disk(data: Path) -> list[str]:
    loaded: list[str] = json.loads((data / KEYRING_FILE).read_text())
    return loaded


async def test_rotation_over_http(tmp_path: Path) -> None:
    net = random_subnet()
    with trio.fail_after(60):
        async with in_process_agent(f"{net}.1", "a1", encrypt=K1,
                                    data_dir=str(tmp_path / "a1")) as a1, \
                in_process_agent(f"{net}.2", "a2", encrypt=K1,
                                 data_dir=str(tmp_path / "a2")) as a2, \
                in_process_agent(f"{net}.3", "a3", encrypt=K1,
                                 data_dir=str(tmp_path / "a3")) as a3:
            agents = [a1, a2, a3]
            await a2.agent.join([a1.serf_addr])
            await a3.agent.join([a1.serf_addr])
            await eventually(lambda: all(len(a.agent.node.members()) == 3 for a in agents),
                             "3 members", 10)
            r = await a1.client.get("/v1/operator/keyring")
            assert r.status_code == 200, r.text
            assert r.json() == [{"WAN": False, "Datacenter": "dc1", "Segment": "",
                                 "Keys": {K1: 3}, "PrimaryKeys": {K1: 3}, "NumNodes": 3}]

            for body, why in [(b"{", "Request decode failed"), (b"[]", "Request decode failed"),
                              (b'{"Key": "not base64!"}', "Invalid key"),
                              (json.dumps({"Key": base64.b64encode(b"short").decode()}).encode(),
                               "key size must be 16, 24 or 32 bytes"),
                              (b'{"Key": 5}', "non-empty base64")]:
                r = await a2.client.post("/v1/operator/keyring", content=body)
                assert r.status_code == 400 and why in r.text, (body, r.text)
            for bad in ("relay-factor=9", "relay-factor=x", "local-only=true", "local-only=2"):
                r = await a2.client.post(f"/v1/operator/keyring?{bad}", json={"Key": K2})
                assert r.status_code == 400, bad
            assert all(a.agent.node.keyring_keys() == (base64.b64decode(K1),) for a in agents)

            r = await a2.client.post("/v1/operator/keyring", json={"Key": K2})
            assert r.status_code == 200 and r.text == "", r.text
            r = await a3.client.get("/v1/operator/keyring?relay-factor=2&local-only=true")
            assert r.json()[0]["Keys"] == {K1: 3, K2: 3}
            assert r.json()[0]["PrimaryKeys"] == {K1: 3}
            r = await a3.client.put("/v1/operator/keyring", json={"Key": K3})
            assert r.status_code == 400 and "not in the keyring" in r.text
            r = await a3.client.put("/v1/operator/keyring", json={"Key": K2})
            assert r.status_code == 200
            r = await a1.client.request("DELETE", "/v1/operator/keyring", json={"Key": K2})
            assert r.status_code == 400 and "Removing the primary key is not allowed" in r.text
            r = await a1.client.request("DELETE", "/v1/operator/keyring", json={"Key": K1})
            assert r.status_code == 200
            r = await a1.client.get("/v1/operator/keyring")
            assert r.json()[0]["Keys"] == {K2: 3} and r.json()[0]["PrimaryKeys"] == {K2: 3}
            for a in agents:
                assert a.agent.node.keyring_keys() == (base64.b64decode(K2),)
                assert keys_on_disk(Path(a.agent.config.data_dir or "")) == [K2]
                mode = os.stat(Path(a.agent.config.data_dir or "") / KEYRING_FILE).st_mode
                assert mode & 0o777 == 0o600
            # events still flow with the new key only
            a3.agent.fire("after-rotation", b"x")
            await eventually(lambda: all(len(a.agent.store) == 1 for a in agents),
                             "event everywhere", 10)


async def test_unencrypted_agent_reports_the_empty_keyring() -> None:
    with trio.fail_after(30):
        async with in_process_agent(f"{random_subnet()}.1", "plain") as a:
            r = await a.client.get("/v1/operator/keyring")
            assert r.status_code == 500
            assert "plain: Keyring is empty (encryption not enabled)" in r.text
            r = await a.client.post("/v1/operator/keyring", json={"Key": K2})
            assert r.status_code == 500
            assert "No keyring to modify (encryption not enabled)" in r.text


def test_keyring_file_round_trip_and_startup_choice(tmp_path: Path) -> None:
    k1, k2 = base64.b64decode(K1), base64.b64decode(K2)
    assert startup_keys(None, None) is None and startup_keys(None, k1) == [k1]
    assert startup_keys(tmp_path, None) is None
    assert startup_keys(tmp_path, k1) == [k1]  # creates the file from -encrypt
    assert keys_on_disk(tmp_path) == [K1]
    write_keyring_file(tmp_path / KEYRING_FILE, [k2, k1])
    assert (tmp_path / KEYRING_FILE).read_text() == json.dumps([K2, K1], indent=2)
    assert startup_keys(tmp_path, k1) == [k2, k1]  # the file wins: rotated keys survive
    assert startup_keys(tmp_path, None) == [k2, k1]


@pytest.mark.parametrize("content,why", [
    (b"", "not JSON"), (b"{}", "JSON list"), (b"[]", "no keys"), (b'["%%%"]', "entry 0"),
    (b'["' + base64.b64encode(b"x" * 10) + b'"]', "key size"), (b"\xff\xfe", "not JSON"),
    (b'[1]', "entry 0"), (b"[" + b'"' + K1.encode() + b'",' * 0 + b"]", "not JSON"),
])
def test_corrupt_keyring_file_is_one_line_naming_the_file(tmp_path: Path, content: bytes,
                                                          why: str) -> None:
    path = tmp_path / KEYRING_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(KeyringFileError) as exc:
        load_keyring_file(path)
    text = str(exc.value)
    assert str(path) in text and why in text and "\n" not in text


def test_keyring_cli_needs_exactly_one_action() -> None:
    from tests.agent.helpers import run_cli

    r = run_cli("keyring", "-http-addr=127.0.0.1:1")
    assert r.returncode == 1 and "Usage: rumor keyring" in r.stderr
    r = run_cli("keyring", "-list", "-install", K2, "-http-addr=127.0.0.1:1")
    assert r.returncode == 1 and r.stderr.strip() == "Only a single action is allowed"
    r = run_cli("keyring", "-list", "-relay-factor=6", "-http-addr=127.0.0.1:1")
    assert r.returncode == 1 and "Relay factor must be in range: [0, 5]" in r.stderr
    r = run_cli("keyring", "-list", "-http-addr=127.0.0.1:1")  # nobody listens there
    assert r.returncode == 1 and "Error connecting to rumor agent" in r.stderr
