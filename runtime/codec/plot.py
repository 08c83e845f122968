"""The rate–distortion plot (PSNR against bpp, one line per curve), with matplotlib if it is installed.

matplotlib is the runtime's optional ``plot`` extra: without it, ``--plot`` says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qcompile.runtime.atomic import atomic_write
from qcompile.runtime.optional import require


def rd_plot(curves: dict[str, list[dict[str, Any]]], path: str | Path, title: str = "Rate–distortion",
            extra: dict[str, list[tuple[float, float]]] | None = None, max_bpp: float | None = None) -> int:
    """Write the plot PNG atomically; ``extra`` adds reference curves given as (bpp, PSNR) points;
    ``max_bpp`` zooms on rates up to it (the PSNR axis follows the points shown)."""
    matplotlib = require("matplotlib", "the rate–distortion plot (--plot)")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "the rate–distortion plot (--plot)")
    figure, axes = pyplot.subplots(figsize=(6.4, 4.8), dpi=120)
    for name, points in curves.items():
        style = "s--" if name == "JPEG" else "o-"
        axes.plot([p["bpp"] for p in points], [p["psnr"] for p in points], style, label=name, markersize=4)
    for name, points in (extra or {}).items():
        axes.plot([p[0] for p in points], [p[1] for p in points], "x:", label=name)
    if max_bpp is not None:
        shown = [p["psnr"] for pts in curves.values() for p in pts if p["bpp"] <= max_bpp]
        shown += [q for pts in (extra or {}).values() for b, q in pts if b <= max_bpp]
        axes.set_xlim(0, max_bpp)
        if shown:
            axes.set_ylim(min(shown) - 0.5, max(shown) + 0.5)
    axes.set_xlabel("bits per pixel (file size)")
    axes.set_ylabel("PSNR RGB (dB)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        return atomic_write(path, lambda f: figure.savefig(f, format="png"))
    finally:
        pyplot.close(figure)
