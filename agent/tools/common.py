"""What every client command shares: the HTTP flags, the client they configure (flags, then
``$RUMOR_*``, then ``$CONSUL_*``), error output and SIGTERM handling."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from agent.client import DEFAULT_ADDR, Client, ClientError, Response
from agent.flags import FlagSpec, ParsedFlags

Env = Mapping[str, str]


HTTP_FLAGS = (
    FlagSpec("http-addr", "str", "Address of the rumor agent's HTTP API, host:port or "
             "http://host:port. Default: $RUMOR_HTTP_ADDR, $CONSUL_HTTP_ADDR or "
             f"{DEFAULT_ADDR}.", "ADDR"),
    FlagSpec("token", "str", "ACL token sent as X-Consul-Token. Default: $RUMOR_HTTP_TOKEN "
             "or $CONSUL_HTTP_TOKEN.", "TOKEN"),
    FlagSpec("token-file", "str", "File holding the ACL token (used when -token is not "
             "given). Default: $RUMOR_HTTP_TOKEN_FILE or $CONSUL_HTTP_TOKEN_FILE.", "PATH"),
    FlagSpec("ca-file", "str", "CA file to verify the agent's HTTPS certificate. Default: "
             "$RUMOR_CACERT or $CONSUL_CACERT, else the system CAs.", "PATH"),
    FlagSpec("client-cert", "str", "Client certificate for HTTPS (with -client-key). Default: "
             "$RUMOR_CLIENT_CERT or $CONSUL_CLIENT_CERT.", "PATH"),
    FlagSpec("client-key", "str", "Client key for HTTPS. Default: $RUMOR_CLIENT_KEY or "
             "$CONSUL_CLIENT_KEY.", "PATH"),
)


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def setting(flags: ParsedFlags, env: Env, flag: str, var: str) -> str | None:
    """A client setting: the flag, else $RUMOR_<var>, else $CONSUL_<var>."""
    return flags.get_str(flag) or env.get("RUMOR_" + var) or env.get("CONSUL_" + var) or None


def client_for(flags: ParsedFlags, env: Env, timeout: float = 10.0) -> Client:
    addr = setting(flags, env, "http-addr", "HTTP_ADDR") or DEFAULT_ADDR
    # flags before the environment; within each, the token before the token file
    token, token_file = flags.get_str("token") or None, None
    if token is None:
        token_file = flags.get_str("token-file") or None
    if token is None and token_file is None:
        token = env.get("RUMOR_HTTP_TOKEN") or env.get("CONSUL_HTTP_TOKEN") or None
        if token is None:
            token_file = (env.get("RUMOR_HTTP_TOKEN_FILE") or env.get("CONSUL_HTTP_TOKEN_FILE")
                          or None)
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip() or None
        except (OSError, UnicodeDecodeError) as e:
            raise ClientError(f"Error reading token file {token_file}: {e}") from None
    ssl_on = (env.get("RUMOR_HTTP_SSL") or env.get("CONSUL_HTTP_SSL") or "").lower()
    if "://" not in addr and ssl_on in ("1", "t", "true"):  # Consul's CONSUL_HTTP_SSL
        addr = "https://" + addr
    context = None
    if addr.lower().startswith("https://"):
        from agent.tls import TLSConfigError, client_context

        verify = (env.get("RUMOR_HTTP_SSL_VERIFY") or env.get("CONSUL_HTTP_SSL_VERIFY")
                  or "true").lower() not in ("0", "f", "false")
        try:
            context = client_context(setting(flags, env, "ca-file", "CACERT"),
                                     setting(flags, env, "client-cert", "CLIENT_CERT"),
                                     setting(flags, env, "client-key", "CLIENT_KEY"), verify)
        except TLSConfigError as e:
            raise ClientError(f"Error setting up TLS: {e}") from None
    return Client(addr, token, timeout, tls=context)


def status_text(resp: Response) -> str:
    return f"{resp.status} ({resp.text()})"


def json_body(resp: Response) -> Any:
    try:
        return json.loads(resp.body)
    except ValueError as e:
        raise ClientError(f"invalid JSON from agent: {e}") from None


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while a long-running client command runs."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
