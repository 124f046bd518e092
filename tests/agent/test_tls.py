"""HTTPS and mutual TLS on the API, with certificates made by `rumor tls ca|cert create`.

A real agent process serves HTTPS only (`-http-port=-1`) with `verify_incoming`: curl with
`--cacert` and a client certificate gets through, curl without a certificate is refused, the
CLI works over HTTPS with flags and with Consul's environment variables; SIGHUP re-reads the
TLS settings.  Bad TLS files stop the agent at start naming the field.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.agent.helpers import RUMOR, AgentProcess, free_host, run_cli, wait_for

HTTPS_PORT = 8501


def tls_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUMOR, "tls", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A CA, a server certificate for a loopback host, and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    host = free_host(ports=(8301, 8500, HTTPS_PORT))
    assert tls_cli(d, "ca", "create").returncode == 0
    out = tls_cli(d, "cert", "create", "-server", f"-additional-ipaddress={host}")
    assert out.returncode == 0, out.stderr
    assert "==> Saved dc1-server-consul-0.pem" in out.stdout
    assert tls_cli(d, "cert", "create", "-client").returncode == 0
    return d, host


def test_tls_create_writes_consuls_files(pki: tuple[Path, str], tmp_path: Path) -> None:
    d, host = pki
    for name in ("consul-agent-ca.pem", "dc1-server-consul-0.pem", "dc1-client-consul-0.pem"):
        assert (d / name).exists()
    for name in ("consul-agent-ca-key.pem", "dc1-server-consul-0-key.pem"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((d / "dc1-server-consul-0.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"server.dc1.consul", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert host in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    ca = x509.load_pem_x509_certificate((d / "consul-agent-ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    # refusals: no CA here, an existing CA, not exactly one kind
    out = tls_cli(tmp_path, "cert", "create", "-server")
    assert out.returncode == 1 and "-ca: cannot load the CA certificate" in out.stderr
    assert tls_cli(d, "ca", "create").returncode == 1
    assert "exactly one of" in tls_cli(d, "cert", "create", "-server", "-client").stderr
    assert tls_cli(d, "nonsense").returncode == 1


def write_config(path: Path, d: Path, verify: bool) -> None:
    path.write_text(json.dumps({"ports": {"https": HTTPS_PORT}, "tls": {"defaults": {
        "ca_file": str(d / "consul-agent-ca.pem"),
        "cert_file": str(d / "dc1-server-consul-0.pem"),
        "key_file": str(d / "dc1-server-consul-0-key.pem"), "verify_incoming": verify}}}))


def curl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}",
                           *args, url], capture_output=True, text=True, timeout=30)


def test_mutual_tls_with_curl_and_the_cli(pki: tuple[Path, str], tmp_path: Path) -> None:
    d, host = pki
    cfg = tmp_path / "tls.json"
    write_config(cfg, d, verify=True)
    url = f"https://{host}:{HTTPS_PORT}/v1/agent/self"
    ca = ["--cacert", str(d / "consul-agent-ca.pem")]
    client = ["--cert", str(d / "dc1-client-consul-0.pem"),
              "--key", str(d / "dc1-client-consul-0-key.pem")]
    agent = AgentProcess("tls1", host, tmp_path / "tls1", [f"-config-file={cfg}"])
    try:
        agent.start("-http-port=-1")
        out = wait_for(lambda: (r := curl(url, *ca, *client)).stdout.endswith("200") and r,
                       15, "the agent to serve HTTPS")
        assert json.loads(out.stdout.rpartition("\n")[0])["Config"]["NodeName"] == "tls1"
        assert "rumor agent running" in agent.log_path.read_text()
        assert f"Client addr: https://{host}:{HTTPS_PORT}" in agent.log_path.read_text()

        refused = curl(url, *ca)  # no client certificate
        assert refused.returncode != 0 and not refused.stdout.endswith("200"), refused
        assert curl(url, *client).returncode != 0  # the agent's CA is not a system CA
        plain = curl(f"http://{host}:8500/v1/agent/self")  # -http-port=-1: no plain HTTP
        assert plain.returncode == 7, plain  # curl: could not connect

        flags = [f"-http-addr=https://{host}:{HTTPS_PORT}",
                 f"-ca-file={d / 'consul-agent-ca.pem'}",
                 f"-client-cert={d / 'dc1-client-consul-0.pem'}",
                 f"-client-key={d / 'dc1-client-consul-0-key.pem'}"]
        out = run_cli("members", *flags)
        assert out.returncode == 0 and "tls1" in out.stdout, out.stderr
        env = {"CONSUL_HTTP_ADDR": f"{host}:{HTTPS_PORT}", "CONSUL_HTTP_SSL": "true",
               "CONSUL_CACERT": str(d / "consul-agent-ca.pem"),
               "CONSUL_CLIENT_CERT": str(d / "dc1-client-consul-0.pem"),
               "CONSUL_CLIENT_KEY": str(d / "dc1-client-consul-0-key.pem")}
        out = run_cli("event", "-name=deploy", "v1", env=env)
        assert out.returncode == 0 and out.stdout.startswith("Event ID: "), out.stderr
        out = run_cli("watch", "-type=event", "-name=deploy", *flags)  # prints and exits
        assert out.returncode == 0 and json.loads(out.stdout)[0]["Name"] == "deploy", out
        out = run_cli("members", flags[0], flags[1])  # no client certificate
        assert out.returncode == 1 and "Error connecting to rumor agent" in out.stderr
        out = run_cli("members", flags[0])  # the agent's CA is unknown to the system
        assert out.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in out.stderr
        out = run_cli("members", *flags[:2], f"-client-cert={d / 'dc1-client-consul-0.pem'}")
        assert out.returncode == 1 and "must be given together" in out.stderr

        # SIGHUP re-reads the TLS settings: client certificates become optional
        write_config(cfg, d, verify=False)
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: curl(url, *ca).stdout.endswith("200"), 10,
                 "the reload to stop requiring client certificates")
    finally:
        agent.stop()


@pytest.mark.parametrize(("tls", "message"), [
    ({"cert_file": "/nonexistent/cert.pem", "key_file": "{d}/dc1-server-consul-0-key.pem"},
     "tls.defaults.cert_file: cannot read /nonexistent/cert.pem"),
    ({"cert_file": "{d}/dc1-server-consul-0.pem", "key_file": "{d}/dc1-client-consul-0-key.pem"},
     "tls.defaults.key_file: {d}/dc1-client-consul-0-key.pem does not match the certificate"),
    ({"cert_file": "{d}/consul-agent-ca-key.pem", "key_file": "{d}/dc1-server-consul-0-key.pem"},
     "tls.defaults.cert_file: {d}/consul-agent-ca-key.pem holds no PEM certificate"),
    ({"cert_file": "{d}/dc1-server-consul-0.pem", "key_file": "{d}/dc1-server-consul-0.pem"},
     "tls.defaults.key_file: {d}/dc1-server-consul-0.pem is not an unencrypted PEM private key"),
    ({"cert_file": "{d}/dc1-server-consul-0.pem"}, "tls.defaults.key_file: HTTPS"),
    ({"cert_file": "{d}/dc1-server-consul-0.pem", "key_file": "{d}/dc1-server-consul-0-key.pem",
      "verify_incoming": True}, "tls.defaults.ca_file: verify_incoming needs"),
    ({"cert_file": "{d}/dc1-server-consul-0.pem", "key_file": "{d}/dc1-server-consul-0-key.pem",
      "ca_file": "{d}/missing-ca.pem"}, "tls.defaults.ca_file: cannot read {d}/missing-ca.pem"),
])
def test_bad_tls_files_stop_the_agent_naming_the_field(
        pki: tuple[Path, str], tmp_path: Path, tls: dict[str, object], message: str) -> None:
    d, _ = pki
    settings = {k: v.replace("{d}", str(d)) if isinstance(v, str) else v for k, v in tls.items()}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"ports": {"https": HTTPS_PORT}, "tls": {"defaults": settings}}))
    host = free_host(ports=(8301, 8500, HTTPS_PORT))
    out = run_cli("agent", "-node=bad", f"-bind={host}", f"-client={host}",
                  f"-config-file={path}", timeout=20)
    assert out.returncode == 1, out.stderr
    assert message.replace("{d}", str(d)) in out.stderr, out.stderr
    assert "rumor agent running" not in out.stderr


def test_legacy_top_level_tls_keys_and_http_port_off(pki: tuple[Path, str],
                                                     tmp_path: Path) -> None:
    d, _ = pki
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps({"ports": {"https": HTTPS_PORT},
                                "cert_file": str(d / "dc1-server-consul-0.pem"),
                                "key_file": str(d / "nowhere.pem")}))
    out = run_cli("validate", str(path))
    assert out.returncode == 1 and "tls.defaults.key_file: cannot read" in out.stderr
    out = run_cli("validate", "-http-port=-1")
    assert out.returncode == 1 and "https_port is not set either" in out.stderr
    assert os.path.exists(d / "dc1-server-consul-0.pem")


def test_py_consul_over_mutual_tls_with_acl_tokens(pki: tuple[Path, str],
                                                    tmp_path: Path) -> None:
    """Consul's own Python client, unchanged: HTTPS with a client certificate, ACL tokens."""
    import consul

    d, host = pki
    cfg = tmp_path / "both.json"
    write_config(cfg, d, verify=True)
    doc = json.loads(cfg.read_text())
    doc["acl"] = {"enabled": True, "default_policy": "deny",
                  "tokens": {"initial_management": "root"},
                  "token_list": [{"SecretID": "reader",
                                  "Rules": 'event_prefix "" { policy = "read" }'}]}
    cfg.write_text(json.dumps(doc))
    agent = AgentProcess("tls2", host, tmp_path / "tls2", [f"-config-file={cfg}"])
    settings = {"host": host, "port": HTTPS_PORT, "scheme": "https",
                "verify": str(d / "consul-agent-ca.pem"),
                "cert": (str(d / "dc1-client-consul-0.pem"),
                         str(d / "dc1-client-consul-0-key.pem"))}
    try:
        agent.start("-http-port=-1")
        root = consul.Consul(token="root", **settings)  # type: ignore[arg-type]
        fired = wait_for(lambda: _try_fire(root), 15, "the agent to accept a fire over HTTPS")
        reader = consul.Consul(token="reader", **settings)  # type: ignore[arg-type]
        with pytest.raises(consul.ACLPermissionDenied):
            reader.event.fire("deploy", body=b"no")
        # py-consul's event.list sends no token: anonymous, filtered by event:read to nothing
        wait_for(lambda: json.loads(http_request_tls(host, d, "/v1/event/list?token=reader")),
                 10, "the reader to list the event")
        r = http_request_tls(host, d, "/v1/event/list?token=reader")
        assert [e["ID"] for e in json.loads(r)] == [fired["ID"]]
        assert root.event.list()[1] == []
    finally:
        agent.stop()


def http_request_tls(host: str, d: Path, path: str) -> str:
    out = curl(f"https://{host}:{HTTPS_PORT}{path}", "--cacert", str(d / "consul-agent-ca.pem"),
               "--cert", str(d / "dc1-client-consul-0.pem"),
               "--key", str(d / "dc1-client-consul-0-key.pem"))
    body, _, status = out.stdout.rpartition("\n")
    assert status == "200", out
    return body


def _try_fire(c: object) -> dict[str, object] | None:
    import consul
    import requests

    assert isinstance(c, consul.Consul)
    try:
        fired: dict[str, object] = c.event.fire("deploy", body=b"v1")
        return fired
    except requests.exceptions.ConnectionError:
        return None
