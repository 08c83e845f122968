"""Export a trained codec as the artifact bundle of kind ``"codec"`` (the contract: ``qcompile.runtime.codec.spec``).

The bundle holds the encoder (``image`` → ``latent`` v) and decoder (``latent_hat`` ŷ → ``image``)
ONNX graphs with dynamic batch, height and width, the CDF tables built once from the learned density
(per channel for ``round``, per channel × dither level for ``universal``), and the manifest's
``codec`` object. Before anything is written, both graphs run in onnxruntime on a Kodak-size input
and must match PyTorch (max |Δ| ≤ 1e-4 on v and on the reconstruction), or the export fails.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from qcompile.codec.bottleneck import NODE_ID, QUANTIZATIONS
from qcompile.codec.split import split
from qcompile.codec.tables import PRECISION, build_tables
from qcompile.errors import ConfigError, ExportError
from qcompile.export.artifact import manifest, write_bundle
from qcompile.parity import PARITY_TOLERANCE

OPSET = 21
PARITY_SHAPE = (1, 3, 512, 768)  # a Kodak image
KIND = "codec"


def _to_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str, ds: int) -> bytes:
    """``torch.onnx.export`` (dynamo) with dynamic batch and spatial size (multiples of ``ds`` for an
    image input), checked by the ONNX checker."""
    import onnx

    batch = torch.export.Dim("batch", min=1, max=1024)
    h, w = torch.export.Dim("h", min=1, max=4096), torch.export.Dim("w", min=1, max=4096)
    spatial = {2: ds * h, 3: ds * w} if ds > 1 else {2: h, 3: w}
    logging.disable(logging.WARNING)
    try:
        with torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, opset_version=OPSET,
                                        input_names=[input_name], output_names=[output_name],
                                        dynamic_shapes=({0: batch, **spatial},))
        proto = program.model_proto
    except Exception as e:
        raise ExportError(f"the codec's {'encoder' if ds > 1 else 'decoder'} cannot be exported to ONNX: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                          hint="keep the analysis/synthesis transforms to ops torch.export supports") from e
    finally:
        logging.disable(logging.NOTSET)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _ort(model: bytes, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def codec_info(gm: fx.GraphModule, quantization: str, name: str, lmbda: float, ds: int,
               training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's ``codec`` object for exporting ``gm`` with ``quantization``."""
    from qcompile.codec import bottleneck_of

    b = bottleneck_of(gm)
    universal = quantization == "universal"
    return {"quantization": quantization, "reconstruction": "soft_round" if b.soft else "identity",
            "alpha": float(b.alpha) if b.soft else None, "latent_channels": b.channels, "downsample": ds,
            "precision": PRECISION, "seed": b.seed if universal else None, "node_id": NODE_ID,
            "dither_levels": b.levels if universal else None, "model": name, "lambda": float(lmbda),
            "training": dict(training or {})}


def _measured_downsample(image_shape, latent_shape, expected: int | None) -> int:
    """The encoder's downsampling factor: the same exact ratio along height and width."""
    (h, w), (lh, lw) = image_shape[-2:], latent_shape[-2:]
    ds = h // lh if lh else 0
    if not ds or h != lh * ds or w != lw * ds:
        raise ConfigError(f"the encoder maps a {h}×{w} image to a {lh}×{lw} latent: not one whole downsampling "
                          f"factor", hint="give a parity image whose sides are multiples of the model's downsampling")
    if expected is not None and expected != ds:
        raise ConfigError(f"downsample={expected} was given, but the encoder downsamples by {ds}",
                          hint="leave downsample unset: it is measured")
    return ds


def export_codec(gm: fx.GraphModule, path: str | Path, quantization: str, *, name: str, lmbda: float,
                 downsample: int | None = None, training: dict[str, Any] | None = None,
                 parity_image: np.ndarray | None = None) -> dict[str, Any]:
    """Write the bundle at ``path``; returns what was written (sizes, table shape, parity).

    ``downsample`` (image size / latent size) is measured on the parity image, so the manifest states what
    the encoder does; a value given here must agree with it."""
    with warnings.catch_warnings():
        # torch.export's pytree raises a FutureWarning per copied tree spec, by the million: a caller
        # recording warnings (the CLI does) would hold every one of them in memory
        warnings.simplefilter("ignore", FutureWarning)
        return _export_codec(gm, path, quantization, name, lmbda, downsample, training, parity_image)


def _export_codec(gm, path, quantization, name, lmbda, downsample, training, parity_image) -> dict[str, Any]:
    from qcompile.codec import bottleneck_of

    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantization!r}", hint=f"use one of: {', '.join(QUANTIZATIONS)}")
    gm = copy.deepcopy(gm).cpu().eval()
    b = bottleneck_of(gm)
    b.eval_quantization = quantization
    encoder, decoder = split(gm)
    image = torch.rand(PARITY_SHAPE, generator=torch.Generator().manual_seed(0)) if parity_image is None \
        else torch.from_numpy(np.ascontiguousarray(parity_image, dtype=np.float32))
    with torch.no_grad():
        v = encoder(image)
        _, y_hat = b.quantize(v)
        x_hat = decoder(y_hat)
    downsample = _measured_downsample(image.shape, v.shape, downsample)
    enc = _to_onnx(encoder, image, "image", "latent", downsample)
    dec = _to_onnx(decoder, y_hat, "latent_hat", "image", 1)
    v_ort = _ort(enc, {"image": image.numpy()})
    x_ort = _ort(dec, {"latent_hat": y_hat.numpy()})
    parity = {"latent_max_abs_diff": float(np.abs(v_ort - v.numpy()).max()),
              "image_max_abs_diff": float(np.abs(x_ort - x_hat.numpy()).max()), "shape": list(image.shape)}
    if max(parity["latent_max_abs_diff"], parity["image_max_abs_diff"]) > PARITY_TOLERANCE:
        raise ExportError(f"onnxruntime differs from PyTorch by more than {PARITY_TOLERANCE}: {parity}",
                          hint="this is a qcompile bug; please report it with the model")
    tables = build_tables(b.density, b.levels if quantization == "universal" else 0)
    info = codec_info(gm, quantization, name, lmbda, downsample, training)
    m = manifest(KIND, method=b.mode, task="codec",
                 extra={"codec": info})
    size = write_bundle(path, m, {"encoder": enc, "decoder": dec}, tables.as_dict())
    return {"path": str(path), "bytes": size, "quantization": quantization, "tables": list(tables.cdf.shape),
            "encoder_bytes": len(enc), "decoder_bytes": len(dec), "parity": parity}
