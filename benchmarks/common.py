"""Shared helpers of the benchmark scripts: data, the float model (trained once, cached), timing, output.

Every figure script does the same four things, so they live here:

1. load MNIST from ``../shared/data/mnist`` (first 8,000 images train, last 2,000 test), or stop
   with a message saying where the files are expected;
2. build ``examples/mnist_cnn.py:build`` (102,944 weights) and train it in float with the library's
   own loop, caching the state dict under ``benchmarks/.cache/`` keyed by the recipe, model file,
   data and torch version, so each script reuses the same float weights (the key does not cover
   the library's training loop: delete ``benchmarks/.cache/float-*`` after changing it);
3. record the machine (CPU, cores, library versions) and the load average before and after, because
   the benchmark machine is shared and timings mean little without it;
4. write ``benchmarks/results/<name>.json`` and print a markdown table.

Nothing here is a library API; scripts import it as ``common`` from their own folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED_DATA / "mnist"
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"
MODEL_FILE = REPO / "examples" / "mnist_cnn.py"
MODEL_SPEC = f"{MODEL_FILE}:build"
INPUT_SHAPE = (1, 1, 28, 28)


# ----------------------------------------------------------------------------- command line
def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--quick`` (a smoke run of about a minute, results marked quick) and ``--out`` (JSON path)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer repeats/steps; JSON is marked quick")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/<name>.json)")
    return parser.parse_args(argv)


def command_line() -> str:
    """How this script was invoked, relative to the repository root (for the JSON and the docs)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = str(script)
    return " ".join(["python", script_text, *sys.argv[1:]])


# ----------------------------------------------------------------------------- data and model
def mnist():
    """MNIST splits (8,000 train / 2,000 test), or exit with a message naming the expected folder."""
    from qcompile.data import load_dataset

    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists() and not (MNIST_DIR / "t10k-images-idx3-ubyte").exists():
        raise SystemExit(
            f"benchmark data missing: expected the MNIST test files (t10k-images-idx3-ubyte[.gz], "
            f"t10k-labels-idx1-ubyte[.gz]) in {MNIST_DIR} — the benchmarks read ../shared/data beside the checkout"
        )
    splits = load_dataset(f"mnist:{MNIST_DIR}")
    if (len(splits.train), len(splits.test)) != (8000, 2000):
        raise SystemExit(f"expected 8,000 train / 2,000 test images in {MNIST_DIR}, "
                         f"got {len(splits.train)} / {len(splits.test)} (train-* files present?)")
    return splits


def build_model(model_file: Path = MODEL_FILE):
    from qcompile.loading import load_model

    return load_model(f"{model_file}:build")


def weight_count(model) -> int:
    """Weights of the Conv/Linear layers (what gets quantized), biases and BatchNorm excluded."""
    from torch import nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)))


@dataclass(frozen=True)
class FloatRecipe:
    """How the float reference is trained (library loop, StandardStep, cosine schedule)."""

    epochs: int = 4
    lr: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 64
    seed: int = 0
    max_steps: int | None = None  # set only by --quick


FULL_FLOAT = FloatRecipe()
QUICK_FLOAT = FloatRecipe(epochs=1, max_steps=40)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def float_model(splits, recipe: FloatRecipe, log: Callable[[str], None] = print, model_file: Path = MODEL_FILE):
    """``(model in eval mode, info)``; trains ``model_file:build`` with ``recipe`` unless a matching checkpoint
    is cached.

    ``info``: ``{"recipe", "test_acc", "train_seconds", "cached", "checkpoint"}`` — ``train_seconds``
    is the time of the run that produced the checkpoint (possibly an earlier invocation).
    """
    import numpy as np
    import torch

    from qcompile.train import TrainConfig, finetune

    key_source = json.dumps({
        "recipe": asdict(recipe), "model": _file_digest(model_file), "torch": torch.__version__,
        "train": hashlib.sha256(np.ascontiguousarray(splits.train.x).tobytes()).hexdigest()[:16],
        "labels": hashlib.sha256(splits.train.y.tobytes()).hexdigest()[:16],
    }, sort_keys=True)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:12]
    weights, sidecar = CACHE_DIR / f"float-{key}.pt", CACHE_DIR / f"float-{key}.json"
    model = build_model(model_file)
    if weights.exists() and sidecar.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        info = json.loads(sidecar.read_text())
        log(f"float model: cached {weights.relative_to(REPO)} (test acc {100 * info['test_acc']:.2f}%)")
        return model.eval(), {**info, "cached": True}
    log(f"float model: training {recipe} (cached afterwards in {CACHE_DIR.relative_to(REPO)}/)")
    torch.manual_seed(recipe.seed)
    model = build_model(model_file)
    config = TrainConfig(epochs=recipe.epochs, lr=recipe.lr, optimizer=recipe.optimizer, batch_size=recipe.batch_size,
                         seed=recipe.seed, device="cpu", max_steps=recipe.max_steps, mean=splits.mean, std=splits.std)
    started = time.perf_counter()
    result = finetune(model, splits.train, splits.test, config, progress=sys.stderr.isatty())
    info = {"recipe": asdict(recipe), "test_acc": result.final_test_acc, "steps": result.steps,
            "train_seconds": time.perf_counter() - started, "load_after": load_average(),
            "checkpoint": str(weights.relative_to(REPO))}
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    sidecar.write_text(json.dumps(info, indent=2))
    log(f"float model: test acc {100 * info['test_acc']:.2f}% after {info['train_seconds']:.0f} s")
    return model.eval(), {**info, "cached": False}


def float_recipe(quick: bool) -> FloatRecipe:
    return QUICK_FLOAT if quick else FULL_FLOAT


# ----------------------------------------------------------------------------- machine and load
def load_average() -> list[float]:
    """1, 5 and 15-minute load averages (the machine's 2 cores are shared with other jobs)."""
    return [round(v, 2) for v in os.getloadavg()]


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average: {', '.join(map(str, load_average()))}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The ISA flags that decide which onnxruntime kernels run (AVX2, AVX-512, VNNI), from /proc/cpuinfo."""
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    present = set(flags.split(":", 1)[1].split())
    return [f for f in wanted if f in present]


def _git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "--short", "HEAD"),
                "library_files_modified": bool(git("status", "--porcelain", "--", "qcompile", "passes", "runtime"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def machine() -> dict[str, Any]:
    """CPU, core count, thread settings and versions of everything that affects the numbers."""
    import numpy
    import onnx
    import onnxruntime
    import torch

    import qcompile

    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__, "numpy": numpy.__version__, "qcompile": qcompile.__version__, **_git_commit(),
    }


# ----------------------------------------------------------------------------- statistics
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """25th and 75th percentiles (the spread reported next to a median)."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return float(q[0]), float(q[2])


def summary(values_ms: Sequence[float]) -> dict[str, float]:
    q1, q3 = quartiles(values_ms)
    return {"median_ms": median(values_ms), "q1_ms": q1, "q3_ms": q3, "min_ms": float(min(values_ms)),
            "samples": len(values_ms)}


# ----------------------------------------------------------------------------- output
def interleaved_rounds(runners: dict, inputs: dict, calls_per_round: dict, rounds: int) -> dict:
    """Latency of several contenders timed in turns: each round runs every contender (the order rotated by one
    each round) for ``calls_per_round[batch]`` calls at each batch size of ``inputs``.
    ``{(name, batch): {"round_medians": [ms per round], "calls": [ms per call]}}``."""
    names = list(runners)
    out = {(n, b): {"round_medians": [], "calls": []} for n in names for b in inputs}
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            for b in inputs:
                burst = []
                for _ in range(calls_per_round[b]):
                    start = time.perf_counter_ns()
                    runners[name](inputs[b])
                    burst.append((time.perf_counter_ns() - start) / 1e6)
                out[(name, b)]["calls"] += burst
                out[(name, b)]["round_medians"].append(median(burst))
    return out


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: float, goal: float) -> str:
    """``met (1.012 ≤ 1.03)`` or ``missed by 0.19 (1.22 > 1.03)``; lower is better."""
    if value <= goal:
        return f"met ({value:.3f} ≤ {goal})"
    return f"missed by {value - goal:.3f} ({value:.3f} > {goal})"


def write_results(name: str, args: argparse.Namespace, payload: dict[str, Any], started: float,
                  load_before: list[float]) -> Path:
    """Write ``benchmarks/results/<name>.json`` (atomically) with the run's context around ``payload``."""
    path = args.out or RESULTS_DIR / f"{name}.json"
    record = {
        "benchmark": name, "command": command_line(), "quick": bool(args.quick),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": machine(), "load_before": load_before, "load_after": load_average(), **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def finish(path: Path, render: Callable[[dict[str, Any]], str]) -> None:
    """Print the tables of the record at ``path`` (as written, via the script's ``render``) and where it is."""
    record = json.loads(path.read_text())
    print(render(record))
    shown = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
    print(f"\nload average before {record['load_before']}, after {record['load_after']}; written {shown}")


def compile_variant(model, splits, options: dict[str, Any]):
    """``qcompile.compile`` of the benchmark CNN with activation ranges calibrated on ``splits``, for the
    ``exact`` target unless ``options`` name one (the figures in docs/BENCHMARKS.md measure that path;
    ``compile``'s default, ``auto``, would pick ``ort-int8`` for the W2..8A8 STE rows on x86)."""
    import qcompile

    return qcompile.compile(model, input_shape=INPUT_SHAPE, data=splits, **{"target": "exact", **options})
