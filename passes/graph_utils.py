"""Small helpers shared by passes: module lookup and replacement by qualified name."""

from __future__ import annotations

from torch import fx, nn


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls, else None."""
    if node.op != "call_module":
        return None
    return gm.get_submodule(node.target)


def replace_submodule(gm: fx.GraphModule, qualname: str, new: nn.Module) -> None:
    """Swap the module at ``qualname``; the graph keeps calling the same target."""
    parent_name, _, attr = qualname.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, new)


def bypass_node(gm: fx.GraphModule, node: fx.Node, replacement: fx.Node) -> None:
    """Route every user of ``node`` to ``replacement`` and erase ``node``."""
    node.replace_all_uses_with(replacement)
    gm.graph.erase_node(node)
