"""How MultiFC should read a sign-symmetric W̃: the measurement behind MetaQuant's BWN default.

    python benchmarks/metaquant_bwn_form.py [--epochs 6] [--seeds 3] [--report-only]

The paper's bias-free linear MultiFC freezes every sign on BWN (W̃ = W; see
``qcompile/methods/metaquant/options.py``). Two fixes were proposed, both giving the meta-net's gate
a non-zero value at W = 0:

* ``bias``: FC biases, M(W̃) = c·W̃ + d (the plug-in's ``bias=True``);
* ``centred``: the paper's bias-free M fed W̃/(2·max|W̃|) + ½ per layer — DoReFa's range, where
  MultiFC works — implemented here, benchmark-side (:class:`CentredInputStep`), since it only
  changes the meta-net's input.

They are compared on a **validation split, never on the study's test set**: the study's 8,000
training images are split into the first 6,000 (training, and a float model pretrained on them
alone) and the last 2,000 (validation); seeds 10, 11, 12 (not the study's 0–2); otherwise the
study's setup (``metaquant_study.py``: 1-bit BWN on every Conv/Linear, 6 epochs, batch 64, cosine,
lr 1e-3, SGD and Adam, ``chunk_size=0``). The metric is validation accuracy after BN re-estimation,
the last 3 epochs of every seed pooled. Runs go to ``benchmarks/results/metaquant_bwn_form/``
(resumable), the summary to ``benchmarks/results/metaquant_bwn_form.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import metaquant_study as study  # noqa: E402

RUNS_DIR = common.RESULTS_DIR / "metaquant_bwn_form"
TRAIN_IMAGES = 6000
SEEDS = (10, 11, 12)
CANDIDATES = {"bias": (("bias", True),), "centred": (("bias", False),)}


def make_centred_step(method):
    """The ``centred`` candidate: the method's MetaQuant step with MultiFC fed W̃/(2·max|W̃|) + ½."""
    import warnings

    from qcompile.methods.metaquant import MetaQuantStep, MetaQuantWarning

    class CentredInputStep(MetaQuantStep):
        """Re-centres each layer's W̃ for the meta-net only (the forward and the quantizer are unchanged).

        The max is over the whole layer, so this needs ``chunk_size=0`` (one meta-net call per layer).
        The bias-free MultiFC on BWN no longer freezes signs here, so the plug-in's warning is silenced."""

        def setup(self, model, config):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MetaQuantWarning)
                super().setup(model, config)
            self.freezes_signs = False

        def _meta_gradients(self):
            if self.options.chunk_size != 0:
                raise ValueError("the centred candidate needs chunk_size=0")
            raw = {}
            for name, _, q in self.layers:
                if q.w_tilde is not None:
                    raw[name] = q.w_tilde
                    q.w_tilde = q.w_tilde / (2 * q.w_tilde.abs().max().clamp_min(1e-12)) + 0.5
            try:
                return super()._meta_gradients()
            finally:
                for name, _, q in self.layers:
                    if name in raw:
                        q.w_tilde = raw[name]

    return CentredInputStep(method.settings)


def validation_splits():
    """The study's training images, split 6,000 (train) / 2,000 (validation, in the ``test`` slot)."""
    from qcompile.data import ArrayDataset

    splits = common.mnist()
    x, y = splits.train.x, splits.train.y
    return replace(splits, train=ArrayDataset(x[:TRAIN_IMAGES], y[:TRAIN_IMAGES]),
                   test=ArrayDataset(x[TRAIN_IMAGES:], y[TRAIN_IMAGES:]))


def arms() -> list[tuple[str, study.Arm]]:
    return [(candidate, study.Arm("bwn", optimizer, "multifc", meta_options=options, control=candidate))
            for candidate, options in CANDIDATES.items() for optimizer in ("sgd", "adam")]


def candidate_plan(plan: study.Plan, candidate: str) -> study.Plan:
    """One runs folder per candidate (the arms' names do not say how the meta-net's input is read)."""
    return replace(plan, runs_dir=str(Path(plan.runs_dir) / candidate))


def summarise(plan: study.Plan, last_k: int) -> list[dict]:
    from qcompile.report import summarise as summarise_metric

    rows = []
    for candidate, arm in arms():
        folders = [study.run_dir(candidate_plan(plan, candidate), arm, seed) for seed in SEEDS]
        runs = [json.loads((f / "history.json").read_text()) for f in folders if study.is_done(f)]
        if not runs:
            continue
        row = {"candidate": candidate, "optimizer": arm.optimizer, "arm": arm.name, "seeds": [r["seed"] for r in runs]}
        for metric in ("bn_test_acc", "test_acc", "train_loss"):
            (row[metric],) = summarise_metric({arm.label: [r["history"] for r in runs]}, metric, last_k=last_k)
        rows.append(row)
    return rows


def table(rows: list[dict], last_k: int) -> str:
    def pct(s):
        return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"

    body = [[r["candidate"], r["optimizer"], len(r["seeds"]), pct(r["bn_test_acc"]["last_k"]),
             pct(r["bn_test_acc"]["final"]), pct(r["test_acc"]["last_k"]),
             f"{r['train_loss']['last_k']['mean']:.3f}"] for r in rows]
    return common.markdown_table(
        ["candidate", "optimizer", "seeds", f"val acc, BN re-estimated: last-{last_k}", "final",
         f"val acc, running BN: last-{last_k}", f"train loss last-{last_k}"], body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--last-k", type=int, default=3)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # the float model too: one thread per process, like every study run
    started, load_before = time.perf_counter(), common.load_average()
    splits = validation_splits()
    study._SPLITS = splits  # train_one trains on these and evaluates on the validation images
    weights, float_info = study.float_checkpoint(splits, study.FloatRecipe())
    plan = study.Plan(epochs=args.epochs, seeds=max(SEEDS) + 1, last_k=args.last_k, train_images=None,
                      runs_dir=str(RUNS_DIR), float_checkpoint=str(weights))
    if not args.report_only:
        for candidate, arm in arms():
            for seed in SEEDS:
                run_plan = candidate_plan(plan, candidate)
                if study.is_done(study.run_dir(run_plan, arm, seed)):
                    continue
                factory = make_centred_step if candidate == "centred" else None
                summary = study.train_one(run_plan, arm, seed, strategy_factory=factory)
                print(f"{arm.name} ({candidate}) seed {seed}: val {100 * summary['final_bn']:.2f}% "
                      f"(BN re-estimated) in {summary['seconds']:.0f} s, load {common.load_average()}", flush=True)
    rows = summarise(plan, args.last_k)
    markdown = table(rows, args.last_k)
    print(markdown)
    path = common.write_results("metaquant_bwn_form", argparse.Namespace(out=None, quick=False), {
        "plan": asdict(plan), "seeds": list(SEEDS), "float": float_info, "rows": rows, "markdown": markdown,
    }, started, load_before)
    print(f"wrote {path.relative_to(common.REPO)}")


def render(record: dict) -> str:
    return record["markdown"]


if __name__ == "__main__":
    main()
