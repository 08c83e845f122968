"""The per-λ record of the learned-codec training runs: one row per exported bundle, from the
``train.json`` documents that benchmarks/codec_train.sh copied into benchmarks/results/codec/<arm>-<λ>/.

Prints a markdown table (docs/BENCHMARKS.md, "Learned image codec: training") and writes
benchmarks/results/codec/training.json. The rates are the model's own estimates (−Σ log₂ P of the
symbols over the image's pixels, no file header), PSNR of the 8-bit reconstruction.

    python benchmarks/codec_training_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "results" / "codec"
NAMES = {("un", "round"): "UN+Q", ("un", "universal"): "UN+UQ", ("uq-sr", "universal"): "UN+UQ+SR"}


def rows() -> list[dict]:
    out = []
    for path in sorted(ROOT.glob("*/train.json")):
        doc = json.loads(path.read_text())
        c = doc["config"]
        for b in doc.get("bundles", []):
            k, h = b.get("kodak_estimate") or {}, b.get("held_out_estimate") or {}
            out.append({"run": path.parent.name, "arm": NAMES.get((c["quantization"], b["quantization"]), "?"),
                        "lambda": c["lmbda"], "steps": doc["steps"], "crop": c["crop"],
                        "batch_size": c["batch_size"], "train_seconds": round(doc["seconds"], 1),
                        "alpha": doc.get("alpha"), "bundle": f"{path.parent.name}/{Path(b['path']).name}",
                        "bundle_bytes": b["bytes"], "tables": b["tables"],
                        "kodak_bpp_est": k.get("bpp"), "kodak_psnr_est": k.get("psnr"),
                        "held_out_bpp_est": h.get("bpp"), "held_out_psnr_est": h.get("psnr"),
                        "held_out_crops": doc.get("held_out_crops"),
                        "parity_max_abs_diff": max(b["parity"]["latent_max_abs_diff"],
                                                   b["parity"]["image_max_abs_diff"])})
    return sorted(out, key=lambda r: (r["arm"], r["lambda"]))


def main() -> None:
    table = rows()
    (ROOT / "training.json").write_text(json.dumps(table, indent=1) + "\n")
    print("| arm | λ | steps | train s | Kodak bpp (est.) | Kodak PSNR (est.) | held-out bpp (est.) "
          "| held-out PSNR (est.) | bundle | ORT max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['arm']} | {r['lambda']} | {r['steps']} | {r['train_seconds']:.0f} | {r['kodak_bpp_est']:.3f} "
              f"| {r['kodak_psnr_est']:.2f} | {r['held_out_bpp_est']:.3f} | {r['held_out_psnr_est']:.2f} "
              f"| {r['bundle_bytes'] / 1e6:.2f} MB | {r['parity_max_abs_diff']:.0e} |")


if __name__ == "__main__":
    main()
