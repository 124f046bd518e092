#!/usr/bin/env python3
"""Print a hash of what seeded simulations did (run by hand): equal before and after a
change means the change kept the gossip cores' behaviour, packet for packet.

Three 7-node clusters (5% loss) join, fire 40 events (some over the datagram limit, so sent
over TCP), split 3|4 for 20 s, fire one more and heal for 20 s; the hash covers every node's
member table, counters, clocks and delivered events.  Usage: ``.venv/bin/python
scripts/sim_fingerprint.py [out.json]`` from the repository root (the json helps to diff).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossip.serf import SerfConfig  # noqa: E402
from tests.sim.cluster import Link, SerfCluster  # noqa: E402


def run(seed: int) -> list[object]:
    c = SerfCluster(7, seed=seed, link=Link(loss=0.05), config=SerfConfig(event_size_limit=9216))
    c.join_all()
    c.run(5)
    for i in range(40):
        c.nodes[i % 7].user_event(c.sim.now, f"e{i}", b"x" * (i * 40))
        c.run(0.05)
    names = [x.name for x in c.nodes]
    c.partition(names[:3], names[3:])
    c.run(20)
    c.nodes[0].user_event(c.sim.now, "side0", b"y" * 2000)
    c.heal()
    c.run(20)
    out: list[object] = []
    for n in c.nodes:
        out.append((n.name, sorted((m.name, int(m.status), m.status_ltime)
                                   for m in n.members.values()),
                    dataclasses.asdict(n.metrics), dataclasses.asdict(n.ml.metrics),
                    n.clock.time(), n.event_clock.time(),
                    sorted((e.ltime, e.name) for e in c.user_events[n.name])))
    out.append(c.sim.now)
    return out


def main() -> None:
    out = [run(seed) for seed in (1, 2, 3)]
    text = json.dumps(out, sort_keys=True, default=str)
    print(hashlib.sha256(text.encode()).hexdigest())
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(out, sort_keys=True, default=str, indent=0))


if __name__ == "__main__":
    main()
