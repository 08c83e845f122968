"""Train a codec for one rate–distortion trade-off and keep everything in a run directory.

``train_codec`` loads the user's autoencoder (``file.py:factory``), inserts the quantization node
(:func:`qcompile.codec.prepare`), draws random crops from the training photos, and runs the ordinary
training loop (checkpoints every ``checkpoint_every`` steps, resume, rich progress, cuda when present)
with the codec task. Soft rounding (``uq-sr``) anneals α linearly from ``alpha_start`` to ``alpha_end``
over the first ``alpha_ramp`` of the steps and holds it there (uq.md §1.4: start soft, raise it by
3–10×); α is a buffer of the model, so a resumed run continues from the saved value.

The run directory holds ``checkpoint.pt`` (the loop's), ``codec.json`` (settings, history, the
held-out and Kodak estimates) and ``model.pt`` (the final state dict, what ``qcompile codec export``
reads).

Data-parallel under torchrun: every rank draws the same crops (from the seed) and the loop trains each on
its shard of every global batch of ``batch_size`` crops, with gradients averaged (:mod:`qcompile.train.loop`)
and the training noise drawn per rank; rank 0 alone writes the run directory. ``--resume`` continues the
loop's checkpoint under any number of ranks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx

from qcompile.atomic import atomic_write
from qcompile.codec import MODES, bottleneck_of, prepare
from qcompile.codec.data import centre_crops, list_images, load_image, pad_to_multiple, random_crops, split_photos
from qcompile.errors import ConfigError
from qcompile.tasks.codec import Codec

RUN_FILE = "codec.json"
MODEL_FILE = "model.pt"
MAX_CROPS = 8192  # crops held in memory (uint8); more steps revisit them in a new order each epoch


@dataclass
class CodecTrainConfig:
    """Every setting of a codec training run (stored in ``codec.json``; a resume must match it)."""

    model: str = "qcompile.codec.reference:build"
    lmbda: float = 0.0067
    quantization: str = "un"
    steps: int = 4000
    batch_size: int = 8
    crop: int = 128
    lr: float = 5e-4
    seed: int = 0
    data: str = ""  # a folder of training photos (required)
    holdout: int = 5
    levels: int = 16
    alpha_start: float = 1.0
    alpha_end: float = 6.0
    alpha_ramp: float = 0.75
    checkpoint_every: int = 250
    device: str = "auto"
    init: str | None = None  # a finished run directory whose weights start this run (fine-tuning)

    def __post_init__(self) -> None:
        Codec(self.lmbda)  # validates λ
        if self.quantization not in MODES:
            raise ConfigError(f"unknown quantization {self.quantization!r}", hint=f"use one of: {', '.join(MODES)}")
        for name in ("steps", "batch_size", "crop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}", hint=f"pass --{name} N")
        if not self.data:
            raise ConfigError("no training photos given", hint="pass --data FOLDER (PNG/JPEG photos)")
        if self.crop % 16:
            raise ConfigError(f"crop {self.crop} is not a multiple of 16", hint="use e.g. --crop 128")
        if not 0 < self.alpha_start <= self.alpha_end:
            raise ConfigError(f"alpha must rise from a positive start: {self.alpha_start} -> {self.alpha_end}",
                              hint="use e.g. alpha_start=1, alpha_end=6")


class AlphaSchedule:
    """Sets the soft-rounding α after every step: linear from start to end over ``ramp`` of the steps."""

    def __init__(self, config: CodecTrainConfig):
        self.config = config

    def value(self, step: int) -> float:
        c = self.config
        t = min(1.0, step / max(1.0, c.alpha_ramp * c.steps))
        return c.alpha_start + t * (c.alpha_end - c.alpha_start)

    def __call__(self, event: str, state) -> None:
        if event == "step_end":
            bottleneck_of(state.model).alpha.fill_(self.value(state.global_step))


def build_codec(config: CodecTrainConfig) -> fx.GraphModule:
    """The user's model with the quantization node of ``config.quantization`` (seeded init)."""
    from qcompile.loading import load_model

    torch.manual_seed(config.seed)
    return prepare(load_model(config.model), config.quantization, seed=config.seed, levels=config.levels)


def train_codec(config: CodecTrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
                log=lambda message: None) -> dict[str, Any]:
    """Train, write the run directory, return its ``codec.json`` document."""
    from qcompile import distributed
    from qcompile.train import TrainConfig, finetune

    out_dir = Path(out_dir)
    _check_run_dir(out_dir, config, resume)
    distributed.barrier()  # every rank has checked the run directory before rank 0 writes into it
    started = time.perf_counter()
    gm = build_codec(config)
    if config.init is not None:
        start, _ = load_trained(config.init)
        gm.load_state_dict(start.state_dict())
        bottleneck_of(gm).alpha.fill_(config.alpha_start if config.quantization == "uq-sr" else 0.0)
        log(f"weights from {config.init}")
    train_photos, held_out = split_photos(config.data, config.holdout)
    count = min(config.steps * config.batch_size, MAX_CROPS)
    train = random_crops([load_image(p) for p in train_photos], count, config.crop, config.seed)
    test = centre_crops([load_image(p) for p in held_out], config.crop, tuple(p.name for p in held_out)) \
        if held_out else None
    log(f"{len(train_photos)} training photos ({count} crops of {config.crop}px), "
        f"{len(held_out)} held out: {', '.join(p.name for p in held_out)}")
    loop = TrainConfig(epochs=math.ceil(config.steps * config.batch_size / count), batch_size=config.batch_size,
                       lr=config.lr, optimizer="adam", schedule="cosine", seed=config.seed,
                       device=config.device, checkpoint_every=config.checkpoint_every, eval_every=0,
                       max_steps=config.steps)
    callbacks = [AlphaSchedule(config)] if config.quantization == "uq-sr" else []
    task = Codec(config.lmbda)
    main = distributed.is_main()
    if main:
        _write_json(out_dir / RUN_FILE, {"config": dataclasses.asdict(config), "finished": False})
    result = finetune(gm, train, test, loop, checkpoint_dir=out_dir, resume=resume, progress=progress and main,
                      callbacks=callbacks, task=task)
    gm.cpu().eval()
    if main:
        atomic_write(out_dir / MODEL_FILE, lambda f: torch.save(gm.state_dict(), f))
    document = {
        "config": dataclasses.asdict(config), "finished": result.steps >= config.steps, "steps": result.steps,
        "seconds": result.seconds, "wall_seconds": time.perf_counter() - started,
        "train_photos": [p.name for p in train_photos], "held_out_photos": [p.name for p in held_out],
        "history": result.history, "held_out_crops": result.final_test,
        "alpha": float(bottleneck_of(gm).alpha), "parameters": sum(p.numel() for p in gm.parameters()),
    }
    if main:
        _write_json(out_dir / RUN_FILE, document)
    distributed.barrier()  # the run directory is complete when train_codec returns, on every rank
    return document


def load_trained(run_dir: str | Path) -> tuple[fx.GraphModule, dict[str, Any]]:
    """(the trained model in eval mode, the run's ``codec.json``) of a finished run directory."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file() or not (run_dir / MODEL_FILE).is_file():
        raise ConfigError(f"{run_dir} is not a finished codec run (no {RUN_FILE} and {MODEL_FILE})",
                          hint="train one with `qcompile codec train ... --out DIR`, or finish it with --resume")
    document = json.loads(path.read_text())
    config = CodecTrainConfig(**{**document["config"], "init": None})
    gm = build_codec(config)
    gm.load_state_dict(torch.load(run_dir / MODEL_FILE, weights_only=True))
    return gm.eval(), document


@torch.no_grad()
def estimate(gm: fx.GraphModule, images: str | Path | list[Path], quantization: str,
             downsample: int = 16) -> dict[str, Any]:
    """The model's own estimate on ``images`` (a folder or a list of files), as the runtime would code it: images
    padded to multiples of ``downsample``, bpp = −Σ log₂ P(symbols) over the original pixels (no
    header), PSNR of the reconstruction cropped, clamped and rounded to 8 bits."""
    b = bottleneck_of(gm)
    saved, b.eval_quantization = b.eval_quantization, quantization
    device = next(gm.parameters()).device
    rows = []
    try:
        for path in images if isinstance(images, list) else list_images(images):
            image = load_image(path)
            h, w = image.shape[1:]
            x = torch.from_numpy(pad_to_multiple(image, downsample)[None].astype(np.float32) / 255.0).to(device)
            x_hat, likelihoods = gm.eval()(x)
            bits = float(-torch.log2(likelihoods).sum())
            out = torch.round(x_hat[0, :, :h, :w].clamp(0, 1) * 255.0).cpu().numpy()
            mse = float(np.mean((out - image.astype(np.float64)) ** 2))
            rows.append({"image": path.name, "bpp": bits / (h * w), "psnr": 10 * math.log10(255.0 ** 2 / mse)})
    finally:
        b.eval_quantization = saved
    return {"quantization": quantization, "images": rows,
            "bpp": float(np.mean([r["bpp"] for r in rows])), "psnr": float(np.mean([r["psnr"] for r in rows]))}


def _check_run_dir(out_dir: Path, config: CodecTrainConfig, resume: bool) -> None:
    path = out_dir / RUN_FILE
    if resume:
        if not path.is_file():
            raise ConfigError(f"nothing to resume in {out_dir}", hint="start the run without --resume")
        saved = json.loads(path.read_text())["config"]
        changed = sorted(k for k, v in dataclasses.asdict(config).items()
                         if saved.get(k) != v and k not in ("checkpoint_every", "device"))
        if changed:
            raise ConfigError(f"--resume with different settings: {', '.join(changed)}",
                              hint="resume with the run's own settings (see codec.json), or start a new --out")
    elif path.exists():
        raise ConfigError(f"{out_dir} already holds a codec run", hint="pass --resume to continue it, or another --out")


def _write_json(path: Path, document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=1, default=float).encode()
    atomic_write(path, lambda f: f.write(text))
