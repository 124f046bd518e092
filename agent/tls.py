"""TLS contexts for the HTTPS API: the agent's server side and the CLI's client side.

Owns loading the PEM files named by Consul's settings (`tls.defaults.ca_file`, `cert_file`,
`key_file`, `verify_incoming`; the CLI's `-ca-file`, `-client-cert`, `-client-key`) into
`ssl.SSLContext`s, and the checks that make a bad file stop the agent with a message naming
the field: unreadable, not PEM, a key that does not belong to the certificate.
"""

from __future__ import annotations

import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class TLSConfigError(ValueError):
    """A TLS file or setting that cannot be used; the message names the field."""


def _read(path: str, field: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise TLSConfigError(f"{field}: cannot read {path}: {exc.strerror or exc}") from None


def _check_cert(path: str, field: str) -> None:
    data = _read(path, field)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TLSConfigError(f"{field}: {path} holds no PEM certificate")


def _check_key(path: str, field: str) -> None:
    data = _read(path, field)
    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise TLSConfigError(f"{field}: {path} is not an unencrypted PEM private key "
                             f"({exc})") from None


def _load_pair(ctx: ssl.SSLContext, cert: str, key: str, prefix: str, cert_name: str,
               key_name: str) -> None:
    _check_cert(cert, prefix + cert_name)
    _check_key(key, prefix + key_name)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{prefix}{key_name}: {key} does not match the certificate in "
                             f"{cert} ({exc.reason or exc})") from None


def _load_ca(ctx: ssl.SSLContext, ca: str, field: str) -> None:
    _check_cert(ca, field)
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{field}: cannot load {ca}: {exc.reason or exc}") from None


def server_context(ca_file: str | None, cert_file: str | None, key_file: str | None,
                   verify_incoming: bool) -> ssl.SSLContext:
    """The HTTPS listener's context (TLS 1.2+, Consul's default minimum)."""
    prefix = "tls.defaults."
    if not cert_file or not key_file:
        missing = "cert_file" if not cert_file else "key_file"
        raise TLSConfigError(f"{prefix}{missing}: HTTPS (https_port) needs cert_file and "
                             "key_file")
    if verify_incoming and not ca_file:
        raise TLSConfigError(f"{prefix}ca_file: verify_incoming needs the CA that signs "
                             "client certificates")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_pair(ctx, cert_file, key_file, prefix, "cert_file", "key_file")
    if ca_file:
        _load_ca(ctx, ca_file, prefix + "ca_file")
    ctx.verify_mode = ssl.CERT_REQUIRED if verify_incoming else ssl.CERT_NONE
    return ctx


def client_context(ca_file: str | None, cert_file: str | None, key_file: str | None,
                   verify: bool = True) -> ssl.SSLContext:
    """The CLI's context: the system CAs unless `ca_file`; a client certificate if given."""
    ctx = ssl.create_default_context()
    if ca_file:
        _load_ca(ctx, ca_file, "-ca-file")
    if cert_file or key_file:
        if not cert_file or not key_file:
            raise TLSConfigError("-client-cert and -client-key must be given together")
        _load_pair(ctx, cert_file, key_file, "", "-client-cert", "-client-key")
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
