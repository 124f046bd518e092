"""Checks the deployment assets without a Docker engine.

- compose.yaml passes `docker-compose config -q`; its five services have the intended shape,
  and each service's command line, with the environment the container would get, is a valid
  `rumor agent` configuration (`rumor validate` with the same flags) with a gossip key in
  RUMOR_ENCRYPT; without one (unset or empty) compose refuses to start the cluster, and the
  key-generation line documented in compose.yaml makes a valid key.
- The Dockerfile's ENTRYPOINT + CMD validate as `rumor agent` flags, its HEALTHCHECK is a real
  `rumor members` invocation that fails when no agent answers and passes when one does, and
  the files its COPY lines put in the image (after .dockerignore) build a package carrying the
  whole CLI and the web UI's static files.

The normalized compose file is YAML. PyYAML is not a project dependency, but docker-compose
1.x is a Python program that depends on it, so its own interpreter turns the YAML into JSON;
docker-compose v2 prints JSON itself (`config --format json`).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import tomllib
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = [f"rumor{i}" for i in range(1, 6)]
VALID = "Configuration is valid!"

needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (scripts/test installs it)",
)


# ---------------------------------------------------------------- helpers


def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any RUMOR_* / CONSUL_* setting, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUMOR_", "CONSUL_"))}
    env.update(extra)
    return env


def rumor(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the `rumor` console script's code (agent.cli:main) from this source tree."""
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, env=dict(env),
                          capture_output=True, text=True, timeout=30)


def compose(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), *args], cwd=ROOT,
                          env=dict(env), capture_output=True, text=True, timeout=60)


@functools.cache
def compose_config(encrypt: str | None) -> dict[str, Any]:
    """The normalized compose file as a dict, for RUMOR_ENCRYPT set to ``encrypt`` (None:
    unset) on the host."""
    env = base_env() if encrypt is None else base_env(RUMOR_ENCRYPT=encrypt)
    exe = shutil.which("docker-compose")
    assert exe is not None
    with open(exe, "rb") as f:
        first = f.readline().decode(errors="replace")
    if not first.startswith("#!"):  # compose v2 (a Go binary) prints JSON itself
        done = compose(["config", "--format", "json"], env)
        assert done.returncode == 0, done.stderr
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed
    normalized = compose(["config"], env)
    assert normalized.returncode == 0, normalized.stderr
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    done = subprocess.run([*shlex.split(first[2:]), "-c", to_json], input=normalized.stdout,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"docker-compose's interpreter cannot load YAML: {done.stderr}"
    parsed = json.loads(done.stdout)
    return parsed


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def instruction(name: str) -> str:
    found = [args for word, args in dockerfile() if word == name]
    assert len(found) == 1, f"expected exactly one {name} in the Dockerfile, found {len(found)}"
    return found[0]


def healthcheck_argv() -> list[str]:
    args = instruction("HEALTHCHECK")
    match = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])", args)
    assert match, f"HEALTHCHECK should be options + exec-form CMD, got {args!r}"
    argv: list[str] = json.loads(match.group(2))
    return argv


def flag_values(command: list[str], flag: str) -> list[str]:
    prefix = f"-{flag}="
    return [arg[len(prefix):] for arg in command if arg.startswith(prefix)]


def fresh_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


KEY = fresh_key()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that is reserved (bound) but refuses connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def fake_agent() -> Iterator[str]:
    """A stand-in agent answering GET /v1/agent/members like Consul; yields host:port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/v1/agent/members"
            body = json.dumps([{"Name": "rumor1", "Addr": "172.18.0.2", "Port": 8301,
                                "Status": 1, "Tags": {}}] if ok else []).encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------- compose.yaml


@needs_compose
def test_compose_file_is_valid_and_has_no_version_key() -> None:
    done = compose(["config", "-q"], base_env(RUMOR_ENCRYPT=KEY))
    assert done.returncode == 0, done.stderr
    assert not re.search(r"^version\s*:", COMPOSE_FILE.read_text(), re.MULTILINE)


@needs_compose
@pytest.mark.parametrize("env", [{}, {"RUMOR_ENCRYPT": ""}], ids=["unset", "empty"])
def test_compose_refuses_to_run_the_cluster_unencrypted(env: dict[str, str]) -> None:
    done = compose(["config", "-q"], base_env(**env))
    assert done.returncode != 0
    assert "set RUMOR_ENCRYPT to a gossip key in .env" in done.stderr, done.stderr


def test_documented_key_generation_makes_a_valid_gossip_key(tmp_path: Path) -> None:
    """Run the `echo "RUMOR_ENCRYPT=…" > .env` line from compose.yaml's header as written."""
    lines = [ln.strip().lstrip("#").strip() for ln in COMPOSE_FILE.read_text().splitlines()]
    documented = [ln for ln in lines if ln.startswith("echo \"RUMOR_ENCRYPT=")]
    assert len(documented) == 1, documented
    subprocess.run(["/bin/sh", "-c", documented[0]], cwd=tmp_path, check=True, timeout=10)
    name, _, key = (tmp_path / ".env").read_text().strip().partition("=")
    assert name == "RUMOR_ENCRYPT" and len(base64.b64decode(key, validate=True)) == 32
    done = rumor(["validate", "-node=x", f"-encrypt={key}"], base_env())
    assert (done.returncode, done.stdout.strip()) == (0, VALID), done.stderr


@needs_compose
def test_compose_services_have_the_intended_shape() -> None:
    config = compose_config(KEY)
    services = config["services"]
    assert sorted(services) == SERVICES
    assert sorted(config["volumes"]) == [f"{name}-data" for name in SERVICES]
    health = ["CMD", *healthcheck_argv()]
    for name, svc in services.items():
        command = svc["command"]
        assert isinstance(command, list), "command must be a list (no shell splitting)"
        assert flag_values(command, "node") == [name]
        assert sorted(flag_values(command, "retry-join")) == [s for s in SERVICES if s != name]
        assert flag_values(command, "client") == ["0.0.0.0"]
        assert flag_values(command, "data-dir") == ["/data"]
        assert svc["environment"]["RUMOR_ENCRYPT"] == KEY
        assert svc["environment"]["RUMOR_ACL_ENABLED"] == "true"  # tests/test_compose_acl_tls.py
        assert svc["restart"] == "unless-stopped"
        assert svc["healthcheck"]["test"] == health
        assert svc["volumes"] == [f"{name}-data:/data:rw"]
        assert svc["image"] == services["rumor1"]["image"]
        assert Path(svc["build"]["context"]) == ROOT
    published = services["rumor1"]["ports"]
    assert len(published) == 1 and re.fullmatch(r"(127\.0\.0\.1:)?8500:8500(/tcp)?", published[0])
    assert all("ports" not in services[name] for name in SERVICES[1:])


@needs_compose
def test_every_compose_command_is_a_valid_agent_configuration() -> None:
    services = compose_config(KEY)["services"]
    for name in SERVICES:
        svc = services[name]
        assert svc["environment"]["RUMOR_ENCRYPT"] == KEY
        done = rumor(["validate", *svc["command"]], base_env(**svc["environment"]))
        assert (done.returncode, done.stdout.strip()) == (0, VALID), (name, done.stderr)
    # The environment really reaches validate: a bad key in it is refused.
    bad = rumor(["validate", *services["rumor1"]["command"]], base_env(RUMOR_ENCRYPT="nope"))
    assert bad.returncode == 1 and "encrypt" in bad.stderr


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_basics() -> None:
    assert instruction("FROM") == "python:3.11-slim"
    assert instruction("USER") == "rumor"
    assert json.loads(instruction("VOLUME")) == ["/data"]
    assert sorted(instruction("EXPOSE").split()) == ["8301/tcp", "8301/udp", "8500/tcp",
                                                     "8501/tcp"]
    run = instruction("RUN")
    assert "pip install --no-cache-dir ." in run and "[test]" not in run
    assert "chown rumor:rumor /data" in run


def test_dockerfile_entrypoint_and_cmd_validate_as_agent_flags() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["rumor"] == "agent.cli:main"  # what `rumor` runs
    entrypoint = json.loads(instruction("ENTRYPOINT"))
    cmd = json.loads(instruction("CMD"))
    assert entrypoint == ["rumor", "agent"]
    assert flag_values(cmd, "client") == ["0.0.0.0"] and flag_values(cmd, "data-dir") == ["/data"]
    done = rumor(["validate", *cmd], base_env())
    assert (done.returncode, done.stdout.strip()) == (0, VALID), done.stderr


def test_healthcheck_fails_without_an_agent_and_passes_with_one(
    closed_port: int, fake_agent: str
) -> None:
    argv = healthcheck_argv()
    assert argv == ["rumor", "members", "-http-addr=127.0.0.1:8500"]
    assert rumor(["members", "-h"], base_env()).returncode == 0
    down = rumor(["members", f"-http-addr=127.0.0.1:{closed_port}"], base_env())
    assert down.returncode != 0
    up = rumor(["members", f"-http-addr={fake_agent}"], base_env())
    assert up.returncode == 0 and "rumor1" in up.stdout, up.stderr


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex) rules; the last matching rule wins, and a rule
    matching a parent directory matches everything below it (Docker's semantics)."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token))
        rules.append((negated, re.compile(regex)))
    return rules


def _in_context(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negated
    return not excluded


def test_dockerfile_copies_build_a_package_with_the_whole_cli(tmp_path: Path) -> None:
    rules = _dockerignore_rules()
    src = tmp_path / "src"  # plays the image's WORKDIR /src
    src.mkdir()
    copied: list[str] = []
    for word, args in dockerfile():
        if word != "COPY":
            continue
        *sources, dest = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            origin = ROOT / source
            assert origin.exists(), f"COPY {source}: not in the repository"
            files = [origin] if origin.is_file() else sorted(origin.rglob("*"))
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                if not f.is_file() or not _in_context(rel, rules):
                    continue
                inner = f.name if origin.is_file() else f.relative_to(origin).as_posix()
                target = src / dest / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
                copied.append(rel)
    assert "pyproject.toml" in copied and "README.md" in copied

    # What `pip install .` builds from: an sdist via the PEP 517 backend (a wheel would need
    # the `wheel` package, which the test venv's setuptools lacks). Its file list is the
    # packages setuptools finds, its egg-info the console script.
    build_sdist = "import sys, setuptools.build_meta as b; b.build_sdist(sys.argv[1])"
    built = subprocess.run([sys.executable, "-c", build_sdist, str(tmp_path / "out")], cwd=src,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    (sdist,) = (tmp_path / "out").glob("rumor-*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {name.partition("/")[2] for name in tf.getnames()}
        member = next(m for m in tf.getmembers() if m.name.endswith(".egg-info/entry_points.txt"))
        extracted = tf.extractfile(member)
        assert extracted is not None
        entry_points = extracted.read().decode()
    wanted = {
        p.relative_to(ROOT).as_posix()
        for package in ("agent", "gossip")
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    # the web UI's static files are package data (pyproject's package-data), not modules
    wanted |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "agent/ui").rglob("*")
               if p.is_file()}
    assert wanted and wanted <= names, sorted(wanted - names)
    assert re.search(r"^rumor\s*=\s*agent\.cli:main$", entry_points, re.MULTILINE)
