"""SWIM membership core (memberlist semantics), sans-IO.

The core is plain state.  The shell (or the simulator) calls:

* ``receive_packet(now, src, data)`` for every datagram (raises ``DecodeError`` on garbage),
* ``handle_stream(now, src, msg)`` for every complete inbound TCP request (returns the reply),
* ``stream_reply(now, token, msg_or_None)`` when an exchange it asked for completes or fails,
* ``tick(now)`` whenever ``now >= next_deadline()``,

and then drains ``take_effects()``: datagrams to send and TCP exchanges to run.  Time and
randomness come in as ``now`` and the injected ``random.Random``; nothing here sleeps, reads a
clock or touches a socket.

What it implements: randomized round-robin probing with direct ping, indirect ping-req via k
members (with nacks), TCP fallback ping; suspicion with Lifeguard confirmations and local
health awareness; incarnation refutation; dead / left; reaping; piggybacked broadcasts;
push-pull anti-entropy and join.  Transition rules live in :mod:`gossip.state`.

One class, :class:`Memberlist`, over one shared state (the member table and what is derived
from it), written in layers, one module each, every layer using only those below it:

* :mod:`.member`: the member record, the :class:`Delegate` hooks, the counters;
* :mod:`.base`: the state and its constructor;
* :mod:`.output`: gossip rounds, piggybacking, the datagram budget, framing;
* :mod:`.changes`: alive / suspect / dead / left, suspicion timers, refutes, reaping;
* :mod:`.probing` and :mod:`.pushpull`: failure detection, and anti-entropy and join;
* :mod:`.core`: :class:`Memberlist` itself: timers, packet dispatch.

The layers are classes (each a subclass of the one below) rather than collaborator objects
because every one of them reads and invalidates the same member table and caches on the hot
path; splitting that state between objects would add indirection where the simulator spends
its time, and hide which code may change which field.
"""

from gossip.membership.core import Memberlist
from gossip.membership.member import (
    MAX_INCARNATION,
    META_MAX_SIZE,
    Delegate,
    Member,
    Metrics,
    WireCipher,
)
from gossip.membership.pushpull import CATCH_UP_MAX

__all__ = ["CATCH_UP_MAX", "MAX_INCARNATION", "META_MAX_SIZE", "Delegate", "Member",
           "Memberlist", "Metrics", "WireCipher"]
