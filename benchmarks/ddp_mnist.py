"""Data-parallel QAT on CPU: 2 gloo ranks × batch 32 against 1 process × batch 64 (the same global batch),
and an ESTIMATE of the scaling on N GPUs from a compute / all-reduce model.

    nice -n 5 python benchmarks/ddp_mnist.py [--quick] [--seeds 3]

Measured: ``qcompile compile`` of the MNIST CNN (examples/mnist_cnn.py, float weights cached by
benchmarks/common.py) at W2A8 (STE, 2-bit weights, so that the finetuning epoch matters), 1 epoch of the
8,000 training images at global batch 64 (125 steps), once as one process and once under
``torchrun --standalone --nproc-per-node 2`` (each rank trains on 32 of every 64 images), with and without
``--sync-bn`` (without it BatchNorm normalises each rank's 32 images by their own statistics). One thread per
process (OMP_NUM_THREADS=1): the 2-rank job uses both cores, the single process one. Per seed the arms
run back to back, the order alternating between seeds; the machine's load average is recorded before each
run (its cores are shared with other jobs). Reported: final test accuracy (PyTorch, 2,000 test images) per
arm and seed, and the epoch's wall time (the loop's own, evaluation included; every rank scores the whole
test set) as the ratio 2 ranks / 1 process per seed, with its median.

Estimated (not measured): :func:`estimate` — per step, compute 6·MACs·b / F (forward and backward, per-GPU
batch b) then a ring all-reduce of the fp32 gradients and BatchNorm statistics, 2(N−1)/N · bytes / B +
2(N−1)·α, with no overlap (qcompile averages gradients in one all-reduce after the backward). Throughput
speedup on N GPUs at a fixed per-GPU batch: N · t_c / (t_c + t_ar(N)). F, B and α are assumptions, named
in ``ASSUMPTIONS``. The FLOP-bound t_c is a lower bound for small models, whose steps are launch-bound on a
GPU, so their efficiencies here are lower bounds too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
SINGLE = "1 process × 64"
ARMS = {SINGLE: ([], []), "2 ranks × 32": (TORCHRUN, []), "2 ranks × 32, --sync-bn": (TORCHRUN, ["--sync-bn"])}
ASSUMPTIONS = {
    "flops_per_second": 50e12,  # sustained fp32/TF32 training throughput of one H100/H200-class GPU on convnets
    "interconnects": {  # NCCL all-reduce bus bandwidth (bytes/s) and per-hop latency (s)
        "NVLink/NVSwitch, one node": (350e9, 10e-6),
        "PCIe 4.0 x16, one node": (20e9, 15e-6),
        "100 Gb/s network, across nodes": (10e9, 25e-6),
    },
    "train_flops_per_mac": 6,  # 2 FLOPs per MAC, backward ≈ 2 × forward
}


def train(arm: str, weights: str, seed: int, work: Path, quick: bool) -> dict:
    """One ``qcompile compile`` run of ``arm``; its JSON summary's figures and the load average before it."""
    out = work / f"{list(ARMS).index(arm)}-{seed}"
    launcher, extra = ARMS[arm]
    cmd = [sys.executable, *launcher, "-m", "qcompile", "compile", *extra, common.MODEL_SPEC, "--weights", weights,
           "--input-shape", "1,1,28,28", "--w-bits", "2", "--a-bits", "8", "--target", "exact",
           "--data", f"mnist:{common.MNIST_DIR}",
           "--epochs", "1", "--batch-size", "64", "--optimizer", "adam", "--lr", "1e-3", "--seed", str(seed),
           *(["--max-steps", "20"] if quick else []), "--out", str(out / "m.onnx"), "--run-dir", str(out / "run"),
           "--json"]
    load, started = common.load_average(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    epoch = summary["training"]["history"][-1] if summary["training"]["history"] else {}
    return {"arm": arm, "seed": seed, "load_before": load, "wall_seconds": time.perf_counter() - started,
            "steps": summary["training"]["steps"],
            "epoch_seconds": epoch.get("seconds", summary["training"]["seconds"]),
            "test_acc": summary["accuracy"]["quantized_torch"], "ort_max_abs_diff": summary["parity"]["max_abs_diff"]}


def macs_and_sizes(model, input_shape) -> dict:
    """Forward MACs per sample of the Conv/ConvTranspose/Linear layers, parameters and BatchNorm statistics."""
    import torch
    from torch import nn

    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features * output[0].numel() // module.out_features)
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs.append(inputs[0][0].numel() * module.out_channels // module.groups * k)
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs.append(output[0].numel() * module.in_channels // module.groups * k)

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    stats = sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    return {"macs": sum(macs), "parameters": sum(p.numel() for p in model.parameters()), "bn_statistics": stats}


def estimate() -> list[dict]:
    """Rows of the N-GPU model (see the module docstring) for the example models and ResNet-50."""
    from qcompile.codec.reference import build as codec
    from qcompile.loading import load_model

    models = [("MNIST CNN", macs_and_sizes(common.build_model(), (1, 28, 28)), 64),
              ("ResNet-20 (CIFAR)", macs_and_sizes(load_model(f"{common.REPO}/examples/resnet20.py:build"),
                                                   (3, 32, 32)), 128),
              ("factorized-prior codec, 256² crops", macs_and_sizes(codec(), (3, 256, 256)), 8),
              # not built here (torchvision is not a dependency): its published size and MACs at 224²
              ("ResNet-50 (ImageNet; published figures)",
               {"macs": 4.09e9, "parameters": 25_557_032, "bn_statistics": 2 * 26_560}, 64)]
    rows = []
    for name, size, batch in models:
        grad_bytes = 4 * (size["parameters"] + size["bn_statistics"])
        compute = ASSUMPTIONS["train_flops_per_mac"] * size["macs"] * batch / ASSUMPTIONS["flops_per_second"]
        for link, (bandwidth, latency) in ASSUMPTIONS["interconnects"].items():
            speedups = {}  # keyed by str(N), as in the JSON
            for n in (2, 4, 8):
                allreduce = 2 * (n - 1) / n * grad_bytes / bandwidth + 2 * (n - 1) * latency
                speedups[str(n)] = n * compute / (compute + allreduce)
            rows.append({"model": name, "per_gpu_batch": batch, **size, "allreduce_bytes": grad_bytes,
                         "compute_ms": 1e3 * compute, "interconnect": link, "speedup": speedups})
    return rows


def render(record: dict) -> str:
    runs = record["runs"]
    measured = common.markdown_table(
        ["seed", "arm", "steps", "test acc", "epoch s", "epoch time / 1 process", "load before (1 min)"],
        [[r["seed"], r["arm"], r["steps"], f"{100 * r['test_acc']:.2f}%", f"{r['epoch_seconds']:.1f}",
          f"{r['ratio']:.3f}" if "ratio" in r else "", r["load_before"][0]] for r in runs])
    s = record["summary"]
    lines = [measured, "",
             *(f"{arm} / {SINGLE}: median epoch-time ratio {m:.3f} (per seed {s['ratios'][arm]})"
               for arm, m in s["median_ratio"].items()),
             *(f"test accuracy, {arm}: {acc}" for arm, acc in s["acc"].items()), "",
             "ESTIMATE (a model with assumed rates, not a measurement):", common.markdown_table(
                 ["model", "per-GPU batch", "params", "MACs/sample", "all-reduce MB", "compute ms/step", "link",
                  "speedup N=2", "N=4", "N=8"],
                 [[e["model"], e["per_gpu_batch"], f"{e['parameters']:,}", f"{e['macs']:.3g}",
                   f"{e['allreduce_bytes'] / 1e6:.2f}", f"{e['compute_ms']:.3f}", e["interconnect"],
                   *(f"{e['speedup'][str(n)]:.2f}" for n in (2, 4, 8))] for e in record["estimate"]])]
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps per run; JSON is marked quick")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started, load_before = time.perf_counter(), common.load_average()
    import torch

    splits = common.mnist()
    _, info = common.float_model(splits, common.float_recipe(args.quick))
    weights = str(common.REPO / info["checkpoint"]) if "checkpoint" in info else None
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            order = list(ARMS) if seed % 2 == 0 else list(reversed(ARMS))
            pair = {arm: train(arm, weights, seed, Path(tmp), args.quick) for arm in order}
            for arm in ARMS:
                if arm != SINGLE:
                    pair[arm]["ratio"] = pair[arm]["epoch_seconds"] / pair[SINGLE]["epoch_seconds"]
            runs += [pair[arm] for arm in ARMS]
            print(f"seed {seed}: " + ", ".join(f"{a} {r['epoch_seconds']:.1f}s acc {r['test_acc']:.4f}"
                                               for a, r in pair.items()), file=sys.stderr)
    summary = {"ratios": {arm: [round(r["ratio"], 3) for r in runs if r["arm"] == arm]
                          for arm in ARMS if arm != SINGLE},
               "acc": {arm: [round(r["test_acc"], 4) for r in runs if r["arm"] == arm] for arm in ARMS}}
    summary["median_ratio"] = {arm: common.median(v) for arm, v in summary["ratios"].items()}
    payload = {"float": info, "torch_threads_per_process": 1, "runs": runs, "summary": summary,
               "estimate": estimate(), "assumptions": ASSUMPTIONS, "torch": torch.__version__}
    common.finish(common.write_results("ddp_mnist", args, payload, started, load_before), render)


if __name__ == "__main__":
    main()
