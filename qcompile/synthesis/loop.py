"""The synthesis loop: optimise batches of images so the float model's BN statistics and soft labels are met.

For each batch of ``batch_size`` images (the last may be smaller), starting from x ~ N(0, 1) in the
model's input space, Adam minimises

    L = L_BNS(view(x)) + λ_CE · CE_soft(f(view(x)), y)

for ``steps`` steps, ``view`` being the random crop/flip of :mod:`.augment` and the learning rate reduced on
plateaus of L. The labels y of the whole pool are drawn first, from the seed, and batch b starts from
its own seed (``seed + 1 + b``), so a resumed run gives the images an uninterrupted run gives. After each
batch the finished images are checkpointed (atomically) to ``checkpoint``; ``resume=True`` continues from
there after checking that the model, options and normalisation are the ones it was started with.

Data-parallel (under torchrun): the batches are dealt out in rounds, batch ``b`` to rank ``b mod world``,
each optimised whole on its rank from its own seed — distinct across ranks, derived from the global seed as
above. So the BN-statistics loss of a batch is computed from that batch's own statistics, exactly the
per-batch loss of the method (and of one process): no statistics cross ranks. After each round the
finished batches are gathered on every rank, in batch order, and rank 0 alone writes the checkpoint. The
pool is therefore the one a single process makes, for any number of ranks, and a checkpoint resumes under
any world size. With fewer batches than ranks some ranks idle: use batches of ``images / ranks`` or fewer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qcompile import distributed
from qcompile.atomic import atomic_write
from qcompile.errors import ConfigError, DataError
from qcompile.passes.trace import trace
from qcompile.synthesis.augment import random_view
from qcompile.synthesis.bn_statistics import BNStatisticsLoss
from qcompile.synthesis.config import SynthesisConfig
from qcompile.synthesis.introspect import model_parts
from qcompile.synthesis.labels import entropy, sample_labels, soft_cross_entropy
from qcompile.synthesis.pool import SyntheticPool
from qcompile.synthesis.progress import NullSynthesisProgress
from qcompile.synthesis.similarity import class_similarity
from qcompile.version import __version__


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
        raise ConfigError(f"unknown device {str(device)!r}", hint="use auto, cpu, cuda or cuda:N")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but this PyTorch sees no CUDA device",
                          hint="use --device auto (CUDA when present) or --device cpu")
    return torch.device(device)


def model_digest(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes, values): what a checkpoint must match."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def synthesize(model: nn.Module, input_shape: tuple[int, ...], config: SynthesisConfig = SynthesisConfig(), *,
               mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,), classes: list[str] | None = None,
               device: str | torch.device = "auto", leaf_modules: tuple[str, ...] = (),
               progress: NullSynthesisProgress | None = None, checkpoint: str | Path | None = None,
               resume: bool = False, provenance: dict[str, Any] | None = None) -> SyntheticPool:
    """A pool of ``config.images`` images synthesised from the float classifier ``model`` alone.

    ``input_shape`` is one sample's shape (C, H, W); ``mean``/``std`` (one value or one per channel) the
    normalisation the model expects, so the pool holds images in image space."""
    if len(input_shape) != 3:
        raise ConfigError(f"synthesis makes images, but the input shape per sample is {tuple(input_shape)}",
                          hint="give an image input shape, e.g. --input-shape 1,1,28,28 (batch, channels, height, width)")
    progress = progress or NullSynthesisProgress()
    device = resolve_device(device)
    channels = int(input_shape[0])
    mean_t, std_t = (torch.tensor(_per_channel(v, channels, name), dtype=torch.float32)
                     for v, name in ((mean, "mean"), (std, "std")))
    gm = trace(copy.deepcopy(model).cpu().eval(), leaf_modules)
    parts = model_parts(gm)
    gm = gm.to(device).eval().requires_grad_(False)
    similarity = class_similarity(parts.classifier_weight, config.similarity)
    plan = sample_labels(similarity, config.images, config.labels, torch.Generator().manual_seed(config.seed))
    fingerprint = {"model": model_digest(model), "input_shape": list(input_shape), "mean": mean_t.tolist(),
                   "std": std_t.tolist(), "config": config.to_dict()}
    done = _resume(checkpoint, fingerprint) if resume else _start(checkpoint)
    world, left = distributed.world_size(), config.batches - len(done["records"])
    if done["records"]:
        progress.message(f"resumed after batch {len(done['records'])} of {config.batches} ({checkpoint})")
    if world > left:
        progress.message(f"{left} batch(es) left for {world} ranks: some ranks idle")
    started = time.perf_counter()
    bounds = ((0 - mean_t) / std_t, (1 - mean_t) / std_t) if config.clamp else None
    view = (1, -1, 1, 1)  # per-channel values against (N, C, H, W)
    for first in range(len(done["records"]), config.batches, world):  # one round: a batch per rank
        b, mine = first + distributed.rank(), None
        if b < config.batches:
            lo, hi = b * config.batch_size, min((b + 1) * config.batch_size, config.images)
            x, record = _optimise_batch(gm, parts, plan.labels[lo:hi].to(device), (hi - lo, *input_shape), b,
                                        config, device, progress, bounds)
            with torch.no_grad():
                p = torch.softmax(gm(x).float(), dim=1).cpu()
            image = (x.detach().cpu() * std_t.reshape(view) + mean_t.reshape(view)).numpy()
            mine = (image, entropy(p).numpy(), p.argmax(dim=1).numpy(), record)
        finished = [r for r in distributed.gather(mine) if r is not None]
        for image, pred_entropy, pred_class, record in finished:
            done["images"].append(image)
            done["pred_entropy"].append(pred_entropy)
            done["pred_class"].append(pred_class)
            done["records"].append(record)
        if checkpoint is not None and distributed.is_main():
            _save_checkpoint(checkpoint, done, fingerprint)
        for *_, record in finished:
            progress.end_batch(record)
    prov = {"producer": f"qcompile {__version__}", **(provenance or {}), "model_digest": fingerprint["model"],
            "input_shape": list(input_shape), "config": config.to_dict(), "device": device.type,
            "classifier": parts.classifier, "batchnorms": [name for name, _ in parts.batchnorms],
            "similarity": similarity.tolist(), "batches": done["records"],
            "seconds": round(time.perf_counter() - started, 3), **({"ranks": world} if world > 1 else {})}
    return SyntheticPool(
        images=np.concatenate(done["images"]).astype(np.float32), labels=plan.labels.numpy(),
        anchors=plan.anchors.numpy(), hard=plan.hard.numpy(), eps=plan.eps.numpy(),
        label_entropy=plan.entropy.numpy(), pred_entropy=np.concatenate(done["pred_entropy"]).astype(np.float32),
        pred_class=np.concatenate(done["pred_class"]).astype(np.int64), mean=tuple(mean_t.tolist()),
        std=tuple(std_t.tolist()), classes=list(classes) if classes else [str(c) for c in range(parts.classes)],
        provenance=prov)


def _per_channel(values: tuple[float, ...] | float, channels: int, name: str) -> list[float]:
    values = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConfigError(f"{len(values)} {name} values for a {channels}-channel input",
                          hint="give one value, or one per input channel")
    return values


def _optimise_batch(gm: nn.Module, parts, labels: torch.Tensor, shape: tuple[int, ...], batch: int,
                    config: SynthesisConfig, device: torch.device, progress,
                    bounds: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Optimise one batch; ``bounds`` (per-channel low, high in model-input space) clamp it after every step."""
    generator = torch.Generator().manual_seed(config.seed + 1 + batch)
    x = torch.randn(shape, generator=generator).to(device)
    if bounds is not None:
        view = (1, -1, *[1] * (len(shape) - 2))
        low, high = (b.reshape(view).to(device) for b in bounds)
        x = torch.maximum(torch.minimum(x, high), low)
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=config.plateau_patience,
                                                           min_lr=config.min_lr)
    progress.start_batch(batch, config.batches, config.steps)
    started = time.perf_counter()
    first = None
    with BNStatisticsLoss(parts.batchnorms) as bns:
        for _ in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            logits = gm(random_view(x, config.augment, generator))
            bns_loss, ce_loss = bns.loss(), soft_cross_entropy(logits.float(), labels)
            loss = bns_loss + config.ce_weight * ce_loss
            if not torch.isfinite(loss):
                raise DataError(f"synthesis diverged in batch {batch + 1} (loss {float(loss.detach())})",
                                hint="lower --lr, or check that the model's BatchNorm statistics are finite")
            loss.backward()
            optimizer.step()
            if bounds is not None:
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, high), low))
            scheduler.step(float(loss.detach()))
            metrics = {"bns": float(bns_loss.detach()), "ce": float(ce_loss.detach()),
                       "lr": optimizer.param_groups[0]["lr"]}
            first = first or metrics
            progress.advance(metrics)
        per_layer = bns.per_layer
    return x.detach(), {"batch": batch, "images": shape[0], "bns_first": first["bns"], "bns": metrics["bns"],
                        "ce_first": first["ce"], "ce": metrics["ce"], "bns_per_layer": per_layer,
                        "seconds": round(time.perf_counter() - started, 3)}


# ----------------------------------------------------------------------------- checkpoints
def _start(checkpoint: str | Path | None) -> dict[str, list]:
    if checkpoint is not None and Path(checkpoint).exists():
        raise ConfigError(f"an unfinished synthesis was checkpointed at {checkpoint}",
                          hint="pass --resume to continue it, or delete that file to start again")
    return {"images": [], "pred_entropy": [], "pred_class": [], "records": []}


def _save_checkpoint(path: str | Path, done: dict[str, list], fingerprint: dict[str, Any]) -> None:
    arrays = {"images": np.concatenate(done["images"]), "pred_entropy": np.concatenate(done["pred_entropy"]),
              "pred_class": np.concatenate(done["pred_class"]), "records": np.asarray(json.dumps(done["records"])),
              "fingerprint": np.asarray(json.dumps(fingerprint, sort_keys=True))}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _resume(path: str | Path | None, fingerprint: dict[str, Any]) -> dict[str, list]:
    if path is None or not Path(path).is_file():
        raise ConfigError(f"--resume, but there is no synthesis checkpoint at {path}",
                          hint="drop --resume to start a new synthesis")
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = json.loads(str(z["fingerprint"]))
            records = json.loads(str(z["records"]))
            arrays = {k: z[k] for k in ("images", "pred_entropy", "pred_class")}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a readable synthesis checkpoint ({type(exc).__name__})",
                        hint="delete it and synthesise again without --resume") from None
    if saved != json.loads(json.dumps(fingerprint, sort_keys=True)):
        changed = sorted(k for k in fingerprint if saved.get(k) != json.loads(json.dumps(fingerprint[k])))
        raise ConfigError(f"the checkpoint {path} was made with another {', '.join(changed) or 'setup'}",
                          hint="resume with the model, weights, shape, normalisation and options it was started with, "
                               "or delete the checkpoint to start again")
    boundaries = np.cumsum([r["images"] for r in records]).tolist()[:-1]  # one chunk per finished batch
    return {**{k: (np.split(a, boundaries) if records else []) for k, a in arrays.items()}, "records": records}
