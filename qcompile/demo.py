"""The end-to-end demo behind ``qcompile demo``: float CNN → W4A8 and W1 → ONNX → onnxruntime, in seconds.

It needs no data files (scikit-learn's bundled 8×8 digits) and is sized to finish in well under a
minute on two CPU cores, so it doubles as a smoke test of the whole spine on a fresh machine:

1. train a small BatchNorm CNN in float (the same finetuning loop QAT uses);
2. compile it twice with the public API — W4A8 (uniform, per-channel 4-bit weights, 8-bit
   activations) and W1A8 (BWN: binary weights ±α with α = mean|W| per tensor, 8-bit activations);
   BWN rather than 1-bit uniform because it is the standard binary-weight rule and keeps a scale.
   Both take ``compile``'s default target, ``auto``: W4A8 becomes ``ort-int8`` on an x86 CPU
   (onnxruntime's integer kernels), W1A8 BWN stays ``exact`` (no integer kernel for binary weights);
   each row says which, and why;
3. calibrate, finetune briefly with knowledge distillation from the float model, export packed ONNX;
4. run every file (fp32 reference included) in onnxruntime and compare with PyTorch.

Everything runs on one thread (torch and onnxruntime). The model is so small that a second thread
buys nothing, and on a shared 2-core machine two spinning OpenMP threads per process are ruinous:
measured here under load, 3 float epochs took 0.7–2.9 s with 1 thread and 65–133 s with 2.

``run_demo`` returns a plain dict; the CLI command only draws it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INPUT_SHAPE = (1, 1, 8, 8)


@dataclass(frozen=True)
class Variant:
    """One quantized build of the demo model."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)  # qcompile.compile keyword arguments


VARIANTS = (
    Variant("W4A8", {"w_bits": 4, "a_bits": 8, "quantizer": "uniform"}),
    Variant("W1A8 BWN", {"w_bits": 1, "a_bits": 8, "quantizer": "bwn"}),
)


@dataclass(frozen=True)
class DemoConfig:
    """Budget of the demo; the defaults fit the 60-second promise on 2 cores with room to spare."""

    float_epochs: int = 8
    float_lr: float = 3e-3
    qat_epochs: int = 6
    qat_lr: float = 3e-3
    kd_alpha: float = 0.5
    batch_size: int = 32
    seed: int = 0
    latency_batches: tuple[int, ...] = (1, 64)
    latency_repeats: int = 30


def build_cnn(num_classes: int = 10):
    """conv-BN-ReLU ×3 with one max-pool and global average pooling: ~25k weights for 1×8×8 digits."""
    from torch import nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def train_float(model, splits, config: DemoConfig, progress: bool):
    """Float training with the library's own loop (adam, cosine schedule); returns the loop's result."""
    from qcompile.train import TrainConfig, finetune

    train_config = TrainConfig(epochs=config.float_epochs, lr=config.float_lr, optimizer="adam",
                               batch_size=config.batch_size, seed=config.seed, device="cpu",
                               mean=splits.mean, std=splits.std)
    result = finetune(model, splits.train, splits.test, train_config, progress=progress)
    model.eval()
    return result


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch on one intra-op thread for the duration (restored after; see the module docstring)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_artifact(model, path: Path, splits, config: DemoConfig) -> dict[str, Any]:
    """Accuracy in PyTorch and ORT, max logit gap, file size and ORT latency (1 thread) of one file."""
    from qcompile.parity import compare_onnx
    from qcompile.runtime import Session, measure_latency

    parity = compare_onnx(model, path, splits.test, splits.mean, splits.std, intra_op_threads=1)
    latency = measure_latency(Session(path, intra_op_threads=1), config.latency_batches, warmup=5,
                              repeats=config.latency_repeats)
    return {**parity, "path": path, "file_bytes": path.stat().st_size,
            "latency_ms": {b: latency[b]["median_ms"] for b in config.latency_batches}}


def run_demo(out_dir: str | Path = "qcompile-demo", config: DemoConfig | None = None, progress: bool = False,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the demo, writing ``fp32.onnx``, ``w4a8.onnx`` and ``w1a8-bwn.onnx`` into ``out_dir``.

    Returns ``{"rows": [...], "dataset", "model", "out_dir", "seconds", "phases_seconds", "config", ...}``;
    each row has ``name, target, target_reason, acc_torch, acc_ort, max_abs_diff, agreement, file_bytes,
    size_vs_fp32, latency_ms`` (and, for quantized rows, ``finetune_seconds``).
    """
    with single_threaded_torch():
        return _run(Path(out_dir), config or DemoConfig(), progress, log or (lambda message: None))


def _run(out_dir: Path, config: DemoConfig, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    import qcompile
    from qcompile.data import load_digits
    from qcompile.targets import target_fields

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)

    splits = load_digits()
    model = build_cnn(len(splits.classes))
    log(f"training a float BN CNN on {splits.name} ({len(splits.train)} train / {len(splits.test)} test)")
    float_result = train_float(model, splits, config, progress)
    phases = {"float training": time.perf_counter() - started}

    rows, compiled = [], None
    for variant in VARIANTS:
        phase_start = time.perf_counter()
        log(f"compiling {variant.name}: calibrate, finetune {config.qat_epochs} epoch(s) with KD, export")
        compiled = qcompile.compile(model, input_shape=INPUT_SHAPE, data=splits, **variant.options)
        result = compiled.finetune(epochs=config.qat_epochs, lr=config.qat_lr, optimizer="adam",
                                   batch_size=config.batch_size, kd_alpha=config.kd_alpha, seed=config.seed,
                                   device="cpu", progress=progress)
        path = out_dir / f"{variant.name.lower().replace(' ', '-')}.onnx"
        compiled.export(path)
        rows.append({"name": variant.name, **variant.options, **target_fields(compiled.plan),
                     "finetune_seconds": result.seconds, **measure_artifact(compiled.graph_module, path, splits, config)})
        phases[variant.name] = time.perf_counter() - phase_start

    phase_start = time.perf_counter()
    log("exporting the fp32 reference and timing everything in onnxruntime")
    fp32_path = out_dir / "fp32.onnx"
    compiled.export_float(fp32_path)
    fp32 = {"name": "fp32", "w_bits": None, "a_bits": None, "quantizer": None, "target": "fp32", "target_reason": "",
            "finetune_seconds": float_result.seconds, **measure_artifact(model, fp32_path, splits, config)}
    rows.insert(0, fp32)
    phases["fp32 export"] = time.perf_counter() - phase_start
    for row in rows:
        row["size_vs_fp32"] = row["file_bytes"] / fp32["file_bytes"]
        row["latency_vs_fp32"] = {b: row["latency_ms"][b] / fp32["latency_ms"][b] for b in config.latency_batches}
    return {
        "dataset": {"name": splits.name, "train": len(splits.train), "test": len(splits.test)},
        "model": {"params": sum(p.numel() for p in model.parameters()), "input_shape": list(INPUT_SHAPE)},
        "binary_quantizer": "bwn",
        "rows": rows,
        "out_dir": out_dir,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()},
        "threads": 1,
        "phases_seconds": phases,
        "seconds": time.perf_counter() - started,
    }
