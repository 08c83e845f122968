"""Does the exported file compute what PyTorch computes? The task's parity measure on both outputs.

``compare_onnx`` runs the same normalised test images through a PyTorch module (eval mode) and through
an ONNX file in the torch-free runtime, then lets the task compare them (classification: accuracy in
both, top-1 agreement and the largest logit gap; see ``qcompile.runtime.tasks``). It is the check
behind ``qcompile compile``'s summary and the demo table: an export is only worth shipping if ORT's
accuracy equals PyTorch's and the logits agree to float rounding. Inputs are normalised here (with the
model's normalisation) rather than by the runtime, so a plain fp32 export without qcompile
metadata can be compared the same way, by the one normalisation the runtime uses
(:func:`qcompile.runtime.normalisation.normalise`). torch is imported inside the functions that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from qcompile.plan import QuantPlan
    from qcompile.tasks import Task

PARITY_TOLERANCE = 1e-4  # the largest |ORT − PyTorch| output a qcompile export is meant to show


def torch_logits(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of ``model`` in eval mode on CPU-resident ``x``; train/eval modes are restored after."""
    import torch

    from qcompile.modes import preserved_modes

    device = next(model.parameters()).device
    with preserved_modes(model, train=False), torch.no_grad():
        outs = [model(torch.from_numpy(x[i:i + batch_size]).to(device)).float().cpu().numpy()
                for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def compare_onnx(model: nn.Module, onnx_path: str | Path, dataset: Any, mean: tuple[float, ...],
                 std: tuple[float, ...], batch_size: int = 256, providers: str = "auto",
                 intra_op_threads: int | None = None, task: Task | str | None = None) -> dict[str, Any]:
    """The task's parity measure of ``model`` (PyTorch) against ``onnx_path`` (onnxruntime) on ``dataset``
    (``.x``/``.y``), plus ``samples``.

    For classification (the default ``task``): ``acc_torch``, ``acc_ort`` (in [0, 1]), ``max_abs_diff``
    (largest |ORT − PyTorch| logit) and ``agreement`` (fraction of samples with the same top-1).
    """
    from qcompile.runtime import load
    from qcompile.runtime.normalisation import normalise
    from qcompile.tasks import get_task

    measures = get_task(task).runtime()
    x = normalise(dataset.x, mean, std)
    reference = torch_logits(model, x, batch_size)
    deployed = load(onnx_path, providers, intra_op_threads).predict(x, batch_size=batch_size, normalize=False)
    return {**measures.parity(reference, deployed, measures.targets(dataset.x, dataset.y)),
            "samples": int(len(dataset.y))}


def warn_on_parity(parity: dict[str, Any], plan: QuantPlan) -> None:
    """Warn (a :class:`~qcompile.errors.QCompileWarning`) when ``parity``'s largest output gap exceeds
    :data:`PARITY_TOLERANCE`, naming the likely cause. Quantized layers sum integers, identically in
    PyTorch and onnxruntime; a Conv/Linear kept float sums floats in an order each runtime picks, and when
    an activation quantizer follows, a value near a rounding boundary can land one code apart. Without
    activation quantizers nothing can flip, and a gap is float rounding (large when the logits are: e.g.
    BatchNorm statistics left stale under 1-bit weights), which the summary shows without a warning."""
    import warnings

    from qcompile.errors import QCompileWarning

    gap = parity.get("max_abs_diff")
    if gap is None or gap <= PARITY_TOLERANCE or plan.spec.a_bits is None:
        return  # without activation quantizers no code can flip: what remains is float rounding
    floats = [s.name for s in plan.sites if not s.quantized]
    agreement = parity.get("agreement")
    agreed = f" (top-1 agreement {agreement:.2%})" if agreement is not None else ""
    if floats:
        cause = (f"float layer(s) {', '.join(floats)} feed activation quantizers: their float sums are ordered "
                 "differently in onnxruntime and PyTorch, so a value near a rounding boundary lands one code apart")
        hint = "quantize those layers (drop their --layer-bits NAME=0 or float first/last-layer policy) for exact parity"
    else:
        cause = "a float op in front of an activation quantizer (e.g. a windowed average pool) sums in another order"
        hint = "see README 'Export targets'; the summary's accuracy in both runtimes says whether it matters"
    warnings.warn(QCompileWarning(f"onnxruntime's outputs differ from PyTorch eval by up to {gap:.1e}, more than "
                                f"{PARITY_TOLERANCE:g}{agreed}: {cause}", hint=hint), stacklevel=2)
