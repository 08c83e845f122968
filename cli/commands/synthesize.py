"""``qcompile synthesize``: a pool of labelled images made from a trained classifier alone (no data).

Thin on purpose: the recipe lives in :mod:`qcompile.synthesis`; this module turns flags into a
:class:`~qcompile.synthesis.config.SynthesisConfig`, runs it with a progress bar, writes the pool (and the
preview grid) atomically, and reports the pool's difficulty statistics. The unfinished work is kept in
``OUT.partial.npz`` after every batch; ``--resume`` continues from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.options import FiniteFloat, absolute_spec, model_source, normalization_options
from qcompile.cli.output import Output, Result, reporting

NORM_HELP = "What the model expects of images in [0, 1], so the pool holds images in that space [default: none]; " \
            "'data' is not available (there is none)."


def checkpoint_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".partial.npz")


@click.command()
@model_source
@click.option("--images", "-n", type=int, default=2048, show_default=True, help="Images in the pool.")
@click.option("--out", "-o", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Pool file to write (.npz).")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a grid PNG of pool images per class.")
@click.option("--batch-size", "-b", type=int, default=256, show_default=True, help="Images optimised together.")
@click.option("--steps", type=int, default=500, show_default=True, help="Adam steps per batch.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=0.5, show_default=True,
              help="Adam learning rate on the pixels (reduced on plateaus).")
@click.option("--ce-weight", type=FiniteFloat(min=0), default=1.0, show_default=True,
              help="Weight of the soft-label cross-entropy next to the BN-statistics loss (0: BN statistics only).")
@click.option("--similarity", type=click.Choice(["dot", "cosine"]), default="dot", show_default=True,
              help="Class similarity from the classifier rows: dot product (DynaDFQ) or cosine.")
@click.option("--group-size", type=int, default=2, show_default=True,
              help="K: the similar classes a hard image's label mass is spread over.")
@click.option("--groups", type=click.Choice(["similar", "random"]), default="similar", show_default=True,
              help="Spread it over the K most similar classes, or K random ones (ablation).")
@click.option("--mixing", type=click.Choice(["similarity", "uniform"]), default="similarity", show_default=True,
              help="Share of each group class: softmax of similarity, or equal.")
@click.option("--hard-fraction", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="Share of images with soft (hard) labels; the rest are one-hot (easy).")
@click.option("--eps-min", type=FiniteFloat(0, 0.5, max_open=True), default=0.1, show_default=True,
              help="Least label mass moved off the anchor class of a hard image.")
@click.option("--eps-max", type=FiniteFloat(0, 0.5, max_open=True), default=0.45, show_default=True,
              help="Most label mass moved off the anchor (< 0.5: the anchor stays the most likely class).")
@click.option("--augment-prob", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="Probability that a step sees a random crop (and flip) of the images.")
@click.option("--clamp/--no-clamp", default=True, show_default=True,
              help="Keep pixels in the image range [0, 1] (the pool calibrates activation ranges for real images).")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Mirror images in augmented steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of labels, initial images and augmentation.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda",
              help="Where to optimise: auto = CUDA when available.")
@click.option("--resume", is_flag=True, help="Continue the unfinished synthesis checkpointed in OUT.partial.npz.")
@normalization_options(NORM_HELP)
@reporting
def synthesize(out: Output, source: dict[str, Any], images: int, out_path: Path, preview: Path | None,
               batch_size: int, steps: int, lr: float, ce_weight: float, similarity: str, group_size: int,
               groups: str, mixing: str, hard_fraction: float, eps_min: float, eps_max: float, augment_prob: float,
               clamp: bool, flip: bool, seed: int, device: str, resume: bool, norm: dict[str, Any]) -> Result:
    """Synthesise a labelled image pool from MODEL's BatchNorm statistics and classifier (no real data).

    \b
    Images are optimised so the statistics at every BatchNorm input match the running ones and the
    float model predicts each image's label: one-hot for "easy" images, soft over the most similar
    classes (similarity of the classifier's weight rows) for "hard" ones (DynaDFQ).
      qcompile synthesize examples/mnist_cnn.py:build --weights cnn.pt --input-shape 1,1,28,28 \\
          --images 2048 --out pool.npz --preview grid.png
    """
    from qcompile.errors import ConfigError
    from qcompile.loading import load_model, parse_shapes
    from qcompile.runtime.normalisation import choose
    from qcompile.synthesis import AugmentConfig, SoftLabelConfig, SynthesisConfig, save_pool, synthesize, write_preview
    from qcompile.synthesis.progress import make_progress

    if out_path.suffix.lower() != ".npz":
        raise ConfigError(f"output {out_path} does not end in .npz", hint="name the pool e.g. pool.npz")
    if preview is not None and preview.suffix.lower() != ".png":
        raise ConfigError(f"preview {preview} does not end in .png", hint="name the grid e.g. grid.png")
    shapes = parse_shapes(source["input_shape"])
    if len(shapes) != 1:
        raise ConfigError(f"synthesis needs a model with one input, got --input-shape {source['input_shape']}",
                          hint="give one image shape, e.g. 1,1,28,28")
    normalization = choose(norm["norm"] or ("none" if norm["mean"] is None and norm["std"] is None else None),
                           norm["mean"], norm["std"])
    if normalization is None:
        raise ConfigError("--norm data needs data, and synthesis has none",
                          hint="give the normalisation the model was trained with: --norm NAME or --mean/--std")
    normalization = normalization.for_channels(shapes[0][1])
    config = SynthesisConfig(
        images=images, batch_size=batch_size, steps=steps, lr=lr, ce_weight=ce_weight, similarity=similarity, seed=seed,
        clamp=clamp,
        labels=SoftLabelConfig(group_size=group_size, hard_fraction=hard_fraction, eps_min=eps_min, eps_max=eps_max,
                               groups=groups, mixing=mixing),
        augment=AugmentConfig(p=augment_prob, flip=flip))
    model = load_model(absolute_spec(source["model"]), source["weights"])
    checkpoint = checkpoint_path(out_path)
    out.log(f"synthesising {images} images in {config.batches} batch(es) of {batch_size}, {steps} steps each")
    with make_progress(out.progress) as progress:
        pool = synthesize(model, shapes[0][1:], config, mean=normalization.mean, std=normalization.std, device=device,
                          leaf_modules=tuple(source["leaf_modules"]), progress=progress, checkpoint=checkpoint,
                          resume=resume, provenance={"model": source["model"], "weights": source["weights"],
                                                     "normalization": normalization.to_dict()})
    if out.quiet:  # under torchrun every rank holds the pool; rank 0 writes it
        return Result({}, render_synthesize)
    size = save_pool(pool, out_path)
    checkpoint.unlink(missing_ok=True)
    if preview is not None:
        write_preview(pool, preview)
    return Result({"out": out_path, "bytes": size, "preview": preview, **pool.summary(),
                   "normalization": normalization.to_dict(), "device": pool.provenance["device"],
                   "seconds": pool.provenance["seconds"], "classifier": pool.provenance["classifier"],
                   "batchnorms": len(pool.provenance["batchnorms"]), "config": config.to_dict(),
                   "batches": pool.provenance["batches"]}, render_synthesize)


def _nats(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} nats"


def render_synthesize(console: Console, r: dict[str, Any]) -> None:
    last = r["batches"][-1] if r["batches"] else {}
    console.print(fmt.key_values(f"Synthetic pool {r['out']}", [
        ("images", f"{r['images']} ({r['easy']} easy one-hot, {r['hard']} hard soft-label), "
                   f"{'×'.join(map(str, r['input_shape']))}, {r['classes']} classes"),
        ("read from the model", f"{r['batchnorms']} BatchNorm layers, classifier {r['classifier']}"),
        ("label entropy (mean)", _nats(r["label_entropy_mean"])),
        ("float model's prediction entropy", f"{_nats(r['pred_entropy_mean'])} (easy {_nats(r['pred_entropy_easy'])}, "
                                             f"hard {_nats(r['pred_entropy_hard'])})"),
        ("float model agrees with the anchor class", fmt.pct(r["agreement"])),
        ("last batch: BN loss, CE", f"{last.get('bns_first', 0):.4g} → {last.get('bns', 0):.4g}, "
                                    f"{last.get('ce_first', 0):.4g} → {last.get('ce', 0):.4g}"),
        ("file", f"{fmt.nbytes(r['bytes'])}" + (f"; preview {r['preview']}" if r["preview"] else "")),
        ("time", f"{r['seconds']:.1f} s on {r['device']}"),
    ]))
