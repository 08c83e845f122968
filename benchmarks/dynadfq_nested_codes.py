"""DynaDFQ nested codes: weight error and accuracy of nested multi-width codes vs separate per-width quantizers.

    python benchmarks/dynadfq_nested_codes.py [--quick]

On the benchmark MNIST CNN (float weights of benchmarks/common.py), every Conv/Linear weight is quantized
per output channel at each width b of a candidate set, three ways:

- ``nested``: :class:`NestedWeightQuantizer` over the whole set — the b-bit codes are the top bits of the
  one stored max-width code (mid-rise, step 2^(B−b)·s of the widest grid);
- ``mid-rise alone``: the same mid-rise grid with its own scale for b (max|W_c| on its top level);
- ``uniform (mid-tread)``: qcompile's symmetric per-channel ``uniform`` quantizer at b (2^b − 1 levels,
  round to nearest, an exact zero).

Reported: the relative squared error Σ‖W − Ŵ‖² / Σ‖W‖² pooled over the layers, and the test accuracy
(last 2,000 MNIST images) of the float model with its weights replaced — weights only, activations float,
no finetuning: what the grid alone costs before any QAT recovers it — once with the BatchNorm statistics
as trained, and once with them recomputed for the quantized weights on 64 batches of 64 training images
(what ``compile`` does by default, ``--bn-reestimate 64``).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CANDIDATE_SETS = ((2, 3, 4), (3, 4, 5), (2, 4, 8))
KINDS = ("nested", "mid-rise alone", "uniform (mid-tread)")


def quantizer(kind: str, candidates: tuple[int, ...], bits: int):
    from qcompile.methods.dynadfq import NestedWeightQuantizer
    from qcompile.quantizers import UniformQuantizer

    if kind == "nested":
        return NestedWeightQuantizer(candidates, bits=bits)
    if kind == "mid-rise alone":
        return NestedWeightQuantizer((bits,))
    return UniformQuantizer(bits, symmetric=True, per_channel=True)


def measure(model: nn.Module, splits, kind: str, candidates: tuple[int, ...], bits: int) -> dict:
    from qcompile.train import evaluate
    from qcompile.train.batchnorm_stats import reestimate_batchnorm

    quantized = copy.deepcopy(model)
    err = power = 0.0
    with torch.no_grad():
        for module in quantized.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                q = quantizer(kind, candidates, bits).eval()
                w_hat = q(w)
                err += float(((w - w_hat) ** 2).sum())
                power += float((w ** 2).sum())
                module.weight.copy_(w_hat)
    acc = evaluate(quantized, splits.test, mean=splits.mean, std=splits.std)["acc"]
    reestimate_batchnorm(quantized, splits.train, batches=64, batch_size=64, mean=splits.mean, std=splits.std)
    acc_bn = evaluate(quantized, splits.test, mean=splits.mean, std=splits.std)["acc"]
    return {"kind": kind, "candidates": list(candidates), "bits": bits, "relative_sq_error": err / power,
            "test_acc": acc, "test_acc_bn_reestimated": acc_bn}


def render(record: dict) -> str:
    out = [f"Float model: {100 * record['float_model']['test_acc']:.2f}% test accuracy."]
    for candidates in record["candidate_sets"]:
        rows = []
        for bits in candidates:
            cells = {r["kind"]: r for r in record["rows"] if r["candidates"] == candidates and r["bits"] == bits}
            rows.append([bits, *(f"{cells[k]['relative_sq_error']:.5f}" for k in KINDS),
                         *(f"{100 * cells[k]['test_acc']:.2f} / {100 * cells[k]['test_acc_bn_reestimated']:.2f}"
                           for k in KINDS)])
        stored = f"nested stores {max(candidates)} bits per weight for all widths; separate grids store " \
                 f"{sum(candidates)} ({' + '.join(map(str, candidates))})"
        out.append(f"Candidates {{{','.join(map(str, candidates))}}} — {stored}\n\n" + common.markdown_table(
            ["bits", *(f"rel. sq. error: {k}" for k in KINDS), *(f"acc % {k} (BN as trained / re-estimated)"
                                                                for k in KINDS)], rows))
    return "\n\n".join(out)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    torch.set_num_threads(1)
    splits = common.mnist()
    model, float_info = common.float_model(splits, common.float_recipe(args.quick))
    sets = CANDIDATE_SETS[:1] if args.quick else CANDIDATE_SETS
    rows = [measure(model, splits, kind, candidates, bits) for candidates in sets for bits in candidates for kind in KINDS]
    path = common.write_results("dynadfq_nested_codes", args, {
        "model": common.MODEL_SPEC, "weights": common.weight_count(model), "float_model": float_info,
        "candidate_sets": [list(c) for c in sets], "kinds": list(KINDS), "rows": rows}, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
