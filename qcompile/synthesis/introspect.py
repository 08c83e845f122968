"""What data-free synthesis needs from a classifier, read from its traced graph (no user hooks).

Two facts, both found by walking the ``torch.fx`` graph of the *unfolded* float model:

1. every BatchNorm call (its module and running statistics): the synthesis matches the statistics of
   its *input* against them, so they must be read before any BatchNorm folding;
2. the classifier: the Linear (or 1×1 Conv) whose result reaches the graph output through ops without
   weights (flatten, reshape, identity, dropout). Its weight rows give the data-free class similarity.

A model without BatchNorm, or whose output is not produced by such a layer, cannot be synthesised
from; :func:`model_parts` says so with a fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from qcompile.errors import ConfigError

#: ops a classifier's output may pass through on its way to the graph output
PASS_THROUGH_MODULES = (nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten)
PASS_THROUGH_CALLS = {"flatten", "view", "reshape", "squeeze", "contiguous", "float"}


@dataclass(frozen=True)
class ModelParts:
    """The BatchNorm layers (graph order, qualified names) and the classifier of a traced model."""

    batchnorms: tuple[tuple[str, nn.modules.batchnorm._BatchNorm], ...]
    classifier: str
    classifier_weight: torch.Tensor  # (classes, features), detached

    @property
    def classes(self) -> int:
        return int(self.classifier_weight.shape[0])


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def find_batchnorms(gm: fx.GraphModule) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """Every BatchNorm module called in the graph, in execution order (each once)."""
    seen: dict[str, nn.modules.batchnorm._BatchNorm] = {}
    for node in gm.graph.nodes:
        module = _module(gm, node)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and node.target not in seen:
            seen[str(node.target)] = module
    return list(seen.items())


def _passes_through(gm: fx.GraphModule, node: fx.Node) -> bool:
    if isinstance(_module(gm, node), PASS_THROUGH_MODULES):
        return True
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return node.op in ("call_method", "call_function") and name in PASS_THROUGH_CALLS


def find_classifier(gm: fx.GraphModule) -> tuple[str, torch.Tensor]:
    """(name, weight rows) of the layer producing the model's single output."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    node = output.args[0]
    if not isinstance(node, fx.Node):
        raise ConfigError("the model returns several outputs; synthesis needs one tensor of class scores",
                          hint="synthesise from a classifier whose forward returns its logits only")
    while True:
        module = _module(gm, node)
        if isinstance(module, nn.Linear):
            return str(node.target), module.weight.detach().clone()
        if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
            return str(node.target), module.weight.detach().flatten(1).clone()
        if not _passes_through(gm, node) or not node.args or not isinstance(node.args[0], fx.Node):
            what = f"{node.op} {node.target}"
            raise ConfigError(f"cannot find the classifier layer: the model's output comes from {what}, "
                              "not from a Linear (or 1×1 Conv) layer",
                              hint="synthesis reads class similarity from the last Linear layer's weight rows: end "
                                   "the model with nn.Linear(features, classes) (flatten/reshape after it are fine)")
        node = node.args[0]


def model_parts(gm: fx.GraphModule) -> ModelParts:
    """The BatchNorms and classifier of ``gm``, or a :class:`ConfigError` saying what is missing."""
    batchnorms = find_batchnorms(gm)
    if not batchnorms:
        raise ConfigError("the model has no BatchNorm layer, so there are no statistics to synthesise images from",
                          hint="data-free synthesis needs a model trained with BatchNorm; otherwise pass real data (--data)")
    untracked = [name for name, bn in batchnorms if bn.running_mean is None or bn.running_var is None]
    if untracked:
        raise ConfigError(f"BatchNorm layer(s) {', '.join(untracked)} keep no running statistics "
                          "(track_running_stats=False)", hint="synthesise from a model whose BatchNorms track statistics")
    name, weight = find_classifier(gm)
    if weight.shape[0] < 2:
        raise ConfigError(f"the classifier {name} has {weight.shape[0]} output; synthesis needs at least 2 classes",
                          hint="synthesise from a classifier with one output per class")
    return ModelParts(tuple(batchnorms), name, weight)
