"""Saving and reloading a compiled model between CLI commands (``compile`` → ``finetune`` → ``export``).

A run directory holds ``qmodel.pt``: the model spec, float weights, quantization spec, the
quantized state dict and what the artifact records about its input (normalisation, class names) —
tensors and plain data only, so it loads with ``weights_only=True``. Reloading re-traces the user's
model and re-applies the same passes, then restores the state: no pickled code, and the result is
exactly the module that was saved, so ``export`` writes the same file ``compile`` did, with or without
the data it was compiled with. The model file it names is imported again: treat a run directory as
code. Whether the saved model is finished is ``run.json``'s business (:mod:`qcompile.run_state`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qcompile.atomic import atomic_write, atomic_write_text
from qcompile.errors import ConfigError, RunDirError
from qcompile.loading import load_model, unreadable_reason
from qcompile.plan import QuantSpec
from qcompile.runtime.normalisation import Normalization, NormalizationError

QMODEL = "qmodel.pt"
FORMAT = 1
REQUIRED = ("model", "input_shapes", "spec", "leaf_modules", "float_state", "state", "history")
_RECOMPILE = "compile the run again (or restore the run directory from a copy)"


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
        "format": FORMAT,
        "model": model_spec,
        "input_shapes": [list(t.shape) for t in cm.example_inputs],
        "spec": json.dumps(cm.plan.spec.to_dict()),  # its target resolved (exact or ort-int8, never auto)
        "target_reason": cm.plan.target_reason,
        "leaf_modules": list(cm.leaf_modules),
        "data": cm.data_spec,
        "task": cm.task.name,
        "normalization": json.dumps(cm.normalization.to_dict() if cm.normalization else None),
        "classes": json.dumps(cm.classes),
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
        raise RunDirError(f"{run_dir} holds no {QMODEL}", hint="pass the --run-dir that `qcompile compile` wrote")
    payload = read_payload(path)
    model = load_model(payload["model"])
    model.load_state_dict(payload["float_state"])
    cm = compile_model(model, input_shape=[tuple(s) for s in payload["input_shapes"]],
                       leaf_modules=payload["leaf_modules"], spec=QuantSpec.from_dict(json.loads(payload["spec"])),
                       task=payload.get("task"))
    missing, unexpected = cm.graph_module.load_state_dict(payload["state"], strict=False)
    if missing or unexpected:
        raise ConfigError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}",
                          hint="the model definition changed since compile; compile again")
    cm.plan.target_reason = payload.get("target_reason") or f"the run was compiled for {cm.plan.spec.target}"
    cm.data_spec = payload["data"]
    cm.model_spec = payload["model"]
    cm.history = json.loads(payload["history"])
    cm.stages = payload.get("stages", 0)
    cm.open_stage = None if payload.get("open_stage", -1) < 0 else payload["open_stage"]
    norm, cm.classes = json.loads(payload.get("normalization", "null")), json.loads(payload.get("classes", "null"))
    if norm is not None:
        try:
            cm.set_normalization(Normalization.from_dict(norm))
        except (NormalizationError, KeyError, TypeError) as e:
            raise RunDirError(f"{path} records a broken normalisation {norm!r}: {e}", hint=_RECOMPILE) from None
    return cm


def read_payload(path: Path) -> dict:
    """``qmodel.pt``'s contents, checked: a damaged file, another format version or missing entries is a
    :class:`RunDirError` that says which, never a traceback."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unpickling failure means the same to the user
        raise RunDirError(f"cannot read the saved run {path}: {unreadable_reason(exc)}", hint=_RECOMPILE) from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise RunDirError(f"{path} is not a qcompile run file", hint=_RECOMPILE)
    if payload["format"] != FORMAT:
        raise RunDirError(f"{path} has format version {payload['format']!r}; this qcompile reads version {FORMAT}",
                          hint="use the qcompile version that wrote it, or " + _RECOMPILE)
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise RunDirError(f"{path} is incomplete: it lacks {', '.join(missing)}", hint=_RECOMPILE)
    return payload
