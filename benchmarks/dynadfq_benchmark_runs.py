"""The runs of ``dynadfq_benchmark.py``: the pools, the run list, one cached compile + fine-tune + ORT score.

Pools (``POOLS``; all 512 images, 200 Adam steps per batch of 256 at lr 0.5, seed 0, from the float model):

- ``noise``   — (b) Gaussian noise: N(0, 1) in the model's input space, clipped to the image range;
- ``bn``      — (c) BN-statistics matching only (``--ce-weight 0``, ZeroQ-like);
- ``onehot``  — (d) BN statistics + one-hot cross-entropy (``--hard-fraction 0``);
- ``dynadfq`` — (e) the DynaDFQ pool (similar-class soft labels on half the images, the defaults);
- ``random``  — the ablation of (e): soft-label mass over K random classes (``--groups random``).

(b) and (c) have no class the images were made for, so they are labelled with the float model's arg-max.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import common

STEPS, LR, KD_ALPHA, BATCH = 200, 1e-4, 0.5, 64
POOL_IMAGES, POOL_BATCH, POOL_STEPS = 512, 256, 200
POOLS = {"noise": None, "dynadfq": {}, "onehot": {"labels": {"hard_fraction": 0.0}}, "bn": {"ce_weight": 0.0},
         "random": {"labels": {"groups": "random"}}}
SOURCES = ("real", "noise", "bn", "onehot", "dynadfq")
WIDTHS = {"W4A4": (4, 4), "W3A3": (3, 3), "W2A4": (2, 4), "W2A2": (2, 2)}
# (target T, λ) of the selector over {2,3,4}: four regulariser settings on pool (e)
SELECTOR_SETTINGS = ((2.5, 10.0), (3.0, 10.0), (3.5, 10.0), (3.0, 1.0))
RESULTS = common.RESULTS_DIR / "dynadfq_benchmark"


@dataclass(frozen=True)
class Run:
    """One compile: ``source`` ('real' or a pool), ``widths`` (a WIDTHS key or 'dyn'), seed, selector setting."""

    source: str
    widths: str
    seed: int
    target: float | None = None
    weight: float | None = None
    hidden: int | None = None  # the selector's hidden width (None: the default, 32)

    @property
    def key(self) -> str:
        sel = "" if self.target is None else f"-T{self.target:g}-l{self.weight:g}"
        sel += "" if self.hidden is None else f"-h{self.hidden}"
        return f"{self.source}-{self.widths}{sel}-s{self.seed}"


def arm_runs(seeds: tuple[int, ...]) -> list[Run]:
    return [Run(s, w, seed) for w in ("W4A4", "W3A3", "W2A4") for s in SOURCES for seed in seeds]


def dynamic_runs(seeds: tuple[int, ...]) -> list[Run]:
    runs = [Run("dynadfq", "W2A2", seed) for seed in seeds]
    runs += [Run("dynadfq", "dyn", seed, t, lam) for seed in seeds for t, lam in SELECTOR_SETTINGS]
    runs += [Run(pool, "dyn", seed, 3.0, 10.0) for pool in ("onehot", "random") for seed in seeds]
    runs += [Run("dynadfq", "dyn", seed, 3.0, 10.0, hidden) for hidden in (8, 4) for seed in seeds]
    return runs


@dataclass
class Setup:
    quick: bool
    splits: Any
    weights: Path
    float_acc: float
    cache: Path = field(default=Path())
    results: Path = field(default=Path())

    @classmethod
    def create(cls, quick: bool = False) -> Setup:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        splits = common.mnist()
        _, info = common.float_model(splits, common.float_recipe(quick))
        cache = common.CACHE_DIR / ("dynadfq_benchmark_quick" if quick else "dynadfq_benchmark")
        results = RESULTS.with_name(RESULTS.name + "_quick") if quick else RESULTS
        cache.mkdir(parents=True, exist_ok=True)
        results.mkdir(parents=True, exist_ok=True)
        return cls(quick, splits, common.REPO / info["checkpoint"], info["test_acc"], cache, results)

    @property
    def norm(self) -> tuple[float, float]:
        return float(self.splits.mean[0]), float(self.splits.std[0])

    def pool_path(self, name: str) -> Path:
        return self.cache / f"pool-{name}.npz"

    def test_inputs(self) -> np.ndarray:
        mean, std = self.norm
        return ((self.splits.test.x - mean) / std).astype(np.float32)


# ----------------------------------------------------------------------------- pools
def make_pools(setup: Setup) -> None:
    for name, options in POOLS.items():
        path = setup.pool_path(name)
        if path.exists():
            print(f"pool {name}: cached {path}", flush=True)
            continue
        started = time.perf_counter()
        pool = _noise_pool(setup) if options is None else _synthesised(setup, options)
        if name in ("noise", "bn"):
            pool = _predicted_labels(setup, pool)
        from qcompile.synthesis import save_pool, write_preview

        save_pool(pool, path)
        seconds = time.perf_counter() - started
        record = {"pool": name, "seconds": round(seconds, 1), "load_after": common.load_average(),
                  "options": options, "summary": pool.summary(), "machine": common.machine()}
        (setup.results / f"pool-{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        if name == "dynadfq" and not setup.quick:
            _small_preview(write_preview(pool, setup.cache / "preview.png"), common.RESULTS_DIR / "dynadfq_pool_preview.png")
        print(f"pool {name}: {seconds:.0f} s, {pool.summary()}", flush=True)


def _small_preview(full: Path, out: Path) -> None:
    """``qcompile synthesize --preview``'s grid (the same function) at 3/4 size, grey, 16 levels: ~80 kB to commit."""
    from PIL import Image

    image = Image.open(full).convert("L")
    image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS).quantize(16).save(out, optimize=True)


def _config(setup: Setup, options: dict):
    from qcompile.synthesis.config import SynthesisConfig
    from qcompile.synthesis.labels import SoftLabelConfig

    sizes = (40, 20, 5) if setup.quick else (POOL_IMAGES, POOL_BATCH, POOL_STEPS)
    labels = SoftLabelConfig(**options.get("labels", {}))
    rest = {k: v for k, v in options.items() if k != "labels"}
    return SynthesisConfig(images=sizes[0], batch_size=sizes[1], steps=sizes[2], labels=labels, **rest)


def _float(setup: Setup):
    import torch

    model = common.build_model()
    model.load_state_dict(torch.load(setup.weights, map_location="cpu", weights_only=True))
    return model.eval()


def _synthesised(setup: Setup, options: dict):
    from qcompile.synthesis import synthesize

    mean, std = setup.norm
    return synthesize(_float(setup), common.INPUT_SHAPE[1:], _config(setup, options), mean=(mean,), std=(std,),
                      device="cpu", provenance={"benchmark": "dynadfq_benchmark"})


def _noise_pool(setup: Setup):
    """Arm (b): the pool's fields from N(0, 1) inputs (labels set from predictions afterwards)."""
    import torch

    from qcompile.synthesis.pool import SyntheticPool

    mean, std = setup.norm
    n = _config(setup, {}).images
    x = torch.randn((n, *common.INPUT_SHAPE[1:]), generator=torch.Generator().manual_seed(0))
    images = np.clip(x.numpy() * std + mean, 0.0, 1.0).astype(np.float32)
    zeros = np.zeros(n, np.float32)
    return SyntheticPool(images, np.zeros((n, 10), np.float32), np.zeros(n, np.int64), np.zeros(n, bool), zeros,
                         zeros, zeros, np.zeros(n, np.int64), (mean,), (std,), [str(c) for c in range(10)],
                         {"benchmark": "dynadfq_benchmark", "source": "gaussian noise N(0,1), clipped to [0,1]"})


def _predicted_labels(setup: Setup, pool):
    """Anchors and one-hot labels from the float model's predictions (the pool has no classes of its own)."""
    import torch

    from qcompile.synthesis.labels import entropy

    x = torch.from_numpy((pool.images - pool.mean[0]) / pool.std[0])
    with torch.no_grad():
        p = torch.softmax(_float(setup)(x), dim=1)
    pred = p.argmax(dim=1).numpy().astype(np.int64)
    n = len(pred)
    return replace(pool, labels=np.eye(10, dtype=np.float32)[pred], anchors=pred, hard=np.zeros(n, bool),
                   eps=np.zeros(n, np.float32), label_entropy=np.zeros(n, np.float32),
                   pred_entropy=entropy(p).numpy(), pred_class=pred)


# ----------------------------------------------------------------------------- runs
def run_all(setup: Setup, todo: list[Run], only: str | None) -> None:
    wanted = None if only is None else tuple(only.split(","))
    for run in todo:
        if wanted is not None and not run.key.startswith(wanted):
            continue
        path = setup.results / f"{run.key}.json"
        if path.exists():
            continue
        started = time.perf_counter()
        record = run_one(setup, run)
        record.update(seconds=round(time.perf_counter() - started, 1), load_after=common.load_average(),
                      commit=common.machine().get("commit"))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
        print(f"{run.key}: acc {100 * record['accuracy']:.2f} % at {record['mean_bitops'] / 1e6:.1f} MBitOPs "
              f"({record['seconds']:.0f} s)", flush=True)


def run_one(setup: Setup, run: Run) -> dict[str, Any]:
    import torch

    import qcompile
    from qcompile.methods.dynadfq import bitops, layer_costs

    mean, std = setup.norm
    dynamic = run.widths == "dyn"
    options: dict[str, Any] = {"bits": "2,3,4" if dynamic else str(WIDTHS[run.widths][0])}
    if dynamic:
        options.update(target_bitops=run.target, bit_weight=run.weight)
        if run.hidden is not None:
            options["selector_hidden"] = run.hidden
    a_bits = 4 if dynamic else WIDTHS[run.widths][1]
    data = setup.splits if run.source == "real" else None
    if data is None:
        options["pool"] = str(setup.pool_path(run.source))
    torch.manual_seed(run.seed)
    cm = qcompile.compile(common.MODEL_SPEC, weights=setup.weights, input_shape=common.INPUT_SHAPE, method="dynadfq",
                          a_bits=a_bits, method_options=options, data=data, mean=(mean,), std=(std,))
    steps = 5 if setup.quick else STEPS
    per_epoch = -(-len(cm.use_data(None).train) // BATCH)
    result = cm.finetune(epochs=-(-steps // per_epoch), max_steps=steps, lr=LR, optimizer="adam", kd_alpha=KD_ALPHA,
                         batch_size=BATCH, seed=run.seed, progress=False)
    out = setup.cache / (f"{run.key}.qcz" if dynamic else f"{run.key}.onnx")
    report = cm.export(out)
    record = {"run": asdict(run), "key": run.key, "options": options, "a_bits": a_bits, "steps": result.steps,
              "file_bytes": report.file_bytes, "train_data_acc": result.history[-1].get("test_acc") if result.history
              else None}
    record.update(_score(setup, out, run, dynamic))
    if not dynamic:
        record["mean_bitops"] = float(bitops(layer_costs(cm.inspect()["sites"])))
    return record


def _score(setup: Setup, path: Path, run: Run, dynamic: bool) -> dict[str, Any]:
    """Accuracy in onnxruntime on the 2,000 test images; per-image predictions (and widths) to the cache."""
    from qcompile.runtime import load

    session = load(path, providers="cpu", intra_op_threads=1)
    x, y = setup.test_inputs(), setup.splits.test.y
    logits = session.predict(x, batch_size=256)
    arrays = {"pred": logits.argmax(axis=1)}
    record: dict[str, Any] = {"accuracy": float((arrays["pred"] == y).mean())}
    if dynamic:
        arrays["widths"] = session.last_widths
        record.update(session.dispatch_report())
        arrays["bitops"] = session.bitops(arrays["widths"])
        layers = len(session.layer_names)
        for name, index in (("all_min", 0), ("all_max", len(session.candidates) - 1)):
            config = np.full(layers, index, np.int64)
            arrays[f"pred_{name}"] = np.concatenate([session.run_config(x[i:i + 256], config).argmax(axis=1)
                                                    for i in range(0, len(x), 256)])
        arrays["pred_shuffled"] = _shuffled(session, x, arrays["widths"])
        record["static_configs_same_weights"] = {name: float((arrays[f"pred_{name}"] == y).mean())
                                                 for name in ("all_min", "all_max")}
        record["shuffled_configs_accuracy"] = float((arrays["pred_shuffled"] == y).mean())
    np.savez(setup.cache / f"{run.key}.npz", **arrays)
    return record


def _shuffled(session, x: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Predictions with the selector's per-image configurations permuted over the images (seed 0): the same
    BitOPs distribution, assigned blindly — what the selector's choice of *which* image is worth."""
    indices = np.searchsorted(session.candidates, widths)[np.random.default_rng(0).permutation(len(x))]
    configs, group = np.unique(indices, axis=0, return_inverse=True)
    pred = np.empty(len(x), np.int64)
    for g, config in enumerate(configs):
        rows = np.flatnonzero(group.reshape(-1) == g)
        pred[rows] = session.run_config(x[rows], config).argmax(axis=1)
    return pred
