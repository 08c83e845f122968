"""One forward of the float model on the example inputs, before tracing or any slow step.

A wrong ``--input-shape`` (three channels for a one-channel conv) otherwise surfaces deep inside
shape propagation, calibration or export as torch's own error, reported as a bug. Running the
model once on the example inputs turns it into a :class:`~qcompile.errors.ConfigError` that names
the layer and the shape it takes; the outputs tell the task what data the model can be trained on
(a classifier's labels must lie below its number of outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from qcompile.errors import ActionableError, ConfigError
from qcompile.modes import preserved_modes

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def run_example(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> Any:
    """``model(*example_inputs)`` in eval mode without gradients; a failure is a ConfigError with a fix."""
    try:
        with preserved_modes(model, train=False), torch.no_grad():
            return model(*example_inputs)
    except ActionableError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever torch raises, the input does not fit the model
        shapes = ";".join(",".join(map(str, t.shape)) for t in example_inputs)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"the model cannot run on an input of shape {shapes}: {detail}",
                          hint=_shape_hint(model, example_inputs)) from exc


def _shape_hint(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> str:
    """Name the first weighted layer when the input's channels (or features) differ from what it takes."""
    first = next(((name, m) for name, m in model.named_modules() if isinstance(m, WEIGHTED)), None)
    shape = list(example_inputs[0].shape)
    if first is not None and len(example_inputs) == 1 and len(shape) >= 2:
        name, layer = first
        conv = isinstance(layer, nn.modules.conv._ConvNd)
        if conv and len(shape) != len(layer.kernel_size) + 2:
            dims = ",".join(["1", str(layer.in_channels), *"HWD"[:len(layer.kernel_size)]])
            return (f"the model's first layer '{name}' ({type(layer).__name__}) takes {len(layer.kernel_size) + 2}-D "
                    f"inputs (batch, channels, ...): use --input-shape {dims}")
        axis = 1 if conv else len(shape) - 1
        takes = layer.in_channels if conv else layer.in_features
        if shape[axis] != takes:
            fixed = shape[:axis] + [takes] + shape[axis + 1:]
            what = "input channels" if conv else "input features"
            return (f"the model's first layer '{name}' ({type(layer).__name__}) takes {takes} {what}: "
                    f"use --input-shape {','.join(map(str, fixed))} (API: input_shape={tuple(fixed)})")
    return ("give --input-shape the shape the model's forward takes, batch first (e.g. 1,3,32,32 for RGB images); "
            "if it is right, run the model in Python on torch.randn(shape) to see where its forward fails")
