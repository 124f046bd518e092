"""rumor's gossip library: Serf 0.9.4 / memberlist wire-compatible membership, events and
queries, with no knowledge of HTTP or Consul.

Three tiers, each importing only the ones above it (one exception: :mod:`gossip.wire` reads
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
