"""Pass: make the graph compute what onnxruntime's integer kernels compute (the ``ort-int8`` target).

After this pass every quantized tensor lives on one 8-bit grid shared by all its consumers, and the op
that produces it requantises straight to that grid in eval (QLinearConv's arithmetic, :mod:`qcompile.integer`):

1. a residual addition of two tensors (``operator.add``/``torch.add``) becomes a :class:`QuantAdd` with its
   own output quantizer; a ReLU that is its only user is absorbed (unsigned output, like QLinearAdd's
   saturation at the zero point);
2. a global average pool (``AdaptiveAvgPool`` to 1 as a module or a function call, or the float64 pool of
   ``ExactGlobalPooling``) whose
   output feeds a quantized op becomes a :class:`QuantGlobalPool` (one feeding a float layer stays float);
3. each consumer (a quantized op's input, an addition's operands, a pool's input) is traced back through
   grid-preserving ops (MaxPool, Flatten, ReLU, reshapes, an attached BatchNorm) to its source; the
   consumers of one source share one quantizer (the first quantized op's, or a new 8-bit one, unsigned
   when the tensor is provably non-negative);
4. a quantized op with an input quantizer becomes an integer kernel: it requantises to its source grid's
   quantizer, or, with none (a classifier's last layer), outputs float like QGemm.

Only 8-bit activations have integer kernels: any other width is an IntegerKernelError (a ConfigError).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from qcompile.errors import IntegerKernelError
from qcompile.integer.modules import QuantAdd, QuantGlobalPool
from qcompile.passes.attach_batchnorm import AttachedBatchNorm
from qcompile.passes.base import GraphPass
from qcompile.passes.exact_pooling import Float64GlobalPool
from qcompile.passes.graph_utils import module_of
from qcompile.passes.nonnegative import is_nonnegative
from qcompile.quantized_ops import QuantizedOp
from qcompile.quantizers.activation import ActivationQuantizer

_TRANSPARENT_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.ReLU, nn.Identity, nn.Dropout, nn.Dropout2d,
                        AttachedBatchNorm)
_TRANSPARENT_FUNCS = {F.relu, torch.relu, torch.flatten, torch.reshape, F.max_pool1d, F.max_pool2d}
_TRANSPARENT_METHODS = {"relu", "view", "reshape", "flatten", "contiguous"}
_ADDS = {operator.add, torch.add}
BITS = 8


def is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(module_of(gm, node), nn.ReLU) or (
        node.op == "call_function" and node.target in (F.relu, torch.relu)) or (
        node.op == "call_method" and node.target == "relu")


def is_transparent(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Ops that keep values on their input's grid (a ReLU only on an unsigned one, which it leaves unchanged)."""
    return isinstance(module_of(gm, node), _TRANSPARENT_MODULES) or (
        node.op == "call_function" and node.target in _TRANSPARENT_FUNCS) or (
        node.op == "call_method" and node.target in _TRANSPARENT_METHODS)


def source_of(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    while isinstance(node, fx.Node) and is_transparent(gm, node) and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return node


def _is_global_pool(m: nn.Module | None) -> bool:
    if isinstance(m, Float64GlobalPool):
        m = m.pool
    if not isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        return False
    size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
    return all(s == 1 for s in size)


def _is_functional_global_pool(node: fx.Node) -> bool:
    """``F.adaptive_avg_pool1d/2d(x, 1)`` (or output size (1, 1))."""
    if node.op != "call_function" or node.target not in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d):
        return False
    size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
    return all(s == 1 for s in (size if isinstance(size, (tuple, list)) else (size,)))


def _feeds_quantized(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Does ``node``'s output reach, through grid-preserving ops only, a quantized op's input?"""
    for user in node.users:
        m = module_of(gm, user)
        if isinstance(m, QuantizedOp) and m.input_quantizer is not None and user.args[0] is node:
            return True
        if is_transparent(gm, user) and _feeds_quantized(gm, user):
            return True
    return False


def _new_quantizer(signed: bool, device: torch.device) -> ActivationQuantizer:
    return ActivationQuantizer(BITS, signed=signed).to(device)


class IntegerKernels(GraphPass):
    def run(self, gm: fx.GraphModule):
        ops = [m for m in gm.modules() if isinstance(m, QuantizedOp) and m.input_quantizer is not None]
        wrong = sorted({m.input_quantizer.bits for m in ops} - {BITS})
        if wrong:
            raise IntegerKernelError(f"the ort-int8 target needs 8-bit activations, got {wrong}",
                              hint="use --a-bits 8 with --target ort-int8, or --target exact for other widths")
        if not ops:
            return False, {"integer_kernels": []}
        device = next(gm.parameters()).device
        memo: dict = {}
        adds = self._residual_adds(gm, device, memo)
        pools = self._global_pools(gm, device)
        shared = self._share_grids(gm, device, memo)
        gm.graph.lint()
        gm.recompile()
        return True, {"adds": adds, "pools": pools, "grids": shared}

    @staticmethod
    def _residual_adds(gm: fx.GraphModule, device, memo) -> list[str]:
        done = []
        for node in list(gm.graph.nodes):
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            if not (node.op == "call_function" and node.target in _ADDS and len(tensors) == 2 and not node.kwargs):
                continue
            users = list(node.users)
            relu = users[0] if len(users) == 1 and is_relu(gm, users[0]) else None
            name = f"int_add_{len(done)}"
            gm.add_submodule(name, QuantAdd(None, None, _new_quantizer(relu is None, device), relu is not None))
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, tuple(tensors))
            (relu or node).replace_all_uses_with(new)
            if relu is not None:
                gm.graph.erase_node(relu)
            gm.graph.erase_node(node)
            done.append(name)
        return done

    @staticmethod
    def _global_pools(gm: fx.GraphModule, device) -> list[str]:
        done = []
        for node in list(gm.graph.nodes):
            functional = _is_functional_global_pool(node)
            if not (functional or node.op == "call_module" and _is_global_pool(module_of(gm, node))) \
                    or not _feeds_quantized(gm, node):
                continue
            if not functional:
                gm.add_submodule(node.target, QuantGlobalPool(None, None))
                done.append(str(node.target))
                continue
            name = f"int_pool_{len(done)}"
            gm.add_submodule(name, QuantGlobalPool(None, None))
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            done.append(name)
        return done

    @staticmethod
    def _consumers(gm: fx.GraphModule):
        """``(consumer module, slot, input node)`` for every quantized input in graph order."""
        for node in gm.graph.nodes:
            m = module_of(gm, node)
            if isinstance(m, QuantizedOp) and m.input_quantizer is not None:
                yield m, "input_quantizer", node.args[0]
            elif isinstance(m, QuantAdd):
                yield m, "a_quantizer", node.args[0]
                yield m, "b_quantizer", node.args[1]
            elif isinstance(m, QuantGlobalPool):
                yield m, "input_quantizer", node.args[0]

    def _share_grids(self, gm: fx.GraphModule, device, memo) -> list[dict]:
        groups: dict[fx.Node, list] = {}
        for consumer, slot, arg in self._consumers(gm):
            groups.setdefault(source_of(gm, arg), []).append((consumer, slot, arg))
        report = []
        for source, members in groups.items():
            producer = module_of(gm, source)
            if isinstance(producer, QuantAdd):
                grid = producer.output_quantizer
            else:
                own = [c.input_quantizer for c, slot, _ in members if isinstance(c, QuantizedOp)]
                grid = own[0] if own else _new_quantizer(not is_nonnegative(gm, members[0][2], memo), device)
            for consumer, slot, _ in members:
                setattr(consumer, slot, grid)
            if isinstance(producer, QuantGlobalPool):
                producer.output_quantizer = grid
            elif isinstance(producer, QuantizedOp) and producer.input_quantizer is not None:
                producer.set_integer_kernel(True, grid)
            report.append({"source": source.name, "consumers": len(members), "signed": grid.signed})
        for m in gm.modules():
            if isinstance(m, QuantizedOp) and m.input_quantizer is not None and not m.integer_kernel:
                m.set_integer_kernel(True, None)  # float output (QGemm without output quantization)
        return report
