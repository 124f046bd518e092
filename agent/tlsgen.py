"""`rumor tls ca create` and `rumor tls cert create`: a CA and agent certificates, as `consul tls`.

Owns the files and their contents, with Consul's names so its guides apply unchanged:
`consul-agent-ca.pem` / `consul-agent-ca-key.pem` (`<domain>-agent-ca…` for another
`-domain`), and `dc1-server-consul-0.pem` / `dc1-server-consul-0-key.pem` (`-client`,
`-cli` likewise; the number counts up past existing files).  Keys are ECDSA P-256, as
Consul's default.  Server and client certificates name `server.<dc>.<domain>` (or
`client.…`), `localhost` and 127.0.0.1, plus `-additional-dnsname` / `-additional-ipaddress`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.flags import FlagError, FlagSpec, HelpRequested, flags_usage, parse_flags

CA_FLAGS = (
    FlagSpec("days", "str", "Days the CA is valid (default 1825).", "N"),
    FlagSpec("domain", "str", "Domain of the cluster (default consul).", "DOMAIN"),
    FlagSpec("common-name", "str", "Common name of the CA (default: generated).", "NAME"),
    FlagSpec("name-constraint", "bool", "Limit the CA to the domain, localhost and "
             "-additional-name-constraint names."),
    FlagSpec("additional-name-constraint", "list", "Another DNS name the CA may sign "
             "(repeatable).", "NAME"),
)
CERT_FLAGS = (
    FlagSpec("server", "bool", "Create a server (agent) certificate."),
    FlagSpec("client", "bool", "Create a client certificate."),
    FlagSpec("cli", "bool", "Create a certificate for the CLI (client auth only)."),
    FlagSpec("ca", "str", "CA certificate (default consul-agent-ca.pem).", "PATH"),
    FlagSpec("key", "str", "CA key (default consul-agent-ca-key.pem).", "PATH"),
    FlagSpec("days", "str", "Days the certificate is valid (default 365).", "N"),
    FlagSpec("dc", "str", "Datacenter (default dc1).", "DC"),
    FlagSpec("domain", "str", "Domain of the cluster (default consul).", "DOMAIN"),
    FlagSpec("node", "str", "Node name: the server certificate also names "
             "<node>.server.<dc>.<domain>.", "NAME"),
    FlagSpec("additional-dnsname", "list", "Another DNS name (repeatable).", "NAME"),
    FlagSpec("additional-ipaddress", "list", "Another IP address (repeatable).", "IP"),
)
USAGE = ("Usage: rumor tls ca create [options]\n"
         "       rumor tls cert create -server|-client|-cli [options]\n")


def _days(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 36500:
        raise FlagError(f"-days: must be a whole number of days from 1 to 36500, got {text!r}")
    return int(text)


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    print(f"==> Saved {path}")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _serial() -> int:
    return secrets.randbits(127) | 1


def create_ca(args: Sequence[str]) -> int:
    f = parse_flags(CA_FLAGS, args)
    if f.args:
        raise FlagError("Too many command line arguments.")
    domain = f.get_str("domain") or "consul"
    days = _days(f.get_str("days"), 1825)
    cert_path, key_path = Path(f"{domain}-agent-ca.pem"), Path(f"{domain}-agent-ca-key.pem")
    for p in (cert_path, key_path):
        if p.exists():
            print(f"==> CA file {p} already exists", file=sys.stderr)
            return 1
    key = ec.generate_private_key(ec.SECP256R1())
    serial = _serial()
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME,
                           f.get_str("common-name") or f"Rumor Agent CA {serial % 10**9}"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rumor"),
    ])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(ski, critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                   ski), critical=False))
    if f.get_bool("name-constraint"):
        allowed = [domain, "localhost", *f.get_list("additional-name-constraint")]
        builder = builder.add_extension(x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(n) for n in allowed], excluded_subtrees=None),
            critical=True)
    cert = builder.sign(key, hashes.SHA256())
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(key_path, _key_pem(key), private=True)
    return 0


def _load_ca(cert_path: str, key_path: str) -> tuple[x509.Certificate,
                                                      ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError) as exc:
        raise FlagError(f"-ca: cannot load the CA certificate {cert_path}: {exc}") from None
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise FlagError(f"-key: cannot load the CA key {key_path}: {exc}") from None
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if not isinstance(key, ec.EllipticCurvePrivateKey) or \
            key.public_key().public_bytes(*der) != cert.public_key().public_bytes(*der):
        raise FlagError(f"-key: {key_path} is not the key of {cert_path}")
    return cert, key


def create_cert(args: Sequence[str]) -> int:
    f = parse_flags(CERT_FLAGS, args)
    if f.args:
        raise FlagError("Too many command line arguments.")
    kinds = [k for k in ("server", "client", "cli") if f.get_bool(k)]
    if len(kinds) != 1:
        raise FlagError("Please provide exactly one of -server, -client or -cli")
    kind = kinds[0]
    domain, dc = f.get_str("domain") or "consul", f.get_str("dc") or "dc1"
    days = _days(f.get_str("days"), 365)
    ca_path = f.get_str("ca") or f"{domain}-agent-ca.pem"
    ca_key_path = f.get_str("key") or f"{domain}-agent-ca-key.pem"
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in f.get_list("additional-ipaddress"):
        try:
            ips.append(ipaddress.ip_address(text))
        except ValueError:
            raise FlagError(f"-additional-ipaddress: not an IP address: {text!r}") from None
    ca_cert, ca_key = _load_ca(ca_path, ca_key_path)
    role = {"server": "server", "client": "client", "cli": "cli.client"}[kind]
    common = f"{role}.{dc}.{domain}"
    dns = [common, "localhost"]
    if kind == "server" and f.get_str("node"):
        dns.insert(0, f"{f.get_str('node')}.server.{dc}.{domain}")
    dns += f.get_list("additional-dnsname")
    if kind != "cli":
        ips.insert(0, ipaddress.ip_address("127.0.0.1"))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind != "cli":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    label = "cli" if kind == "cli" else kind
    n = 0
    while Path(f"{dc}-{label}-{domain}-{n}.pem").exists() or \
            Path(f"{dc}-{label}-{domain}-{n}-key.pem").exists():
        n += 1
    cert_path = Path(f"{dc}-{label}-{domain}-{n}.pem")
    key_path = Path(f"{dc}-{label}-{domain}-{n}-key.pem")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ip) for ip in ips]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(_serial())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    print(f"==> Using {ca_path} and {ca_key_path}")
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(key_path, _key_pem(key), private=True)
    return 0


def run_tls_command(args: Sequence[str]) -> int:
    """`rumor tls <ca|cert> create [flags]` (args after `tls`)."""
    commands = {("ca", "create"): (create_ca, CA_FLAGS),
                ("cert", "create"): (create_cert, CERT_FLAGS)}
    entry = commands.get(tuple(args[:2]))  # type: ignore[arg-type]
    if entry is None:
        print(USAGE, file=sys.stderr)
        return 1
    run, specs = entry
    try:
        return run(args[2:])
    except HelpRequested:
        print(f"{USAGE}\nOptions of 'rumor tls {args[0]} create':\n\n{flags_usage(specs)}")
        return 0
    except FlagError as exc:
        print(f"==> {exc}", file=sys.stderr)
        return 1
