"""``rumor agent``: start the gossip node and the HTTP(S) API, join, run until told to stop.

SIGHUP (like ``PUT /v1/agent/reload``) re-reads the configuration: ACLs, log level, TLS files.
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys
from collections.abc import Callable
from functools import partial

import trio

from agent.agent import Agent
from agent.api import build_router
from agent.config import AgentConfig
from agent.datadir import DataFileError
from agent.errors import JoinError, ReloadError
from agent.hardening import plaintext_gossip_warning, raise_open_file_limit
from agent.http.server import Limits, serve_http
from agent.keyring import KeyringFileError
from agent.logs import set_console_level, setup_logging
from agent.version import VERSION
from gossip import BindError

log = logging.getLogger("rumor.agent")


def run_agent(config: AgentConfig,
              reloader: Callable[[], AgentConfig] | None = None) -> int:
    """Run until SIGINT/SIGTERM or ``PUT /v1/agent/leave``; returns the exit status.
    ``reloader`` re-reads the configuration for SIGHUP and ``rumor reload``."""
    hub = setup_logging(config.log_level)
    raise_open_file_limit()
    try:
        return trio.run(_main, config, hub, reloader)
    except KeyboardInterrupt:
        return 1


def _fatal(message: str) -> int:
    print(f"==> Error starting agent: {message}", file=sys.stderr)
    return 1


class _TLS:
    """The HTTPS listener's current context; a reload swaps in a new one."""

    def __init__(self, config: AgentConfig) -> None:
        self.context = self.load(config)

    @staticmethod
    def load(config: AgentConfig) -> ssl.SSLContext:
        from agent.tls import server_context  # cryptography (~10 MB RSS): only with TLS

        return server_context(config.tls_ca_file, config.tls_cert_file, config.tls_key_file,
                              config.tls_verify_incoming)

    def hook(self, new: AgentConfig) -> Callable[[], None]:
        context = self.load(new)

        def commit() -> None:
            self.context = context
        return commit

    def __call__(self) -> ssl.SSLContext:
        return self.context


def _release_startup_memory() -> None:
    """Hand the heap that imports and start-up freed back to the OS (glibc: ~1 MB of RSS)."""
    try:
        import ctypes  # already loaded by trio

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


async def _main(config: AgentConfig, hub: object,
                reloader: Callable[[], AgentConfig] | None = None) -> int:
    from agent.logs import MonitorHub
    assert isinstance(hub, MonitorHub)
    try:
        agent = Agent(config)
    except DataFileError as exc:
        return _fatal(str(exc))
    except KeyringFileError as exc:
        return _fatal(str(exc))
    agent.reloader = reloader
    agent.reload_hooks.append(lambda new: partial(set_console_level, new.log_level))
    async with trio.open_nursery() as nursery:
        try:
            await agent.start(nursery)
        except (BindError, OSError) as exc:
            nursery.cancel_scope.cancel()
            return _fatal(str(exc))
        router = build_router(agent, hub)
        limits = Limits(max_body_bytes=max(config.event_size_limit, 64 * 1024),
                        max_conns_per_client=config.http_max_conns_per_client)
        addrs = []
        try:
            if config.http_port != -1:
                port = await nursery.start(partial(serve_http, router, config.client_addr,
                                                   config.http_port, limits=limits))
                addrs.append(f"http://{config.client_addr}:{port}")
            if config.https_port != -1:
                tls = _TLS(config)
                agent.reload_hooks.append(tls.hook)
                port = await nursery.start(partial(serve_http, router, config.client_addr,
                                                   config.https_port, limits=limits, tls=tls))
                addrs.append(f"https://{config.client_addr}:{port}")
        except (OSError, ValueError) as exc:  # ValueError: TLS files changed since validation
            nursery.cancel_scope.cancel()
            return _fatal(str(exc))
        _release_startup_memory()
        adv_host, adv_port = agent.node.local_address
        ui = f"{addrs[0]}/ui/" if config.ui and addrs else "off"
        print("==> rumor agent running!", file=sys.stderr)
        print(f"         Version: {VERSION}\n       Node name: {agent.node_name}\n"
              f"      Datacenter: {config.datacenter}\n"
              f"     Client addr: {', '.join(addrs)}\n"
              f"          Web UI: {ui}\n"
              f"    Cluster addr: {adv_host}:{adv_port} (LAN: {config.serf_lan_port})\n"
              f"       Encrypted: {agent.node.keyring is not None}\n"
              f"            ACLs: {config.acl_enabled}\n", file=sys.stderr, flush=True)
        warning = plaintext_gossip_warning(config.bind_addr, adv_host,
                                           agent.node.keyring is not None)
        if warning:
            log.warning("%s", warning)
        if config.start_join:
            try:
                await agent.join(list(config.start_join))
            except JoinError as exc:
                nursery.cancel_scope.cancel()
                return _fatal(str(exc))
        if config.retry_join:
            nursery.start_soon(agent.retry_join)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async def on_signal() -> None:
                async for sig in signals:
                    log.info("agent: caught signal %s", signal.Signals(sig).name)
                    if sig == signal.SIGHUP:
                        try:
                            agent.reload()
                        except ReloadError as exc:
                            log.error("agent: reload failed, nothing changed: %s", exc)
                        continue
                    if config.leave_on_terminate:
                        with trio.move_on_after(10):
                            await agent.leave()
                    agent.shutdown.set()
                    return
            nursery.start_soon(on_signal)
            await agent.shutdown.wait()
        log.info("agent: shutdown complete")
        agent.close()
        nursery.cancel_scope.cancel()
    return 0 if agent.fatal is None else _fatal(agent.fatal)
