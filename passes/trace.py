"""Front end: ``torch.fx.symbolic_trace`` with user leaf modules and actionable failures.

When tracing fails (data-dependent control flow, unsupported Python on proxies, ...) the error
names the innermost module being traced, the user's source line, and the fix: declare that
module a leaf (``--leaf NAME`` / ``leaf_modules=[...]``), which keeps it opaque and in float.
"""

from __future__ import annotations

import linecache
import traceback
from collections.abc import Iterable

import torch
from torch import fx, nn

from qcompile.errors import TraceFailure


class _LeafAwareTracer(fx.Tracer):
    """Treats user-declared modules (by qualified name or class name) as leaves and records
    the stack of modules being traced, so a failure can name the culprit."""

    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves
        self.stack: list[tuple[str, str]] = []
        self.failed_in: list[tuple[str, str]] | None = None  # the stack when tracing first raised

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaves or type(m).__name__ in self.leaves:
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        qualname = self.path_of_module(m)
        self.stack.append((qualname, type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = list(self.stack)
            raise
        finally:
            self.stack.pop()


def user_frame(tb) -> traceback.FrameSummary | None:
    """The deepest frame outside torch and qcompile: the user's line that broke tracing (or export)."""
    frames = [f for f in traceback.extract_tb(tb) if "/torch/" not in f.filename and "/qcompile/" not in f.filename and "/passes/" not in f.filename]
    return frames[-1] if frames else None


def trace(model: nn.Module, leaf_modules: Iterable[str] = ()) -> fx.GraphModule:
    """Symbolically trace ``model``; raise :class:`TraceFailure` with a fix on failure."""
    leaves = set(leaf_modules)
    known = {name for name, _ in model.named_modules()} | {type(m).__name__ for m in model.modules()}
    unknown = sorted(leaves - known)
    if unknown:
        raise TraceFailure(
            f"leaf module(s) {', '.join(unknown)} not found in the model",
            hint="pass a qualified module name as printed by `qcompile inspect` (e.g. 'layer1.0') or a class name",
        )
    tracer = _LeafAwareTracer(leaves)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # tracing raises many exception types; all mean "not traceable"
        stack = tracer.failed_in or []
        frame = user_frame(exc.__traceback__)
        where = f"{frame.filename}:{frame.lineno}" if frame else "unknown location"
        code = (linecache.getline(frame.filename, frame.lineno).strip() if frame else "") or "?"
        name, cls = stack[-1] if stack else ("<root>", type(model).__name__)
        leaf_hint = (
            f"mark it as a leaf module: --leaf {name} (API: leaf_modules=['{name}']); its weights then stay in float, "
            "and it must still export to ONNX (torch.export cannot follow an `if` on tensor values: use torch.cond)"
            if name != "<root>"
            else "move the data-dependent code into a submodule and mark that submodule as a leaf (--leaf NAME)"
        )
        raise TraceFailure(
            f"cannot trace module '{name}' ({cls}) at {where}: `{code}`\n  {type(exc).__name__}: {exc}",
            hint=leaf_hint,
        ) from exc
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


def example_inputs_for(shapes: list[tuple[int, ...]], device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
    """Random float inputs of the given shapes (used for shape propagation and export)."""
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*s, generator=g).to(device) for s in shapes)
