"""``qcompile-runtime codec compress|decompress|eval``: the learned image codec, torch-free.

One :class:`~qcompile.runtime.cli.command.Subcommand` (``codec``) with its own sub-commands, each a
runtime function returning a dict (:mod:`qcompile.runtime.codec.actions`,
:func:`qcompile.runtime.codec.evaluate.evaluate`); the compiler's ``qcompile codec`` group calls the
same functions and shows the same rows (:func:`eval_rows`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from qcompile.runtime.cli.command import PROVIDERS, Subcommand, add_providers_argument, at_least, int_list
from qcompile.runtime.cli.text import key_values, nbytes, table

SUMMARY = "Learned image codec: compress an image to a .qc file, decompress it, evaluate rate–distortion."
COMPRESS_SUMMARY = "Compress an image (PNG/JPEG, any size) to a .qc file with a codec bundle."
DECOMPRESS_SUMMARY = "Decompress a .qc file to a PNG image."
EVAL_SUMMARY = ("Rate (bpp from the written files) and distortion (PSNR, MS-SSIM) of codec bundles and of JPEG on "
                "a folder of images, with BD-rates between the curves and an optional R–D plot.")
MODEL_HELP = ("A codec bundle (.qcodec) or the name of a shipped one. Default: compress with the shipped middle "
              "quality; decompress with the shipped codec that wrote the file.")
EVAL_MODEL_HELP = "A codec bundle or shipped name; repeat for several (default: every shipped codec)."
DATA_HELP = "Folder of images (PNG/JPEG) to evaluate on."
JPEG_HELP = "JPEG qualities (Pillow, 4:2:0) for the baseline curve."
PLOT_HELP = "Write the rate–distortion plot (PSNR vs bpp, JPEG included) to this PNG (needs matplotlib)."
NO_MS_SSIM_HELP = "Skip MS-SSIM (PSNR only; MS-SSIM costs about 0.2 s of CPU per Kodak image)."
MS_SSIM_HELP = "Compute MS-SSIM besides PSNR (about 0.2 s of CPU per Kodak image)."
THREADS_HELP = "onnxruntime intra-op threads (default: onnxruntime's)."


def _common(parser: argparse.ArgumentParser) -> None:
    add_providers_argument(parser)
    parser.add_argument("--threads", type=at_least(1), default=None, metavar="N", help=THREADS_HELP)
    parser.add_argument("--json", action="store_true",
                        help="Print exactly one JSON document on stdout (no tables, no progress lines).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="codec_command", metavar="COMMAND", title="commands", required=True)
    compress = commands.add_parser("compress", help=COMPRESS_SUMMARY, description=COMPRESS_SUMMARY)
    compress.add_argument("image", metavar="IMAGE", help="The image file to compress.")
    compress.add_argument("-o", "--out", required=True, metavar="OUT.qc", help="Where to write the .qc file.")
    compress.add_argument("--model", "-m", default=None, metavar="M", help=MODEL_HELP)
    _common(compress)
    decompress = commands.add_parser("decompress", help=DECOMPRESS_SUMMARY, description=DECOMPRESS_SUMMARY)
    decompress.add_argument("file", metavar="IN.qc", help="The .qc file to decompress.")
    decompress.add_argument("-o", "--out", required=True, metavar="OUT.png", help="Where to write the PNG.")
    decompress.add_argument("--model", "-m", default=None, metavar="M", help=MODEL_HELP)
    _common(decompress)
    evaluate = commands.add_parser("eval", help=EVAL_SUMMARY, description=EVAL_SUMMARY)
    evaluate.add_argument("--data", "-d", required=True, metavar="DIR", help=DATA_HELP)
    evaluate.add_argument("--model", "-m", action="append", default=None, metavar="M", help=EVAL_MODEL_HELP)
    evaluate.add_argument("--jpeg-qualities", type=int_list, default=None, metavar="Q[,Q...]",
                          help=f"{JPEG_HELP} (default: 10,20,...,90)")
    evaluate.add_argument("--plot", default=None, metavar="RD.png", help=PLOT_HELP)
    evaluate.add_argument("--no-ms-ssim", action="store_true", help=NO_MS_SSIM_HELP)
    _common(evaluate)


def load_options(providers: str, threads: int | None) -> dict[str, Any]:
    return {"providers": PROVIDERS[providers], "intra_op_threads": threads}


def run_eval(data: str, models: list[str] | None, jpeg_qualities, plot: str | None, ms_ssim: bool,
             options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """``codec eval`` on both command lines: the evaluation, then the plot when asked for."""
    from qcompile.runtime.codec.evaluate import DEFAULT_JPEG_QUALITIES, evaluate

    if plot is not None:  # before minutes of work: a missing matplotlib is said at once
        from qcompile.runtime.optional import require

        require("matplotlib", "the rate–distortion plot (--plot)")
    report = evaluate(data, models, jpeg_qualities or DEFAULT_JPEG_QUALITIES, with_ms_ssim=ms_ssim, log=log,
                      **options)
    if plot is not None:
        from qcompile.runtime.codec.plot import rd_plot

        rd_plot(report["curves"], plot)
        report["plot"] = plot
    return report


def execute(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from qcompile.runtime.codec.actions import compress_file, decompress_file

    options = load_options(args.providers, args.threads)
    if args.codec_command == "compress":
        return compress_file(args.image, args.out, args.model, log=log, **options)
    if args.codec_command == "decompress":
        return decompress_file(args.file, args.out, args.model, log=log, **options)
    return run_eval(args.data, args.model, args.jpeg_qualities, args.plot, not args.no_ms_ssim, options, log)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{1000 * value:.1f} ms"


def file_summary(r: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Title and labelled values of a compress/decompress report."""
    model = r["model"]
    timing = r.get("encode") or r.get("decode")
    rows = [("image", f"{r['width']}×{r['height']}"), ("file", f"{nbytes(r['bytes'])} ({r['bytes']} bytes)")]
    if r["command"] == "compress":
        rows.append(("rate", f"{r['bpp']:.4f} bpp (header {r['header_bytes']} bytes included)"))
        if r.get("conversion"):
            rows.append(("note", r["conversion"]))
    rows += [("model", f"{model.get('model') or model['path']} ({model['quantization']}, λ {model.get('lambda')})"),
             ("network", _seconds(timing["network_s"])), ("entropy coding", _seconds(timing["entropy_s"]))]
    verb = "compressed to" if r["command"] == "compress" else "decompressed to"
    return f"{r.get('image') or r.get('file')} {verb} {r['out']}", rows


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def eval_rows(r: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, columns, rows)`` tables of an eval report: the points, then the BD-rates."""
    points = []
    for p in r["codecs"] + r["jpeg"]:
        m = p["mean"]
        timing = ([_seconds(m["encode_network_s"]), _seconds(m["encode_entropy_s"]), _seconds(m["decode_network_s"]),
                   _seconds(m["decode_entropy_s"])] if p["curve"] != "JPEG" else ["", "", "", ""])
        points.append([p["name"], p["curve"], _fmt(m["bpp"], 4), _fmt(m["psnr"], 2), _fmt(m["ms_ssim"], 4), *timing])
    columns = ["point", "curve", "bpp", "PSNR dB", "MS-SSIM", "enc net", "enc entropy", "dec net", "dec entropy"]
    bd = [[b["anchor"], b["test"], "—" if b["bd_rate_pct"] is None else f"{b['bd_rate_pct']:+.2f}%",
           b.get("note") or f"PSNR {b['psnr_low']:.2f}–{b['psnr_high']:.2f} dB, degree {b['degree']}"]
          for b in r["bd_rates"]]
    title = f"Rate–distortion on {len(r['images'])} images (means per image)"
    return [(title, columns, points),
            ("BD-rate (PSNR) of test vs anchor (negative: fewer bits)", ["anchor", "test", "BD-rate", "over"], bd)]


def render(r: dict[str, Any]) -> str:
    if r["command"] != "eval":
        return key_values(*file_summary(r))
    parts = [table(title, cols, rows, right=range(2, len(cols)) if "bpp" in cols else (2,))
             for title, cols, rows in eval_rows(r)]
    if r.get("plot"):
        parts.append(f"  plot: {r['plot']}")
    return "\n".join(parts)


COMMAND = Subcommand("codec", SUMMARY, add_arguments, execute, render)
