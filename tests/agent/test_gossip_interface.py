"""The agent uses gossip/ only through its public interface (issue 12).

Parses every ``agent/**/*.py`` with :mod:`ast` and fails on:

* an import from gossip other than ``from gossip import <name in gossip.__all__>`` or
  ``import gossip`` (and then ``gossip.<name in __all__>``);
* an attribute that reaches into a gossip object: ``serf``, ``ml`` or ``core`` on anything,
  or ``_private`` on anything but ``self``/``cls`` unless an agent class defines that name
  itself (``self._x = ...`` or ``def _x``) or the receiver is a non-gossip module;
* on the agent's node (``<anything>.node`` or a local bound to one, or a ``GossipNode(...)``)
  any attribute that is not a public member of :class:`gossip.GossipNode`, found by
  introspecting a node instance, so the check follows the class without an allow-list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gossip
from gossip import GossipNode

ROOT = Path(__file__).resolve().parents[2]
REACH_IN = {"serf", "ml", "core"}


def node_members() -> set[str]:
    """Public attributes of a GossipNode: class members and those ``__init__`` sets."""
    node = GossipNode("probe", ("127.0.0.1", 0))
    return {n for n in dir(node) if not n.startswith("_")}


def agent_private_names(files: list[Path]) -> set[str]:
    """``_x`` names agent classes define themselves (their own internals, not gossip's)."""
    names: set[str] = set()
    for path in files:
        for n in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and \
                    isinstance(n.value, ast.Name) and n.value.id == "self":
                names.add(n.attr)
            elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(n.name)
    return {n for n in names if n.startswith("_")}


def _is_node_expr(expr: ast.expr, node_names: set[str]) -> bool:
    if isinstance(expr, ast.Attribute) and expr.attr == "node":
        return True
    if isinstance(expr, ast.Name) and expr.id in node_names:
        return True
    return isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and \
        expr.func.id == "GossipNode"


def _root_name(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute | ast.Call | ast.Subscript):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def violations(root: Path) -> list[str]:
    files = sorted((root / "agent").rglob("*.py"))
    public = set(gossip.__all__)
    members = node_members()
    own_private = agent_private_names(files)
    found: list[str] = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        where = str(path.relative_to(root))
        other_modules: set[str] = set()  # names bound by `import x` for a non-gossip x
        node_names: set[str] = set()  # locals bound to a node: `node = agent.node`
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.split(".")[0] == "gossip":
                        if a.name != "gossip":
                            found.append(f"{where}:{n.lineno}: import {a.name}")
                    else:
                        other_modules.add(a.asname or a.name.split(".")[0])
            elif isinstance(n, ast.ImportFrom) and n.module and \
                    n.module.split(".")[0] == "gossip":
                if n.module != "gossip":
                    found.append(f"{where}:{n.lineno}: from {n.module} import ...")
                for a in n.names:
                    if a.name not in public:
                        found.append(f"{where}:{n.lineno}: from {n.module} import {a.name} "
                                     "(not in gossip.__all__)")
            elif isinstance(n, ast.Assign) and _is_node_expr(n.value, set()):
                node_names.update(t.id for t in n.targets if isinstance(t, ast.Name))
            elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and \
                    "GossipNode" in ast.unparse(n.annotation):
                node_names.add(n.target.id)
        for n in ast.walk(tree):
            if not isinstance(n, ast.Attribute):
                continue
            text = f"{where}:{n.lineno}: {ast.unparse(n)}"
            recv = n.value
            if isinstance(recv, ast.Name) and recv.id == "gossip" and n.attr not in public:
                found.append(f"{text} (not in gossip.__all__)")
            if n.attr in REACH_IN:
                found.append(f"{text} (gossip internals)")
            elif n.attr.startswith("_") and not n.attr.startswith("__") and \
                    not (isinstance(recv, ast.Name) and recv.id in ("self", "cls")) and \
                    n.attr not in own_private and _root_name(recv) not in other_modules:
                found.append(f"{text} (private attribute of another object)")
            if _is_node_expr(recv, node_names) and n.attr not in members:
                found.append(f"{text} (not a public member of GossipNode)")
    return sorted(found, key=lambda f: (f.split(":")[0], int(f.split(":")[1]), f))


def test_agent_uses_only_the_public_gossip_interface() -> None:
    assert violations(ROOT) == []


def test_the_public_interface_is_what_gossip_exports() -> None:
    assert sorted(gossip.__all__) == sorted(set(gossip.__all__))
    for name in gossip.__all__:
        assert getattr(gossip, name) is not None
    assert "serf" not in node_members() and "stats" in node_members()


def test_the_check_finds_reaching_in(tmp_path: Path) -> None:
    """The checker itself: each kind of reach-in is reported."""
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "bad.py").write_text(
        "import gossip.serf\n"
        "from gossip.node import GossipNode\n"
        "from gossip import Memberlist\n"
        "def f(agent):\n"
        "    node = agent.node\n"
        "    a = node.serf.metrics\n"
        "    b = agent.node.stream_limit\n"
        "    c = agent.node._serf\n"
        "    d = node.stats().packets_in\n"
        "    return gossip.wire\n")
    found = [f.split(": ", 1)[1] for f in violations(tmp_path)]
    assert found == [
        "import gossip.serf",
        "from gossip.node import ...",
        "from gossip import Memberlist (not in gossip.__all__)",
        "node.serf (gossip internals)",
        "node.serf (not a public member of GossipNode)",
        "agent.node.stream_limit (not a public member of GossipNode)",
        "agent.node._serf (not a public member of GossipNode)",
        "agent.node._serf (private attribute of another object)",
        "gossip.wire (not in gossip.__all__)",
    ]
