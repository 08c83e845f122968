"""``qcompile codec train`` and ``qcompile codec export``: the compiler's half of the codec commands.

The ``codec`` group itself (with the torch-free compress / decompress / eval) lives in
:mod:`qcompile.cli.commands.codec`; these commands are registered onto it by :func:`codec_group`, which
falls back to a group of their own when that module is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.output import Output, Result, reporting

DEFAULT_MODEL = "qcompile.codec.reference:build"
ARMS = {"un": ("round", "universal"), "uq": ("universal",), "uq-sr": ("universal",)}


def model_name(spec: str) -> str:
    """What a bundle calls its model: the file's stem of 'file.py:factory', else the module's last part."""
    source = spec.split(":")[0]
    return Path(source).stem if source.endswith(".py") else source.rsplit(".", 1)[-1]


def bundle_name(quantization: str) -> str:
    return f"codec-{quantization}.qcodec"


def export_run(run_dir: Path, quantizations: tuple[str, ...], kodak: Path | None, log) -> list[dict[str, Any]]:
    """Export the run's bundles (and estimate each on Kodak and the held-out photos): one row per bundle."""
    from qcompile.codec.data import split_photos
    from qcompile.codec.export import export_codec
    from qcompile.codec.train import load_trained, estimate

    gm, document = load_trained(run_dir)
    config = document["config"]
    _, held_out = split_photos(config["data"], config["holdout"])
    training = {k: config[k] for k in ("quantization", "steps", "batch_size", "crop", "lr", "seed")}
    training.update(seconds=round(document.get("seconds", 0.0), 1), photos=len(document.get("train_photos", [])))
    rows = []
    for q in quantizations:
        log(f"exporting {q} ...")
        row = export_codec(gm, run_dir / bundle_name(q), q, name=model_name(config["model"]),
                           lmbda=config["lmbda"], training=training)
        if kodak is not None:
            row["kodak_estimate"] = estimate(gm, kodak, q)
        if held_out:
            row["held_out_estimate"] = estimate(gm, held_out, q)
        rows.append(row)
    return rows


@click.command("train")
@click.argument("model", default=DEFAULT_MODEL, metavar="[MODEL]")
@click.option("--lambda", "lmbda", type=float, default=0.0067, show_default=True,
              help="Rate–distortion trade-off: loss = bpp + λ·255²·MSE "
                   "(CompressAI's MSE range: 0.0018–0.0483).")
@click.option("--quantization", type=click.Choice(["un", "uq", "uq-sr"]), default="un", show_default=True,
              help="un: noise in training (exported with rounding and universal); uq: the same, exported "
                   "universal only; uq-sr: soft rounding with α annealed, exported universal.")
@click.option("--steps", type=int, default=4000, show_default=True, help="Training steps.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--crop", type=int, default=128, show_default=True, help="Random crop size (a multiple of 16).")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Adam learning rate (cosine schedule).")
@click.option("--alpha-end", type=float, default=6.0, show_default=True, help="uq-sr: final soft-rounding α (from 1).")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Folder of PNG/JPEG training photos (e.g. ../shared/data/photos in a qcompile checkout).")
@click.option("--holdout", type=int, default=5, show_default=True,
              help="The last N photos of --data (sorted by name) are held out of training.")
@click.option("--kodak", type=click.Path(path_type=Path), default=None,
              help="Folder of evaluation images for the model's estimated bpp/PSNR (e.g. ../shared/data/kodak).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory: checkpoint, codec.json, model.pt and the exported codec-*.qcodec bundles.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@click.option("--seed", type=int, default=0, show_default=True, help="Init, crops, data order and the dither seed.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda when present), cpu or cuda.")
@click.option("--init", "init", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Start from the weights of a finished run directory (fine-tune it for this λ / mode).")
@click.option("--export/--no-export", "do_export", default=True, show_default=True,
              help="Write the codec bundle(s) at the end.")
@reporting
def train(out: Output, model: str, lmbda: float, quantization: str, steps: int, batch_size: int, crop: int,
          lr: float, alpha_end: float, data: Path, holdout: int, kodak: Path | None, out_dir: Path, resume: bool,
          seed: int, device: str, init: Path | None, do_export: bool) -> Result:
    """Train a learned image codec (a model with a qcompile.codec.Bottleneck marker) for R + λ·D.

    MODEL is 'file.py:factory' (default: the reference factorized-prior autoencoder). At the end the
    codec bundle(s) are written into --out: codec-round.qcodec and/or codec-universal.qcodec.
    """
    from qcompile.codec.train import CodecTrainConfig, train_codec

    config = CodecTrainConfig(model=model, lmbda=lmbda, quantization=quantization, steps=steps,
                              batch_size=batch_size, crop=crop, lr=lr, alpha_end=alpha_end, data=str(data),
                              holdout=holdout, seed=seed, device=device, init=None if init is None else str(init))
    document = train_codec(config, out_dir, resume=resume, progress=out.progress, log=out.log)
    if do_export and document["finished"] and not out.quiet:  # under torchrun the export is rank 0's
        document["bundles"] = export_run(out_dir, ARMS[quantization], kodak, out.log)
    document.pop("history", None)
    return Result({"run_dir": str(out_dir), **document}, render_codec)


@click.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--quantization", type=click.Choice(["round", "universal", "all"]), default="all", show_default=True,
              help="Which bundle(s): all = those of the run's training mode.")
@click.option("--kodak", type=click.Path(path_type=Path), default=None,
              help="Folder of evaluation images for the estimated bpp/PSNR.")
@reporting
def export(out: Output, run_dir: Path, quantization: str, kodak: Path | None) -> Result:
    """Write codec bundle(s) from a finished `qcompile codec train` run directory."""
    import json

    from qcompile.codec.train import RUN_FILE

    mode = json.loads((run_dir / RUN_FILE).read_text())["config"]["quantization"] \
        if (run_dir / RUN_FILE).is_file() else "un"
    chosen = ARMS[mode] if quantization == "all" else (quantization,)
    return Result({"run_dir": str(run_dir), "bundles": export_run(run_dir, chosen, kodak, out.log)}, render_codec)


def render_codec(console: Console, r: dict[str, Any]) -> None:
    if "steps" in r:
        test = r.get("held_out_crops") or {}
        console.print(f"trained {r['steps']} steps in {r['seconds']:.0f}s; held-out crops: "
                      f"bpp {test.get('bpp', float('nan')):.3f}, PSNR {test.get('psnr', float('nan')):.2f} dB")
    rows = []
    for b in r.get("bundles", []):
        k = b.get("kodak_estimate") or {}
        h = b.get("held_out_estimate") or {}
        rows.append([b["path"], b["quantization"], fmt.nbytes(b["bytes"]),
                     f"{k['bpp']:.3f} / {k['psnr']:.2f}" if k else "-",
                     f"{h['bpp']:.3f} / {h['psnr']:.2f}" if h else "-",
                     f"{max(b['parity']['latent_max_abs_diff'], b['parity']['image_max_abs_diff']):.0e}"])
    if rows:
        console.print(fmt.table("codec bundles", ["bundle", "quantization", "size", "Kodak bpp / dB (est.)",
                                                  "held-out bpp / dB (est.)", "ORT max|Δ|"], rows, right=(2, 3, 4, 5)))


def codec_group() -> click.Group:
    """The ``codec`` group (compress/decompress/eval, cli/commands/codec.py) with train/export added."""
    from qcompile.cli.commands.codec import codec as group
    group.add_command(train)
    group.add_command(export)
    return group
