"""Learned image codec on Kodak: rate–distortion of every trained codec bundle against JPEG, UN+Q and
CompressAI's published bmshj2018-factorized points, on the 24 Kodak images and the held-out photos.

    python benchmarks/codec_kodak.py [BUNDLE.qcodec ...]   # default: benchmarks/results/codec/**/*.qcodec

Rates are the sizes of the .qc files the runtime writes (header included); PSNR is RGB, 8-bit; MS-SSIM
as in CompressAI. Bundles are grouped into curves by their manifest's ``curve`` field, else by the
training arm and the export's quantization (:data:`ARMS`: noise-trained and rounded is UN+Q,
noise-trained with universal quantization UN+UQ, soft-rounding-trained with universal quantization
UN+UQ+SR). BD-rate (PSNR, cubic Bjøntegaard over the overlapping PSNR range) of each curve against
UN+Q, JPEG (Pillow, 4:2:0) and CompressAI's published points. Timings are the runtime's own (onnxruntime network and entropy coding, separately)
per Kodak image. Each bundle's results are cached (keyed by its bytes and the image list) in
``benchmarks/.cache/codec_kodak.partial.json`` so an interrupted run resumes; ``--fresh`` ignores it. Writes ``benchmarks/results/codec_kodak.json`` and the R–D plot
``benchmarks/results/codec_kodak_rd.png``, and prints the markdown tables of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from qcompile.runtime.codec.bdrate import bd_rate, pareto  # noqa: E402
from qcompile.runtime.codec.evaluate import JPEG, curves_of, evaluate_codec, evaluate_jpeg  # noqa: E402
from qcompile.runtime.codec.images import image_files, read_image  # noqa: E402

NAME = "codec_kodak"
KODAK, PHOTOS = common.SHARED_DATA / "kodak", common.SHARED_DATA / "photos"
BUNDLES = common.RESULTS_DIR / "codec"
JPEG_QUALITIES = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90)
# CompressAI's published bmshj2018-factorized (MSE) results on Kodak, qualities 1-5 (bpp, PSNR RGB dB)
COMPRESSAI = "CompressAI bmshj2018-factorized (published)"
COMPRESSAI_POINTS = [(0.123, 26.91), (0.288, 29.62), (0.440, 31.28), (0.648, 32.96), (0.967, 35.38)]
ANCHOR = "UN+Q"
# (training arm of `qcompile codec train --quantization`, export quantization) -> the paper's name
ARMS = {("un", "round"): "UN+Q", ("un", "universal"): "UN+UQ", ("uq-sr", "universal"): "UN+UQ+SR"}
GOAL_PCT = -10.0  # the best arm's BD-rate against JPEG


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*", type=Path,
                        help="codec bundles (default: benchmarks/results/codec/**/*.qcodec)")
    parser.add_argument("--kodak", type=Path, default=KODAK)
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--holdout", type=int, default=5, help="the last N sorted photos were held out of training")
    parser.add_argument("--jpeg-qualities", default=",".join(map(str, JPEG_QUALITIES)))
    parser.add_argument("--anchor", default=ANCHOR, help="the curve every arm's BD-rate is also taken against "
                        "(UN+Q; bundles without a curve field: 'round')")
    parser.add_argument("--plot", type=Path, default=common.RESULTS_DIR / f"{NAME}_rd.png")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="ignore cached per-bundle results")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 Kodak images, 1 held-out photo")
    return parser.parse_args(argv)


def _key(bundle: Path, images: list[str]) -> str:
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()[:16]
    return f"{digest}:{hashlib.sha256(','.join(images).encode()).hexdigest()[:8]}"


def evaluate_sets(bundles: list[Path], sets: dict[str, list[Path]], qualities: list[int], cache: Path,
                  fresh: bool) -> dict[str, dict[str, Any]]:
    """Per image set: codec results (cached per bundle) and the JPEG curve."""
    import tempfile

    done = {} if fresh or not cache.exists() else json.loads(cache.read_text())
    out = {}
    for name, files in sets.items():
        images = [(p.name, read_image(p)[0]) for p in files]
        codecs = []
        for bundle in bundles:
            key = f"{name}:{_key(bundle, [n for n, _ in images])}"
            if key not in done:
                with tempfile.TemporaryDirectory() as tmp:
                    done[key] = evaluate_codec(bundle, images, Path(tmp), log=lambda m, s=name: print(f"[{s}] {m}"),
                                               intra_op_threads=1)
                tmp_cache = cache.with_name(cache.name + ".tmp")
                tmp_cache.write_text(json.dumps(done))
                os.replace(tmp_cache, cache)
            codecs.append({**done[key], "curve": arm_of(done[key])})
        jpeg = [evaluate_jpeg(q, images) for q in qualities]
        out[name] = {"images": [n for n, _ in images], "codecs": codecs, "jpeg": jpeg,
                     "curves": curves_of(codecs + jpeg)}
    return out


def arm_of(result: dict[str, Any]) -> str:
    """The curve of an evaluated bundle: its ``curve`` field, else the paper's name of (arm, quantization)."""
    fields = result["codec"]
    if fields.get("curve"):
        return fields["curve"]
    arm = (fields.get("training") or {}).get("quantization")
    return ARMS.get((arm, fields.get("quantization")), f"{arm}/{result['curve']}" if arm else result["curve"])


def bd_table(curves: dict[str, list[dict[str, Any]]], anchor: str, with_compressai: bool) -> list[dict[str, Any]]:
    """Each codec curve against the anchor arm, JPEG and (Kodak) CompressAI's published points."""
    refs = {JPEG: [(p["bpp"], p["psnr"]) for p in curves[JPEG]]}
    anchor = anchor if anchor in curves else "round"  # the rounding export is UN+Q when no curve is named
    if anchor in curves:
        refs[anchor] = [(p["bpp"], p["psnr"]) for p in curves[anchor]]
    if with_compressai:
        refs[COMPRESSAI] = COMPRESSAI_POINTS
    rows = []
    for name, points in curves.items():
        if name == JPEG:
            continue
        test = [(p["bpp"], p["psnr"]) for p in points]
        for ref_name, ref in refs.items():
            if ref_name == name:
                continue
            row = {"curve": name, "anchor": ref_name, "points": len(test), "bd_rate_pct": None}
            if len(test) >= 2:
                row.update(bd_rate(ref, test))
            front = pareto(test)  # dominated points (an under-trained high λ) left out
            row["pareto_points"] = len(front)
            row["bd_rate_pareto_pct"] = (bd_rate(pareto(ref), front)["bd_rate_pct"]
                                         if len(front) >= 2 and len(pareto(ref)) >= 2 else None)
            rows.append(row)
    return rows


def compressai_status() -> dict[str, Any]:
    """Whether CompressAI's same-architecture model can be timed here; the reason when not."""
    try:
        import compressai  # noqa: F401
    except Exception as e:  # any import failure is the answer, reported as such
        return {"available": False, "reason": f"import compressai failed: {type(e).__name__}: {e}"}
    return {"available": True, "reason": None}


def timings(codecs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("encode_network_s", "encode_entropy_s", "decode_network_s", "decode_entropy_s")
    return [{"name": c["name"], "curve": c["curve"], "lambda": c["lambda"], **{k: c["mean"][k] for k in keys}}
            for c in codecs]


def main(argv=None) -> None:
    args = parse_args(argv)
    started, load_before = time.perf_counter(), common.load_average()
    bundles = sorted(args.bundles or BUNDLES.rglob("*.qcodec"))
    if not bundles:
        raise SystemExit(f"no codec bundles given and none in {BUNDLES}; train and export some first "
                         "(qcompile codec train ... / qcompile codec export ...)")
    kodak = image_files(args.kodak)
    held_out = image_files(args.photos)[-args.holdout:] if args.holdout else []
    if args.quick:
        kodak, held_out = kodak[:3], held_out[:1]
    sets = {"kodak": kodak, **({"held_out": held_out} if held_out else {})}
    qualities = [int(q) for q in args.jpeg_qualities.split(",")]
    out_path = args.out or common.RESULTS_DIR / f"{NAME}.json"
    common.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    results = evaluate_sets(bundles, sets, qualities, common.CACHE_DIR / f"{out_path.stem}.partial.json", args.fresh)
    for name, r in results.items():
        r["bd_rates"] = bd_table(r["curves"], args.anchor, with_compressai=name == "kodak")
    kodak_bd = [b for b in results["kodak"]["bd_rates"] if b["anchor"] == JPEG and b["bd_rate_pct"] is not None]
    best = min(kodak_bd, key=lambda b: b["bd_rate_pct"], default=None)
    goal = {"goal": f"best arm's BD-rate vs JPEG <= {GOAL_PCT}%", "best": best,
            "met": best is not None and best["bd_rate_pct"] <= GOAL_PCT}
    from qcompile.runtime.codec.plot import rd_plot

    top = max([c["mean"]["bpp"] for c in results["kodak"]["codecs"]] + [b for b, _ in COMPRESSAI_POINTS])
    rd_plot(results["kodak"]["curves"], args.plot, title=f"Kodak ({len(kodak)} images)",
            extra={COMPRESSAI: COMPRESSAI_POINTS}, max_bpp=1.25 * top)
    payload = {"bundles": [str(b) for b in bundles], "sets": {k: [p.name for p in v] for k, v in sets.items()},
               "jpeg_qualities": qualities, "results": results, "goal": goal,
               "timings_kodak": timings(results["kodak"]["codecs"]), "compressai": compressai_status(),
               "plot": str(args.plot)}
    path = common.write_results(NAME, args, payload, started, load_before)
    common.finish(path, render)


def _f(v, digits=2, sign=False) -> str | None:
    return None if v is None else (f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}")


def _range(b: dict[str, Any]) -> str:
    if b.get("psnr_low") is None:
        return "fewer than 2 points"
    if b["psnr_low"] >= b["psnr_high"]:
        return "no overlap"
    return f"{b['psnr_low']:.2f}–{b['psnr_high']:.2f}"


def render(record: dict[str, Any]) -> str:
    parts = [f"machine: {record['machine']['cpu']}, {record['machine']['cores']} cores; command: {record['command']}"]
    for name, r in record["results"].items():
        rows = [[p["name"], p["curve"], p.get("lambda"), _f(p["mean"]["bpp"], 4), _f(p["mean"]["psnr"]),
                 _f(p["mean"]["ms_ssim"], 4)] for p in r["codecs"] + r["jpeg"]]
        parts += [f"\n{name} ({len(r['images'])} images): mean per image",
                  common.markdown_table(["point", "curve", "λ", "bpp", "PSNR dB", "MS-SSIM"], rows)]
        bd = [[b["curve"], b["anchor"], b["points"], _f(b["bd_rate_pct"], 2, True), _range(b),
               f"{_f(b.get('bd_rate_pareto_pct'), 2, True)} ({b.get('pareto_points')} pts)"] for b in r["bd_rates"]]
        parts += [f"\n{name}: BD-rate (PSNR) of each curve against an anchor (negative: fewer bits)",
                  common.markdown_table(["curve", "anchor", "points", "BD-rate %", "PSNR range dB",
                                         "BD-rate %, Pareto points"], bd)]
    t = [[x["name"], x["curve"], x["lambda"], *(_f(1000 * x[k], 1) for k in ("encode_network_s", "encode_entropy_s",
                                                                             "decode_network_s", "decode_entropy_s"))]
         for x in record["timings_kodak"]]
    parts += ["\nKodak timings per image (ms, mean; onnxruntime 1 thread)",
              common.markdown_table(["point", "curve", "λ", "enc network", "enc entropy", "dec network",
                                     "dec entropy"], t)]
    goal = record["goal"]
    parts.append(f"\ngoal ({goal['goal']}): {'met' if goal['met'] else 'missed'}; best: {goal['best']}")
    parts.append(f"compressai: {record['compressai']}")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
