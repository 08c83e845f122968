"""MetaQuant vs STE on MNIST, with the controls the paper never ran.

    python benchmarks/metaquant_study.py [--jobs 2] [--epochs 6] [--seeds 3] [--quick] [--report-only]

Setup (the paper's CIFAR setup, Sec. 5.1, scaled down to two CPU cores):

* data: ../shared/data/mnist, first 8,000 train / last 2,000 test (``common.mnist``), no augmentation;
* model: ``benchmarks/metaquant_model.py:build`` (a BN ResNet: stem + 3 BasicBlocks with 1×1-conv
  downsample + GAP + FC, 19,464 weights), pretrained in float once (Adam 3e-3, cosine, 8 epochs,
  batch 64, seed 0, one torch thread) and cached under ``benchmarks/.cache/`` (outside git);
* quantization: 1-bit weights on every Conv/Linear (first conv, 1×1 downsample convs and the FC
  included), activations float, as in the paper; DoReFa (Ŵ = sign W, no scale) or BWN (α·sign W);
* every arm: the same number of iterations (``--epochs`` × 125 steps of batch 64), cosine lr
  schedule, weight decay 0, the same float start; seeds 0..n−1 change the data order and the
  meta-net's initialisation. MetaQuant runs with the plug-in's defaults (hidden 100, bias-free
  linear FC — with FC biases for MultiFC on BWN —, forward mode 'paper', meta Adam 1e-3 not decayed)
  except ``chunk_size=0`` (keep the meta-net graph instead of recomputing it — the same arithmetic,
  faster on CPU).

Arms (``ARMS``): {DoReFa, BWN} × {SGD lr 1e-3 no momentum, Adam lr 1e-3} × {STE, FC-Grad, MultiFC,
LSTMFC}; and the controls: STE-SGD at lr ×10, ×30 and ×100 (×100 was added after the first full
run showed ×30 still the best of the grid), STE-SGD lr 1e-3 with momentum 0.9 (both quantizers),
and BWN-STE without α in the gradient (SGD and Adam). That control is built with the API
(``method="ste", quantizer="bwn"``), then every compiled ``BWNQuantizer`` gets
``alpha_in_grad=False`` — a benchmark-side switch for a control arm, not a library option.
BWN-MultiFC runs twice: with the plug-in's default (FC biases on a sign-symmetric quantizer) and in
the paper's bias-free form (``bias=False``, folder suffix ``-bias-false``), which freezes every sign.

Two test accuracies per epoch: ``test_acc``, the library's evaluation (eval-mode BN with the running
statistics gathered during training — the paper's protocol), and ``bn_test_acc``, the same weights
after re-estimating BN statistics on 2,048 training images (:func:`bn_reestimated_accuracy`).

Every (arm, seed) run writes ``benchmarks/results/metaquant_runs/<arm>/seed<k>/history.json``
(``qcompile.run_dir.write_history``: per-epoch records, sampled MetaQuant step records, the accuracy
before training) as soon as it finishes, and a rerun skips runs whose file is complete: the study is
resumable. Then ``qcompile.report`` summarises each arm (final; mean ± std over the last k epochs of
every seed, pooled, as the paper reports; best epoch, selected on the test set as in the paper) and
draws one PNG per quantizer × optimizer and accuracy, plus the learned gain. The summary goes to
``benchmarks/results/metaquant_study.json`` (``python benchmarks/show.py PATH`` reprints its tables);
``qcompile report`` plots and summarises the same run directories.

``--quick``: 640 training images, 2 epochs, 1 seed, results under ``benchmarks/.cache/`` — a smoke
test of the whole pipeline, not a result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

MODEL_FILE = common.BENCH_DIR / "metaquant_model.py"
RUNS_DIR = common.RESULTS_DIR / "metaquant_runs"
QUICK_RUNS_DIR = common.CACHE_DIR / "metaquant_quick"
FIGURES = ("dorefa", "bwn"), ("sgd", "adam")
BATCH_SIZE = 64
BASE_LR = 1e-3
STEP_SAMPLE = 5  # keep every 5th MetaQuant step record (meta_gain, meta_loss) in history.json
BN_IMAGES = 2048  # training images used to re-estimate BN statistics for bn_test_acc
META_NAMES = {"fc-grad": "FC-Grad", "multifc": "MultiFC", "lstmfc": "LSTMFC"}
PAPER_MULTIFC = (("bias", False),)  # the paper's bias-free MultiFC, no longer the plug-in's default on BWN


@dataclass(frozen=True)
class FloatRecipe:
    epochs: int = 8
    lr: float = 3e-3
    optimizer: str = "adam"
    batch_size: int = 64
    seed: int = 0
    train_images: int | None = None  # --quick: a prefix of the training set


@dataclass(frozen=True)
class Arm:
    """One configuration; ``name`` is its folder, ``label`` its name in tables and plots."""

    quantizer: str  # dorefa | bwn
    optimizer: str  # sgd | adam
    meta: str | None = None  # None: STE; else fc-grad | multifc | lstmfc
    lr: float = BASE_LR
    momentum: float = 0.0
    alpha_in_grad: bool = True
    control: str | None = None  # what the control changes, for labels
    meta_options: tuple[tuple[str, Any], ...] = ()  # MetaQuant options beyond the plug-in's defaults

    @property
    def method(self) -> str:
        return "ste" if self.meta is None else "metaquant"

    @property
    def backward(self) -> str:
        return "STE" if self.meta is None else META_NAMES[self.meta]

    @property
    def name(self) -> str:
        parts = [self.quantizer, self.optimizer, "ste" if self.meta is None else self.meta.replace("-", "")]
        if self.lr != BASE_LR:
            parts.append(f"lr{self.lr:g}")
        if self.momentum:
            parts.append(f"mom{self.momentum:g}")
        if not self.alpha_in_grad:
            parts.append("noalpha")
        parts += [f"{key}-{str(value).lower()}" for key, value in self.meta_options]
        return "-".join(parts)

    @property
    def label(self) -> str:
        text = f"{self.quantizer} {self.optimizer} {self.backward}"
        return f"{text} ({self.control})" if self.control else text

    def cost(self) -> float:
        """Relative run time, for scheduling the longest runs first."""
        return {None: 1.0, "fc-grad": 1.2, "multifc": 1.2, "lstmfc": 6.0}[self.meta]


def build_arms() -> list[Arm]:
    arms = [Arm(q, o, meta) for q in ("dorefa", "bwn") for o in ("sgd", "adam")
            for meta in (None, "fc-grad", "multifc", "lstmfc")]
    for q in ("dorefa", "bwn"):
        arms += [Arm(q, "sgd", lr=f * BASE_LR, control=f"lr ×{f}") for f in (10, 30, 100)]
        arms.append(Arm(q, "sgd", momentum=0.9, control="momentum 0.9"))
    arms += [Arm("bwn", o, alpha_in_grad=False, control="no α in grad") for o in ("sgd", "adam")]
    arms += [Arm("bwn", o, "multifc", meta_options=PAPER_MULTIFC, control="paper form, no bias") for o in ("sgd", "adam")]
    return arms


ARMS = build_arms()


@dataclass(frozen=True)
class Plan:
    """What every run of this invocation shares."""

    epochs: int
    seeds: int
    last_k: int
    train_images: int | None
    runs_dir: str
    float_checkpoint: str
    threads: int = 1
    method_options: dict[str, Any] = field(default_factory=lambda: {"chunk_size": 0})


# ----------------------------------------------------------------------------- float model
def build_model():
    from qcompile.loading import load_model

    return load_model(f"{MODEL_FILE}:build")


def _subset(splits, n: int | None):
    if n is None:
        return splits
    from dataclasses import replace

    from qcompile.data import ArrayDataset

    return replace(splits, train=ArrayDataset(splits.train.x[:n], splits.train.y[:n]))


def float_checkpoint(splits, recipe: FloatRecipe, log=print) -> tuple[Path, dict[str, Any]]:
    """Train the float model with ``recipe`` unless a checkpoint with the same key is cached.

    (``common.float_model`` does the same for ``examples/mnist_cnn.py`` only; this is its
    counterpart for the study's ResNet.)"""
    import numpy as np
    import torch

    from qcompile.train import TrainConfig, finetune

    key_source = json.dumps({
        "recipe": asdict(recipe), "model": hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest(),
        "torch": torch.__version__,
        "train": hashlib.sha256(np.ascontiguousarray(splits.train.x).tobytes()).hexdigest()[:16],
    }, sort_keys=True)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:12]
    weights, sidecar = common.CACHE_DIR / f"metaquant-float-{key}.pt", common.CACHE_DIR / f"metaquant-float-{key}.json"
    if weights.exists() and sidecar.exists():
        info = json.loads(sidecar.read_text())
        log(f"float model: cached {weights.relative_to(common.REPO)} (test acc {100 * info['test_acc']:.2f}%)")
        return weights, {**info, "cached": True}
    log(f"float model: training {recipe}")
    torch.manual_seed(recipe.seed)
    model = build_model()
    train = _subset(splits, recipe.train_images)
    config = TrainConfig(epochs=recipe.epochs, lr=recipe.lr, optimizer=recipe.optimizer, batch_size=recipe.batch_size,
                         seed=recipe.seed, device="cpu", mean=splits.mean, std=splits.std)
    started = time.perf_counter()
    result = finetune(model, train.train, splits.test, config, progress=False)
    info = {"recipe": asdict(recipe), "test_acc": result.final_test_acc, "weights": common.weight_count(model),
            "train_seconds": round(time.perf_counter() - started, 1),
            "checkpoint": str(weights.relative_to(common.REPO))}
    common.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    sidecar.write_text(json.dumps(info, indent=2))
    log(f"float model: test acc {100 * info['test_acc']:.2f}% after {info['train_seconds']:.0f} s")
    return weights, {**info, "cached": False}


def gradient_scales(float_model) -> dict[str, dict[str, float]]:
    """Per quantized layer: BWN's α = mean|W| and the mean DoReFa calibration (1 − tanh²W)/max|tanh W|
    at the float start — the factors by which STE's W-gradient differs from MetaQuant's (MetaQuant's has neither)."""
    from torch import nn

    from qcompile.quantizers.dorefa import dorefa_calibration

    out = {}
    for name, m in float_model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            out[name] = {"weights": w.numel(), "bwn_alpha": float(w.abs().mean()),
                         "dorefa_calibration_mean": float(dorefa_calibration(w).mean()),
                         "max_abs_w": float(w.abs().max()), "share_abs_w_gt_1": float((w.abs() > 1).float().mean())}
    return out


# ----------------------------------------------------------------------------- one run
_SPLITS = None


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_dir(plan: Plan, arm: Arm, seed: int) -> Path:
    return Path(plan.runs_dir) / arm.name / f"seed{seed}"


def is_done(path: Path) -> bool:
    file = path / "history.json"
    if not file.is_file():
        return False
    try:
        return bool(json.loads(file.read_text()).get("complete"))
    except json.JSONDecodeError:
        return False


def disable_alpha_in_grad(graph_module) -> int:
    """The 'BWN-STE without α in the gradient' control: flip every compiled BWNQuantizer's flag."""
    from qcompile.quantizers.bwn import BWNQuantizer

    quantizers = [m for m in graph_module.modules() if isinstance(m, BWNQuantizer)]
    for q in quantizers:
        q.alpha_in_grad = False
    return len(quantizers)


def bn_reestimated_accuracy(model, splits, images: int = BN_IMAGES) -> float:
    """Test accuracy of a copy of ``model`` whose BatchNorm statistics are re-estimated (plain average,
    train-mode forward under no_grad) on the first ``images`` training images; ``model`` is untouched.

    Why: eval-mode BN uses running averages (momentum 0.1) gathered while the 1-bit weights were
    still flipping, and on this short schedule that lag, not the weights, decides much of the test
    accuracy (the train accuracy of the same epoch is smooth while the test accuracy jumps by tens of
    points). The re-estimated number measures the quantized weights themselves; both are reported."""
    import copy

    import torch
    from torch import nn

    from qcompile.train import Batches, evaluate

    probe = copy.deepcopy(model)
    for m in probe.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    probe.train()
    device = next(probe.parameters()).device
    head = _subset(splits, images).train
    with torch.no_grad():
        for inputs, _ in Batches(head, 256, device, splits.mean, splits.std).in_order():
            probe(inputs)
    return evaluate(probe, splits.test, mean=splits.mean, std=splits.std)["acc"]


def train_one(plan: Plan, arm: Arm, seed: int, strategy_factory=None) -> dict[str, Any]:
    """Compile, evaluate the binarised start, finetune, write history.json; returns a short summary.

    Training is ``qcompile.train.finetune`` with the method's own step strategy — exactly what
    ``CompiledModel.finetune`` runs (there are no activation quantizers to calibrate or freeze here)
    — plus one epoch-end callback that records ``bn_test_acc`` (:func:`bn_reestimated_accuracy`).
    ``strategy_factory(method)`` replaces ``method.step_strategy()`` for a benchmark-side variant."""
    global _SPLITS
    import torch

    import qcompile
    from qcompile.run_dir import write_history
    from qcompile.train import TrainConfig, finetune

    torch.set_num_threads(plan.threads)
    if _SPLITS is None:
        _SPLITS = _subset(common.mnist(), plan.train_images)
    splits = _SPLITS
    model = build_model()
    model.load_state_dict(torch.load(plan.float_checkpoint, map_location="cpu", weights_only=True))
    options = {"meta": arm.meta, **plan.method_options, **dict(arm.meta_options)} if arm.meta else None
    cm = qcompile.compile(model.eval(), input_shape=common.INPUT_SHAPE, method=arm.method, quantizer=arm.quantizer,
                          w_bits=1, a_bits=None, method_options=options)
    if not arm.alpha_in_grad and disable_alpha_in_grad(cm.graph_module) == 0:
        raise RuntimeError(f"{arm.name}: no BWNQuantizer found to switch off alpha_in_grad")
    initial = {"test_acc": cm.evaluate(splits), "bn_test_acc": bn_reestimated_accuracy(cm.graph_module, splits)}
    config = TrainConfig(epochs=plan.epochs, lr=arm.lr, optimizer=arm.optimizer, momentum=arm.momentum,
                         batch_size=BATCH_SIZE, schedule="cosine", seed=seed, device="cpu",
                         mean=splits.mean, std=splits.std)
    bn_acc: dict[int, float] = {}

    def probe(event: str, state) -> None:
        if event == "epoch_end":
            bn_acc[state.epoch] = bn_reestimated_accuracy(state.model, splits)

    started = time.perf_counter()
    strategy = strategy_factory(cm.method) if strategy_factory is not None else cm.method.step_strategy()
    result = finetune(cm.graph_module, splits.train, splits.test, config, strategy=strategy,
                      progress=False, callbacks=(probe,))
    seconds = time.perf_counter() - started
    history = [{**record, "bn_test_acc": bn_acc.get(record["epoch"])} for record in result.history]
    steps = [r for r in result.step_records if r["step"] % STEP_SAMPLE == 0 or r["step"] == result.steps]
    path = run_dir(plan, arm, seed)
    write_history(path, history, label=arm.label, arm=asdict(arm), arm_name=arm.name, seed=seed,
                  initial=initial, train_seconds=round(seconds, 2), steps_total=result.steps,
                  threads=plan.threads, method_options=options, steps=steps, complete=bool(result.completed),
                  load_after=common.load_average())
    return {"arm": arm.name, "seed": seed, "final": result.final_test_acc, "final_bn": history[-1]["bn_test_acc"],
            "seconds": seconds}


# ----------------------------------------------------------------------------- the study
def run_all(plan: Plan, arms: list[Arm], jobs: int, log=print) -> None:
    todo = [(arm, seed) for seed in range(plan.seeds) for arm in arms if not is_done(run_dir(plan, arm, seed))]
    todo.sort(key=lambda t: (-t[0].cost(), t[1]))  # longest first: the two cores finish together
    skipped = len(arms) * plan.seeds - len(todo)
    log(f"{len(todo)} runs to do ({skipped} already complete, skipped), {jobs} job(s)")
    if not todo:
        return
    started = time.perf_counter()

    def report(i: int, summary: dict[str, Any]) -> None:
        log(f"[{i}/{len(todo)}] {summary['arm']} seed {summary['seed']}: final {100 * summary['final']:.2f}% "
            f"(BN re-estimated {100 * summary['final_bn']:.2f}%) "
            f"in {summary['seconds']:.0f} s (elapsed {time.perf_counter() - started:.0f} s, "
            f"load {common.load_average()})")

    if jobs <= 1:
        for i, (arm, seed) in enumerate(todo, 1):
            report(i, train_one(plan, arm, seed))
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(plan.threads,)) as pool:
        futures = [pool.submit(train_one, plan, arm, seed) for arm, seed in todo]
        for i, future in enumerate(as_completed(futures), 1):
            report(i, future.result())


def load_runs(plan: Plan, arm: Arm) -> list[dict[str, Any]]:
    runs = []
    for seed in range(plan.seeds):
        path = run_dir(plan, arm, seed) / "history.json"
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("complete"):
                runs.append(data)
    return runs


METRICS = {
    "bn_test_acc": "test accuracy after BN re-estimation",
    "test_acc": "test accuracy, BN running statistics as trained (the paper's protocol)",
}


def summarise_arms(plan: Plan, arms: list[Arm]) -> list[dict[str, Any]]:
    """Per arm with complete runs: ``qcompile.report.summarise`` of both accuracies, plus context."""
    from qcompile.report import summarise

    rows = []
    for arm in arms:
        runs = load_runs(plan, arm)
        if not runs:
            continue
        row: dict[str, Any] = {"arm": arm.name, "label": arm.label, "config": asdict(arm), "runs": len(runs),
                               "seeds": [r["seed"] for r in runs]}
        for metric in METRICS:
            (row[metric],) = summarise({arm.label: [r["history"] for r in runs]}, metric, last_k=plan.last_k)
            row[f"initial_{metric}"] = common.median([r["initial"][metric] for r in runs])
        row["run_seconds"] = common.median([r["train_seconds"] for r in runs])
        last_steps = [r["steps"][-1] for r in runs if r.get("steps")]
        for key in ("meta_gain", "meta_offset"):
            row[f"final_{key}"] = [step[key] for step in last_steps if key in step] or None
        if all("code_flip_rate" in record for r in runs for record in r["history"]):  # runs since the loop records it
            row["code_flip_rate"] = [[record["code_flip_rate"] for record in r["history"]] for r in runs]
            row["flagged_epochs"] = [sum(1 for record in r["history"] if record.get("warning")) for r in runs]
        rows.append(row)
    return rows


def _pct(stats: dict[str, Any]) -> str:
    return "—" if stats.get("mean") is None else f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def tables(rows: list[dict[str, Any]], last_k: int) -> str:
    """The markdown the doc quotes: a quantizer × optimizer grid per metric, every arm, and the starts."""
    by_name = {r["arm"]: r for r in rows}
    out = []
    for metric, title in METRICS.items():
        def last(q: str, o: str, meta: str | None) -> str:
            row = by_name.get(Arm(q, o, meta).name)
            return _pct(row[metric]["last_k"]) if row else "—"

        grid = [[q, o] + [last(q, o, m) for m in (None, "fc-grad", "multifc", "lstmfc")]
                for q in ("dorefa", "bwn") for o in ("sgd", "adam")]
        out += [f"**{title}** (%), mean ± std over the last {last_k} epochs of every seed, pooled:", "",
                common.markdown_table(["quantizer", "optimizer", "STE", "FC-Grad", "MultiFC", "LSTMFC"], grid), ""]

    def best(s: dict[str, Any]) -> str:
        return f"{100 * s['best']['mean']:.2f} ({100 * s['best']['overall']:.2f})"

    detail = []
    for r in rows:
        s, c = r["bn_test_acc"], r["config"]
        ste = by_name.get(Arm(c["quantizer"], c["optimizer"]).name)
        delta = (f"{100 * (s['last_k']['mean'] - ste['bn_test_acc']['last_k']['mean']):+.2f}"
                 if ste and ste is not r else "")
        detail.append([r["label"], r["runs"], _pct(s["final"]), _pct(s["last_k"]), delta, best(s),
                       _pct(r["test_acc"]["last_k"]), best(r["test_acc"])])
    out += [f"Every arm (%). BN re-estimated: final (mean ± std over seeds), last-{last_k} (pooled), its "
            f"difference to STE at lr 1e-3 with the same quantizer and optimizer, best epoch (mean over seeds, "
            f"max; selected on the test set); then the running-BN last-{last_k} and best:", "",
            common.markdown_table(["arm", "seeds", "final", f"last-{last_k}", f"Δ last-{last_k} vs STE", "best",
                                   f"running BN: last-{last_k}", "running BN: best"], detail), ""]
    runs = [[r["label"], f"{100 * r['initial_test_acc']:.1f}", f"{100 * r['initial_bn_test_acc']:.1f}",
             f"{r['run_seconds']:.0f}", _gains(r)] for r in rows]
    out += ["Start (binarised float model, before training; median over seeds), run time and learned gain:", "",
            common.markdown_table(["arm", "start acc (running BN)", "start acc (BN re-estimated)",
                                   "seconds per run (median)", "final gain c (offset d) per seed"], runs)]
    flips = [r for r in rows if r.get("code_flip_rate")]
    if flips:
        epochs = max(len(seed) for r in flips for seed in r["code_flip_rate"])
        body = [[r["label"]] + [_spread([seed[e] for seed in r["code_flip_rate"] if e < len(seed)])
                                for e in range(epochs)] + [", ".join(map(str, r["flagged_epochs"]))] for r in flips]
        out += ["", "Code flip rate (% of the weight codes changed by the epoch; mean over seeds [min–max]) and the "
                "epochs the frozen-codes guard flagged, per seed:", "",
                common.markdown_table(["arm"] + [f"epoch {e + 1}" for e in range(epochs)] + ["flagged epochs"], body)]
    return "\n".join(out)


def _gains(row: dict[str, Any]) -> str:
    """``c`` per seed, or ``c (d)`` when the meta-net has biases."""
    gains, offsets = row.get("final_meta_gain") or [], row.get("final_meta_offset") or []
    if offsets:
        return ", ".join(f"{c:.2f} ({d:.2f})" for c, d in zip(gains, offsets))
    return ", ".join(f"{c:.2f}" for c in gains)


def _spread(values: list[float]) -> str:
    return f"{100 * sum(values) / len(values):.3g} [{100 * min(values):.3g}–{100 * max(values):.3g}]"


def small_png(path: Path) -> Path:
    """Re-save a figure with a 256-colour palette (well under half the bytes; the curves are flat colours)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256)
    small.save(path, optimize=True)
    return path


def figures(plan: Plan, arms: list[Arm], out_dir: Path) -> list[Path]:
    """Per quantizer × optimizer and metric, the curves of every arm; and the learned gain over steps."""
    from qcompile.report import plot_curves

    paths = []
    for q in FIGURES[0]:
        for o in FIGURES[1]:
            groups = {arm.label: [r["history"] for r in load_runs(plan, arm)]
                      for arm in arms if arm.quantizer == q and arm.optimizer == o}
            groups = {label: runs for label, runs in groups.items() if runs}
            for metric, suffix in (("bn_test_acc", ""), ("test_acc", "_runningbn")):
                if groups:
                    kind = "BN re-estimated" if metric == "bn_test_acc" else "running BN"
                    title = f"1-bit {q}, {o}: test acc ({kind}); mean, min–max over seeds"
                    paths.append(small_png(plot_curves(groups, out_dir / f"metaquant_{q}_{o}{suffix}.png", metric,
                                                       title=title)))
    gain_groups = {}
    for arm in arms:
        if arm.meta in ("fc-grad", "multifc"):
            runs = [r for r in load_runs(plan, arm) if r.get("steps")]
            if runs:
                gain_groups[arm.label] = [r["steps"] for r in runs]
    if gain_groups:
        title = "learned linear gain c of FC-Grad / MultiFC (mean, min–max over seeds)"
        paths.append(small_png(plot_curves(gain_groups, out_dir / "metaquant_gain.png", "meta_gain", title=title)))
    flip_groups = {arm.label: [r["history"] for r in load_runs(plan, arm)] for arm in arms}
    flip_groups = {label: runs for label, runs in flip_groups.items()
                   if runs and all("code_flip_rate" in record for h in runs for record in h)}
    if flip_groups:
        title = "code flip rate per epoch (mean, min–max over seeds)"
        paths.append(small_png(plot_curves(flip_groups, out_dir / "metaquant_code_flip_rate.png", "code_flip_rate",
                                           title=title)))
    return paths


def render(record: dict[str, Any]) -> str:
    """The tables of a recorded run (what ``benchmarks/show.py`` prints)."""
    return record["markdown"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run (640 images, 2 epochs, 1 seed) under benchmarks/.cache/")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one torch thread each (default 2)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of 125 steps per run (default 6)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    p.add_argument("--last-k", type=int, default=3, help="epochs pooled in the last-k statistic (default 3)")
    p.add_argument("--only", default=None, help="run only arms whose folder name contains this text")
    p.add_argument("--report-only", action="store_true", help="summarise and plot the runs on disk; train nothing")
    p.add_argument("--out", type=Path, default=None,
                   help="summary JSON (default benchmarks/results/metaquant_study.json)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    # One torch thread in this process too: every run uses one (Plan.threads), and the float model's last
    # bits depend on the thread count (trained with 2 threads it scores 98.85 % instead of 98.95 %).
    torch.set_num_threads(1)
    started, load_before = time.perf_counter(), common.load_average()
    if args.quick:
        args.epochs, args.seeds, args.last_k = 2, 1, 1
    splits = common.mnist()
    recipe = FloatRecipe(epochs=1, train_images=640) if args.quick else FloatRecipe()
    weights, float_info = float_checkpoint(splits, recipe)
    plan = Plan(epochs=args.epochs, seeds=args.seeds, last_k=args.last_k, train_images=640 if args.quick else None,
                runs_dir=str(QUICK_RUNS_DIR if args.quick else RUNS_DIR), float_checkpoint=str(weights))
    arms = [a for a in ARMS if args.only is None or args.only in a.name]
    print(f"{len(arms)} arms × {plan.seeds} seeds, {plan.epochs} epochs of {-(-8000 // BATCH_SIZE)} steps; "
          f"runs in {plan.runs_dir}; load {load_before}")
    if not args.report_only:
        run_all(plan, arms, args.jobs)
    rows = summarise_arms(plan, arms)
    markdown = tables(rows, plan.last_k)
    print(markdown)
    figure_dir = (QUICK_RUNS_DIR if args.quick else common.RESULTS_DIR)
    pngs = figures(plan, arms, figure_dir)
    model = build_model()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    args.out = args.out or (QUICK_RUNS_DIR / "metaquant_study.json" if args.quick else None)
    path = common.write_results("metaquant_study", args, {
        "plan": asdict(plan), "float": float_info, "weights": common.weight_count(model),
        "gradient_scales": gradient_scales(model), "jobs": args.jobs,
        "arms": rows, "figures": [str(p.relative_to(common.REPO)) for p in pngs],
        "markdown": markdown,
    }, started, load_before)
    print(f"\nwrote {path.relative_to(common.REPO)} and {len(pngs)} figure(s) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
