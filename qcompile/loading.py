"""Model loading: ``path/file.py:factory`` or ``package.module:attr``, plus an optional state dict.

The attribute may be an ``nn.Module`` instance, a class, or a zero-argument factory. Weights load
with ``torch.load(..., weights_only=True)`` (no pickled code runs), and every key must match: a
missing or unexpected key, or a shape mismatch, fails loudly (naming the keys) instead of half-loading.
A file that is not a plain state dict is refused with what it holds and how to write one — never with
advice to load it with ``weights_only=False``, which would run whatever code the file carries.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import re
import sys
from pathlib import Path

import torch
from torch import nn

from qcompile.errors import ModelLoadError

SPEC_HELP = "use 'path/to/file.py:factory' or 'package.module:attr' (attr: an nn.Module, its class, or a function returning one)"


def _exec_file(path: Path, where: str):
    """Import a model file once per process (so its classes stay identical for pickling/isinstance)."""
    name = f"qcompile_user_model_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ModelLoadError(f"importing {where} failed: {type(exc).__name__}: {exc}",
                             hint="fix the error in the model file (run it with python to see the traceback)") from exc
    return module


def _import_target(spec: str):
    if ":" not in spec:
        raise ModelLoadError(f"model spec {spec!r} has no ':attr' part", hint=SPEC_HELP)
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ModelLoadError(f"model file {where!r} does not exist", hint=SPEC_HELP)
        module = _exec_file(path, where)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ModelLoadError(f"cannot import module {where!r}: {exc}", hint=SPEC_HELP) from exc
    if not hasattr(module, attr):
        names = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ModelLoadError(f"{where} has no attribute {attr!r}", hint=f"available names: {', '.join(names[:20])}")
    return getattr(module, attr)


def load_model(spec: str | nn.Module, weights: str | Path | None = None) -> nn.Module:
    """Build the user's model from ``spec`` and load ``weights`` (a state dict file) if given."""
    if isinstance(spec, nn.Module):
        model = spec
    else:
        target = _import_target(spec)
        try:
            model = target if isinstance(target, nn.Module) else target()
        except Exception as exc:
            raise ModelLoadError(f"calling {spec} failed: {type(exc).__name__}: {exc}",
                                 hint="the factory must take no arguments and return an nn.Module") from exc
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"{spec} returned {type(model).__name__}, not an nn.Module", hint=SPEC_HELP)
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, weights: str | Path) -> None:
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadError(f"weights file {str(weights)!r} does not exist", hint="pass the path of a saved state_dict (torch.save(model.state_dict(), path))")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure means "not a state dict qcompile can read"
        raise ModelLoadError(f"cannot read {path} as a state dict: {unreadable_reason(exc)}",
                             hint=f"the weights file (--weights) must be a state dict of the model: save one with "
                                  f"torch.save(model.state_dict(), {path.name!r})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} holds a {type(state).__name__}, not a state dict", hint="save model.state_dict()")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelLoadError(f"weights in {path} do not match the model: {str(exc).splitlines()[-1].strip()}",
                             hint="check that the weights were saved from the same model definition") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"weights in {path} do not match the model: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}",
            hint="check that the weights were saved from the same model definition",
        )


def unreadable_reason(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in qcompile's words.

    torch's own message suggests retrying with ``weights_only=False`` or allow-listing globals: both
    would let the file run code, so it is never passed on; only what the file holds is said.
    """
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if isinstance(exc, pickle.UnpicklingError) and found:
        return (f"it holds pickled Python objects ({found.group(1)}; e.g. a whole model saved with "
                "torch.save(model)), and qcompile loads tensors only, since unpickling objects can run code")
    return f"it is not a file written by torch.save, or it is damaged or truncated ({type(exc).__name__})"


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """'1,1,28,28' or '1,3,32,32;1,10' → list of shapes (one per model input)."""
    shapes = []
    for part in text.split(";"):
        try:
            shape = tuple(int(d) for d in part.strip().split(","))
        except ValueError:
            raise ModelLoadError(f"bad input shape {part!r}", hint="write comma-separated ints, e.g. 1,1,28,28; separate several inputs with ';'") from None
        if not shape or any(d <= 0 for d in shape):
            raise ModelLoadError(f"bad input shape {part!r}", hint="every dimension must be a positive integer")
        shapes.append(shape)
    return shapes
