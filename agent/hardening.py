"""Start-up safeguards of ``rumor agent`` that are about the host, not the protocol.

* ``raise_open_file_limit``: Go programs raise the soft ``RLIMIT_NOFILE`` to the hard limit at
  start (Go 1.19+); a Python process keeps the soft limit (often 1024), so a few thousand idle
  HTTP or gossip connections would starve the agent of descriptors. The agent raises it the
  same way and logs what the limit is.
* ``plaintext_gossip_warning``: gossip without a key on an address other hosts can reach
  accepts members and events from anyone who can send it a packet; say so at start.
"""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger("rumor.agent")

UNLIMITED_NOFILE_CAP = 1 << 20  # used when the hard limit is "unlimited" (Linux's nr_open)


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft open-file limit to the hard one; returns (before, after) or None where
    the platform has no such limit. Never fails the start: a refusal is logged."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_NOFILE_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("agent: open-file limit stays %d: cannot raise it to %d: %s",
                        soft, target, exc)
            return soft, soft
        log.info("agent: open-file limit raised from %d to %d", soft, target)
        return soft, target
    log.info("agent: open-file limit is %s",
             "unlimited" if soft == resource.RLIM_INFINITY else soft)
    return soft, soft


def is_local_only(address: str) -> bool:
    """True for a loopback address (only this host can reach it)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def plaintext_gossip_warning(bind: str, advertise: str, encrypted: bool) -> str | None:
    """The warning to log when gossip runs unencrypted where other hosts can reach it."""
    if encrypted:
        return None
    exposed = [a for a in dict.fromkeys((bind, advertise)) if a and not is_local_only(a)]
    if not exposed:
        return None
    return (f"agent: gossip is NOT encrypted on {', '.join(exposed)}: anyone who can reach "
            "the gossip port can inject members and events; set -encrypt (rumor keygen) "
            "on every agent")
