"""gossip: Serf 0.9.4 / memberlist 0.2.2 spoken in Python (a sans-IO core and a trio shell).

Public interface: the names in ``__all__`` below, imported as ``from gossip import X``.  The
agent uses nothing else (``tests/agent/test_gossip_interface.py`` checks its imports and the
attributes it touches); every other module and attribute is internal to this package and may
change with it.

* :class:`GossipNode` runs one member: ``run``, ``join``, ``leave``, ``force_leave``,
  ``user_event``, ``members``, ``query``, ``key_operation``, ``keyring_keys``, ``clocks`` /
  ``restore_clocks``, event history (``witness_event_time``, ``ignore_events_before``,
  ``remember_events``), ``local_address``, ``port``, ``running``, and one metrics snapshot,
  ``stats()`` (a frozen :class:`NodeStats`).
* Configuration: :class:`GossipConfig` (memberlist timing profiles), :class:`SerfConfig`,
  :data:`Addr` and :func:`parse_join_address` (the one parser of join addresses).
* What ``on_delivery`` hands up (:data:`Delivery`): :class:`UserEvent`, :class:`MemberEvent`
  (members are :class:`SerfMember` with a :class:`MemberStatus`) and :class:`NameConflict`.
* Keys: :class:`Keyring`, :data:`KEY_SIZES`, :func:`decode_b64_key` (the one base64 key
  decoder), :func:`b64`, :class:`KeyResponse` (a cluster key operation's answer).
* Limits and errors: :data:`USER_EVENT_SIZE_HARD_LIMIT` (9,216 bytes of name + payload, the
  one owner of that cap), :class:`SerfError`, :class:`ClockExhausted`, :class:`BindError`;
  :class:`Clocks` are the Lamport times a snapshot keeps.

Layout. Three tiers, each importing only the ones above it (one exception: :mod:`gossip.wire` reads
the member-state numbers, :class:`gossip.state.State`):

* **codec** (bytes in, values out; no state, no clock): :mod:`gossip.wire` (memberlist's
  messages, UDP packets and TCP streams, one module per family), :mod:`gossip.serf.codec`
  (Serf messages and tags), :mod:`gossip.query_wire`, :mod:`gossip.lzw`,
  :mod:`gossip.crypto` (the AES-GCM :class:`~gossip.crypto.Keyring`);
* **sans-IO core** (plain state driven by ``receive_packet`` / ``handle_stream`` /
  ``tick(now)``, returning effects; time and randomness injected, so the simulator in
  ``tests/sim`` runs it): :mod:`gossip.membership` (SWIM), :mod:`gossip.serf` (the Serf
  layer), :mod:`gossip.queries`, :mod:`gossip.keyops`, and their parts :mod:`gossip.state`,
  :mod:`gossip.suspicion`, :mod:`gossip.awareness`, :mod:`gossip.broadcast`,
  :mod:`gossip.admission`, :mod:`gossip.lamport`;
* **trio shell** (the only code with sockets and real time): :mod:`gossip.transport`,
  :mod:`gossip.node`.

:mod:`gossip.config` (the tunables and the effect types) and :mod:`gossip.errors` are shared
by all three.

The folders show the big subjects rather than the tiers: ``wire/``, ``membership/`` and
``serf/`` are packages whose modules are each one part a reader can hold at once (the
package docstring lists them), and whose package namespace keeps the names the rest of
rumor imports.  The small modules stay flat where they were.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gossip.config import USER_EVENT_SIZE_HARD_LIMIT, Addr, GossipConfig, parse_join_address
    from gossip.crypto import KEY_SIZES, Keyring, b64, decode_b64_key
    from gossip.keyops import KeyResponse
    from gossip.node import Clocks, GossipNode, NodeStats
    from gossip.serf import (
        ClockExhausted,
        Delivery,
        MemberEvent,
        MemberStatus,
        NameConflict,
        SerfConfig,
        SerfError,
        SerfMember,
        UserEvent,
    )
    from gossip.transport import BindError

# where each public name lives: imported on first use, so ``from gossip import KEY_SIZES``
# in the client tools does not load trio and msgpack (tests/agent/test_cli.py checks)
_HOME = {
    "Addr": "gossip.config", "GossipConfig": "gossip.config",
    "parse_join_address": "gossip.config",
    "KEY_SIZES": "gossip.crypto", "Keyring": "gossip.crypto", "b64": "gossip.crypto",
    "decode_b64_key": "gossip.crypto",
    "KeyResponse": "gossip.keyops",
    "Clocks": "gossip.node", "GossipNode": "gossip.node", "NodeStats": "gossip.node",
    "USER_EVENT_SIZE_HARD_LIMIT": "gossip.config", "ClockExhausted": "gossip.serf",
    "Delivery": "gossip.serf", "MemberEvent": "gossip.serf", "MemberStatus": "gossip.serf",
    "NameConflict": "gossip.serf", "SerfConfig": "gossip.serf", "SerfError": "gossip.serf",
    "SerfMember": "gossip.serf", "UserEvent": "gossip.serf",
    "BindError": "gossip.transport",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'gossip' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "KEY_SIZES",
    "USER_EVENT_SIZE_HARD_LIMIT",
    "Addr",
    "BindError",
    "ClockExhausted",
    "Clocks",
    "Delivery",
    "GossipConfig",
    "GossipNode",
    "KeyResponse",
    "Keyring",
    "MemberEvent",
    "MemberStatus",
    "NameConflict",
    "NodeStats",
    "SerfConfig",
    "SerfError",
    "SerfMember",
    "UserEvent",
    "b64",
    "decode_b64_key",
    "parse_join_address",
]
