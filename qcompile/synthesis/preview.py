"""A grid PNG of pool images: one row per class, easy (one-hot) images first, then hard ones.

Images are shown in image space clipped to [0, 1] (synthetic pixels may leave it); each row is
labelled with its class and each hard image's title gives its label mass off the anchor (ε).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qcompile.atomic import atomic_write
from qcompile.errors import ConfigError
from qcompile.synthesis.pool import SyntheticPool


def write_preview(pool: SyntheticPool, path: str | Path, per_class: int = 8) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"preview {path} does not end in .png", hint="name the grid e.g. grid.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(pool.classes)
    fig, axes = plt.subplots(rows, per_class, figsize=(per_class * 0.9, rows * 0.95), squeeze=False)
    for c, row in enumerate(axes):
        chosen = [i for i in np.flatnonzero(pool.anchors == c) if not pool.hard[i]][: per_class // 2]
        chosen += [i for i in np.flatnonzero(pool.anchors == c) if pool.hard[i]][: per_class - len(chosen)]
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(chosen):
                image = np.clip(pool.images[chosen[j]], 0.0, 1.0).transpose(1, 2, 0)
                ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
                if pool.hard[chosen[j]]:
                    ax.set_title(f"ε={pool.eps[chosen[j]]:.2f}", fontsize=6)
            else:
                ax.axis("off")
        row[0].set_ylabel(pool.classes[c], fontsize=8)
    fig.suptitle("synthetic pool: easy (one-hot) then hard (soft) images per class", fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path
