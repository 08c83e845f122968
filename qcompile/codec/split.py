"""Cut a prepared codec (a GraphModule with the ``codec_bottleneck`` node) into its two deployable
halves: the encoder (image → v, the latent the runtime quantizes) and the decoder (ŷ → image).

The cut is made on the graph, so any autoencoder the user wrote splits the same way: the encoder is
every node the latent depends on, ending in the node's :meth:`analysis`; the decoder is every node
between ŷ and the reconstruction, starting with :meth:`synthesis`. A decoder node that reads
anything computed before the bottleneck (a skip connection around it, the input image) cannot be
decoded from the bitstream alone, and is refused.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from qcompile.errors import ConfigError
from qcompile.passes.insert_bottleneck import TARGET


def _bottleneck_nodes(gm: fx.GraphModule) -> tuple[fx.Node, fx.Node, fx.Node]:
    """(the quantization node, its ŷ getitem, the reconstruction node feeding the output)."""
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == TARGET]
    if len(nodes) != 1:
        raise ConfigError("this model has no codec bottleneck node", hint="prepare it with qcompile.codec.prepare")
    node = nodes[0]
    y_hat = next(u for u in node.users if u.target is operator.getitem and u.args[1] == 0)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    return node, y_hat, output.args[0][0]


def _copy(gm: fx.GraphModule, nodes: list[fx.Node], env: dict[fx.Node, fx.Node], graph: fx.Graph) -> None:
    for n in nodes:
        missing = [a for a in n.all_input_nodes if a not in env]
        if missing:
            raise ConfigError(f"the decoder node {n.name!r} reads {missing[0].name!r}, computed before the bottleneck",
                              hint="a codec's decoder may depend on the latent only: remove skip connections "
                                   "around the Bottleneck marker")
        env[n] = graph.node_copy(n, lambda a: env[a])


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


class _Half(nn.Module):
    """A half of the codec: ``after(graph(x))`` or ``graph(before(x))``."""

    def __init__(self, graph: fx.GraphModule, before=None, after=None):
        super().__init__()
        self.graph_module, self.before, self.after = graph, before, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.before is not None:
            x = self.before(x)
        x = self.graph_module(x)
        return self.after(x) if self.after is not None else x


class _Call(nn.Module):
    def __init__(self, bottleneck: nn.Module, method: str):
        super().__init__()
        self.bottleneck, self.method = bottleneck, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.bottleneck, self.method)(x)


def split(gm: fx.GraphModule) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) modules sharing ``gm``'s parameters; see the module docstring."""
    node, y_hat, reconstruction = _bottleneck_nodes(gm)
    bottleneck = gm.get_submodule(TARGET)
    latent = node.args[0]
    order = list(gm.graph.nodes)

    encoder_graph, env = fx.Graph(), {}
    needed = _ancestors(latent)
    _copy(gm, [n for n in order if n in needed], env, encoder_graph)
    encoder_graph.output(env[latent])

    decoder_graph = fx.Graph()
    env = {y_hat: decoder_graph.placeholder("latent_hat")}
    needed = _ancestors(reconstruction) - _ancestors(y_hat) - {y_hat}
    needed |= {n for n in _ancestors(reconstruction) if n.op == "get_attr"}
    _copy(gm, [n for n in order if n in needed], env, decoder_graph)
    decoder_graph.output(env[reconstruction])

    encoder = _Half(fx.GraphModule(gm, encoder_graph, "Encoder"), after=_Call(bottleneck, "analysis"))
    decoder = _Half(fx.GraphModule(gm, decoder_graph, "Decoder"), before=_Call(bottleneck, "synthesis"))
    return encoder.eval(), decoder.eval()
