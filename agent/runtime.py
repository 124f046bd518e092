"""``rumor agent``: start the gossip node and the HTTP API, join, run until told to stop."""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial

import trio

from agent.agent import VERSION, Agent, JoinError
from agent.api import build_router
from agent.config import AgentConfig
from agent.http.server import Limits, serve_http
from agent.logs import setup_logging
from gossip.transport import BindError

log = logging.getLogger("rumor.agent")


def run_agent(config: AgentConfig) -> int:
    """Run until SIGINT/SIGTERM or ``PUT /v1/agent/leave``; returns the exit status."""
    hub = setup_logging(config.log_level)
    try:
        return trio.run(_main, config, hub)
    except KeyboardInterrupt:
        return 1


def _fatal(message: str) -> int:
    print(f"==> Error starting agent: {message}", file=sys.stderr)
    return 1


async def _main(config: AgentConfig, hub: object) -> int:
    from agent.logs import MonitorHub
    assert isinstance(hub, MonitorHub)
    agent = Agent(config)
    async with trio.open_nursery() as nursery:
        try:
            await agent.start(nursery)
        except (BindError, OSError) as exc:
            nursery.cancel_scope.cancel()
            return _fatal(str(exc))
        router = build_router(agent, hub)
        limits = Limits(max_body_bytes=max(config.event_size_limit, 64 * 1024))
        try:
            http_port = await nursery.start(
                partial(serve_http, router, config.client_addr, config.http_port,
                        limits=limits))
        except OSError as exc:
            nursery.cancel_scope.cancel()
            return _fatal(str(exc))
        adv = agent.node.serf.ml.local
        ui = f"http://{config.client_addr}:{http_port}/ui/" if config.ui else "off"
        print("==> rumor agent running!", file=sys.stderr)
        print(f"         Version: {VERSION}\n       Node name: {agent.node_name}\n"
              f"      Datacenter: {config.datacenter}\n"
              f"     Client addr: http://{config.client_addr}:{http_port}\n"
              f"          Web UI: {ui}\n"
              f"    Cluster addr: {adv.addr}:{adv.port} (LAN: {config.serf_lan_port})\n"
              f"       Encrypted: {config.encrypt is not None}\n", file=sys.stderr, flush=True)
        if config.start_join:
            try:
                await agent.join(list(config.start_join))
            except JoinError as exc:
                nursery.cancel_scope.cancel()
                return _fatal(str(exc))
        if config.retry_join:
            nursery.start_soon(agent.retry_join)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async def on_signal() -> None:
                async for sig in signals:
                    log.info("agent: caught signal %s", signal.Signals(sig).name)
                    if config.leave_on_terminate:
                        with trio.move_on_after(10):
                            await agent.leave()
                    agent.shutdown.set()
                    return
            nursery.start_soon(on_signal)
            await agent.shutdown.wait()
        log.info("agent: shutdown complete")
        agent.store.close()
        agent.bus.close()
        nursery.cancel_scope.cancel()
    return 0 if agent.fatal is None else _fatal(agent.fatal)
