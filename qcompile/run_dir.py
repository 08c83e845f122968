"""Saving and reloading a compiled model between CLI commands (``compile`` → ``finetune`` → ``export``).

A run directory holds ``qmodel.pt``: the model spec, float weights, quantization spec and the
quantized state dict — tensors and plain data only, so it loads with ``weights_only=True``.
Reloading re-traces the user's model and re-applies the same passes, then restores the state:
no pickled code, and the result is exactly the module that was saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qcompile.atomic import atomic_write, atomic_write_text
from qcompile.errors import ConfigError
from qcompile.loading import load_model
from qcompile.plan import QuantSpec

QMODEL = "qmodel.pt"


def save_run(cm, run_dir: str | Path, model_spec: str | None = None) -> Path:
    """Write ``run_dir/qmodel.pt`` (and a readable ``plan.json``) for ``cm``.

    ``model_spec`` defaults to the spec ``cm`` was loaded from (a run reloaded by :func:`load_run`
    remembers it); it must be a string spec, since the run is rebuilt from it.
    """
    run_dir = Path(run_dir)
    model_spec = model_spec or getattr(cm, "model_spec", None)
    if not model_spec:
        raise ConfigError("cannot save a run of a model given as an object",
                          hint="compile from a spec string ('file.py:factory' or 'pkg.mod:attr') to save runs")
    payload = {
        "format": 1,
        "model": model_spec,
        "input_shapes": [list(t.shape) for t in cm.example_inputs],
        "spec": json.dumps(cm.plan.spec.to_dict()),
        "leaf_modules": list(cm.leaf_modules),
        "data": cm.data_spec,
        "task": cm.task.name,
        "float_state": {k: v.cpu() for k, v in cm.float_model.state_dict().items()},
        "state": {k: v.cpu() for k, v in cm.graph_module.state_dict().items()},
        "history": json.dumps(cm.history),
        "stages": cm.stages,
        "open_stage": -1 if cm.open_stage is None else cm.open_stage,
    }
    atomic_write(run_dir / QMODEL, lambda f: torch.save(payload, f))
    plan_text = json.dumps(cm.plan.to_dict(), indent=2)
    atomic_write_text(run_dir / "plan.json", plan_text)
    write_history(run_dir, cm.history, label=run_label(cm))
    return run_dir / QMODEL


def run_label(cm) -> str:
    """A short label for plots and tables, e.g. 'ste uniform W4A8': the method's ``label`` hook names it."""
    return cm.method.label(cm.plan.spec)


def write_history(run_dir: str | Path, history: list[dict], label: str, **extra) -> Path:
    """``run_dir/history.json``: per-epoch records plus a label — what ``qcompile report`` plots."""
    path = Path(run_dir) / "history.json"
    text = json.dumps({"label": label, **extra, "history": history}, indent=1)
    atomic_write_text(path, text)
    return path


def load_run(run_dir: str | Path):
    """Rebuild the :class:`~qcompile.api.CompiledModel` saved in ``run_dir``."""
    from qcompile.api import compile as compile_model

    path = Path(run_dir) / QMODEL
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no {QMODEL}", hint="pass the --run-dir that `qcompile compile` wrote")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = load_model(payload["model"])
    model.load_state_dict(payload["float_state"])
    cm = compile_model(model, input_shape=[tuple(s) for s in payload["input_shapes"]],
                       leaf_modules=payload["leaf_modules"], spec=QuantSpec.from_dict(json.loads(payload["spec"])),
                       task=payload.get("task"))
    missing, unexpected = cm.graph_module.load_state_dict(payload["state"], strict=False)
    if missing or unexpected:
        raise ConfigError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}",
                          hint="the model definition changed since compile; compile again")
    cm.data_spec = payload["data"]
    cm.model_spec = payload["model"]
    cm.history = json.loads(payload["history"])
    cm.stages = payload.get("stages", 0)
    cm.open_stage = None if payload.get("open_stage", -1) < 0 else payload["open_stage"]
    return cm
