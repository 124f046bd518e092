"""The ACL settings of compose.yaml and the HTTPS overlay compose.tls.yaml, without Docker:
the environment each service would get is handed to real `rumor agent` processes on loopback.

- compose.yaml: ACLs on, anonymous requests may read (the healthcheck's `rumor members`
  passes without a token) but not fire; the management token from RUMOR_ACL_TOKEN may.
- compose.yaml + compose.tls.yaml: HTTPS only with client certificates; the healthcheck,
  run with the container's environment, gets through; plain HTTP is off.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.helpers import RUMOR, free_host, http_request, run_cli, wait_for
from tests.test_compose import KEY, ROOT, SERVICES, VALID, base_env, needs_compose, rumor

TLS_FILE = ROOT / "compose.tls.yaml"
IMAGE_TLS_DIR = "/etc/rumor/tls"
# the Dockerfile's ENV lines for the TLS files
IMAGE_ENV = {"RUMOR_TLS_CA_FILE": f"{IMAGE_TLS_DIR}/consul-agent-ca.pem",
             "RUMOR_TLS_CERT_FILE": f"{IMAGE_TLS_DIR}/dc1-server-consul-0.pem",
             "RUMOR_TLS_KEY_FILE": f"{IMAGE_TLS_DIR}/dc1-server-consul-0-key.pem"}


def services(files: list[Path], env: dict[str, str]) -> dict[str, Any]:
    """The merged, normalized compose services as a dict (with a gossip key, which compose
    requires)."""
    env = {"RUMOR_ENCRYPT": KEY, **env}
    args = [a for f in files for a in ("-f", str(f))]
    exe = shutil.which("docker-compose")
    assert exe is not None
    with open(exe, "rb") as fh:
        first = fh.readline().decode(errors="replace")
    if not first.startswith("#!"):  # compose v2 prints JSON itself
        done = subprocess.run(["docker-compose", *args, "config", "--format", "json"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["services"]  # type: ignore[no-any-return]
    done = subprocess.run(["docker-compose", *args, "config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    conv = subprocess.run([*shlex.split(first[2:]), "-c", to_json], input=done.stdout,
                          capture_output=True, text=True, timeout=30)
    assert conv.returncode == 0, conv.stderr
    return json.loads(conv.stdout)["services"]  # type: ignore[no-any-return]


def container_env(svc: dict[str, Any], pki: Path | None = None) -> dict[str, str]:
    """The service's environment as the container sees it (image ENV + compose), with the
    mounted TLS directory mapped to `pki` on this machine."""
    env = {**IMAGE_ENV, **{k: str(v) for k, v in svc["environment"].items()}}
    if pki is not None:
        env = {k: v.replace(IMAGE_TLS_DIR, str(pki)) for k, v in env.items()}
    return env


def local_command(svc: dict[str, Any], host: str) -> list[str]:
    """The service's agent flags for one process on `host` (no peers to join)."""
    return [a for a in svc["command"] if not a.startswith(("-retry-join", "-client",
                                                           "-data-dir"))] + [
        f"-bind={host}", f"-client={host}"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    d = tmp_path_factory.mktemp("tls")
    host = free_host(ports=(8301, 8500, 8501))
    for args in (["ca", "create"], ["cert", "create", "-client"],
                 ["cert", "create", "-server", f"-additional-ipaddress={host}"]):
        done = subprocess.run([*RUMOR, "tls", *args], cwd=d, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
    yield d, host


@needs_compose
def test_compose_acl_settings_are_valid_with_and_without_a_token() -> None:
    for token in (None, "f5c3d1a0-4bd7-4c3a-9e0a-2b7f3f1b6a11"):
        env = base_env() if token is None else base_env(RUMOR_ACL_TOKEN=token)
        svcs = services([ROOT / "compose.yaml"], env)
        for name in SERVICES:
            svc = svcs[name]
            assert svc["environment"]["RUMOR_ACL_INITIAL_MANAGEMENT_TOKEN"] == (token or "")
            done = rumor(["validate", *svc["command"]], base_env(**container_env(svc)))
            assert (done.returncode, done.stdout.strip()) == (0, VALID), (name, done.stderr)


@needs_compose
def test_compose_acls_let_anyone_read_and_only_the_token_write(tmp_path: Path) -> None:
    token = "0f9c6a55-1111-4c3a-9e0a-2b7f3f1b6a11"
    svc = services([ROOT / "compose.yaml"], base_env(RUMOR_ACL_TOKEN=token))["rumor1"]
    host = free_host()
    env = container_env(svc)
    proc = subprocess.Popen([*RUMOR, "agent", *local_command(svc, host),
                             f"-data-dir={tmp_path / 'data'}"], env=base_env(**env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_for(lambda: _status(host, 8500, "GET", "/v1/agent/self") == 200, 15,
                 "the compose-configured agent to answer an anonymous read")
        health = ["members", f"-http-addr={host}:8500"]  # the healthcheck, aimed at `host`
        done = run_cli(*health, env=base_env())
        assert done.returncode == 0 and "rumor1" in done.stdout, done.stderr
        assert _status(host, 8500, "PUT", "/v1/event/fire/deploy") == 403
        assert _status(host, 8500, "PUT", "/v1/agent/leave") == 403
        # inside the container RUMOR_HTTP_TOKEN carries the management token
        done = run_cli("event", "-name=deploy", f"-http-addr={host}:8500", "v1",
                       env=base_env(RUMOR_HTTP_TOKEN=env["RUMOR_HTTP_TOKEN"]))
        assert done.returncode == 0 and done.stdout.startswith("Event ID:"), done.stderr
    finally:
        proc.terminate()
        proc.wait(15)


def _status(host: str, port: int, method: str, path: str) -> int:
    try:
        return http_request(host, port, method, path, timeout=2).status
    except OSError:
        return 0


@needs_compose
def test_tls_overlay_serves_mutual_tls_and_the_healthcheck_passes(
        pki: tuple[Path, str], tmp_path: Path) -> None:
    d, host = pki
    svcs = services([ROOT / "compose.yaml", TLS_FILE], base_env())
    for name in SERVICES:
        svc = svcs[name]
        assert any(v.endswith(f":{IMAGE_TLS_DIR}:ro") for v in svc["volumes"]), svc["volumes"]
        done = rumor(["validate", *svc["command"]], base_env(**container_env(svc, d)))
        assert (done.returncode, done.stdout.strip()) == (0, VALID), (name, done.stderr)
    svc = svcs["rumor1"]
    assert any(str(p).startswith("127.0.0.1:8501:8501") for p in svc["ports"])
    env = container_env(svc, d)
    env["RUMOR_HTTP_ADDR"] = env["RUMOR_HTTP_ADDR"].replace("127.0.0.1", host)
    proc = subprocess.Popen([*RUMOR, "agent", *local_command(svc, host),
                             f"-data-dir={tmp_path / 'data'}"], env=base_env(**env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        health = svc["healthcheck"]["test"][1:]
        assert health == ["rumor", "members"]
        wait_for(lambda: run_cli(*health[1:], env=base_env(**env)).returncode == 0, 15,
                 "the healthcheck to pass over HTTPS with the container's environment")
        assert _status(host, 8500, "GET", "/v1/agent/self") == 0  # plain HTTP is off
        no_cert = {k: v for k, v in env.items() if k not in ("RUMOR_CLIENT_CERT",
                                                             "RUMOR_CLIENT_KEY")}
        assert run_cli(*health[1:], env=base_env(**no_cert)).returncode == 1
    finally:
        proc.terminate()
        proc.wait(15)
