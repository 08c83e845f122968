"""InsertBottleneck: put a codec's quantization node at the latent an autoencoder marks.

Rules, in order:

1. the latent is the output of the one :class:`~qcompile.codec.Bottleneck` marker in the graph
   (traced as a leaf), or — with ``node=NAME`` — the fx node of that name (``channels`` then says how
   many latent channels it has); none, or more than one marker, is a ConfigError;
2. a ``call_module`` node ``codec_bottleneck`` (a :class:`~qcompile.codec.QuantizedBottleneck` made by
   ``make(channels)``) takes the latent y and yields ``(ŷ, likelihoods)``; every former user of the
   latent now reads ŷ, and the marker module is removed;
3. the graph's output becomes ``(original output, likelihoods)``: the reconstruction and what the
   rate term needs, as a codec task expects.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

from torch import fx, nn

from qcompile.codec.bottleneck import Bottleneck
from qcompile.errors import ConfigError
from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import module_of

TARGET = "codec_bottleneck"


class InsertBottleneck(GraphPass):
    """See the module docstring. ``make(channels) -> nn.Module`` builds the quantization node."""

    def __init__(self, make: Callable[[int], nn.Module], node: str | None = None, channels: int | None = None):
        super().__init__()
        self.make, self.node, self.channels = make, node, channels

    def run(self, gm: fx.GraphModule) -> tuple[bool, dict[str, Any]]:
        if hasattr(gm, TARGET):
            raise ConfigError("this model already has a codec bottleneck node",
                              hint="insert the bottleneck once, on the model with the marker")
        latent, channels, marker = self._find(gm)
        gm.add_submodule(TARGET, self.make(channels))
        with gm.graph.inserting_after(latent):
            quantized = gm.graph.call_module(TARGET, (latent.args[0] if marker else latent,))
        with gm.graph.inserting_after(quantized):
            y_hat = gm.graph.call_function(operator.getitem, (quantized, 0))
            likelihoods = gm.graph.call_function(operator.getitem, (y_hat.args[0], 1))
        latent.replace_all_uses_with(y_hat, delete_user_cb=lambda user: user is not quantized)
        if marker:
            target = latent.target
            gm.graph.erase_node(latent)
            gm.delete_submodule(target)
        output = next(n for n in gm.graph.nodes if n.op == "output")
        output.args = ((output.args[0], likelihoods),)
        return True, {"latent": latent.name if not marker else str(latent.target), "channels": channels,
                      "node": TARGET, "quantization": repr(gm.get_submodule(TARGET))}

    def _find(self, gm: fx.GraphModule) -> tuple[fx.Node, int, bool]:
        """(latent node, channels, whether it is a marker to remove)."""
        if self.node is not None:
            named = [n for n in gm.graph.nodes if n.name == self.node]
            if not named:
                names = ", ".join(n.name for n in gm.graph.nodes if n.op not in ("placeholder", "output"))
                raise ConfigError(f"the model has no fx node named {self.node!r}", hint=f"name one of: {names}")
            node = named[0]
            module = module_of(gm, node)
            if isinstance(module, Bottleneck):
                return node, module.channels, True
            if self.channels is None:
                raise ConfigError(f"the latent at node {self.node!r} needs its channel count",
                                  hint="pass channels=M (the number of latent channels) with node=...")
            return node, int(self.channels), False
        markers = [n for n in gm.graph.nodes if isinstance(module_of(gm, n), Bottleneck)]
        if len(markers) != 1:
            found = "no Bottleneck marker" if not markers else f"{len(markers)} Bottleneck markers"
            raise ConfigError(f"the model has {found}; a codec needs exactly one latent",
                              hint="put y = qcompile.codec.Bottleneck(M)(y) between the analysis and the synthesis "
                                   "transform once, or name the latent's fx node (node=NAME, channels=M)")
        return markers[0], gm.get_submodule(markers[0].target).channels, True
