"""The synthesis options in one plain, validated object (the CLI's flags, the API's keywords, the pool's record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from qcompile.errors import ConfigError
from qcompile.synthesis.augment import AugmentConfig
from qcompile.synthesis.labels import SoftLabelConfig
from qcompile.synthesis.similarity import METRICS


@dataclass(frozen=True)
class SynthesisConfig:
    """Defaults follow the IntraQ/HAST direct-synthesis recipe (see docs of :mod:`qcompile.synthesis`), except

    1. ``steps``: 500 rather than 1,000 per batch (the CPU budget);
    2. ``ce_weight``: the paper's value is unknown (the BN term here is a mean over layers);
    3. ``clamp``: pixels are kept in the image range [0, 1] (the recipe leaves them free). The pool
       calibrates activation ranges, and unclamped images spread far beyond what real inputs reach, so
       the first layer's 4-bit input grid calibrated on them is too coarse for real images.
    """

    images: int = 2048
    batch_size: int = 256
    steps: int = 500                   # Adam steps per batch
    lr: float = 0.5
    plateau_patience: int = 50         # ReduceLROnPlateau on the total loss
    min_lr: float = 1e-4
    ce_weight: float = 1.0             # λ_CE in L = L_BNS + λ_CE · L_CE(soft)
    similarity: str = "dot"
    clamp: bool = True                 # keep pixels in [0, 1] (image space) after every step
    labels: SoftLabelConfig = field(default_factory=SoftLabelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("images", "batch_size", "steps"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be at least 1, got {getattr(self, name)}", hint=f"pass {flag} N with N >= 1")
        if not self.lr > 0 or not self.min_lr > 0 or self.plateau_patience < 0:
            raise ConfigError(f"learning rates must be > 0 (got lr {self.lr}, min lr {self.min_lr})",
                              hint="pass a positive --lr")
        if not self.ce_weight >= 0:
            raise ConfigError(f"--ce-weight must be >= 0, got {self.ce_weight}", hint="0 turns the label term off (BNS only)")
        if self.similarity not in METRICS:
            raise ConfigError(f"unknown similarity {self.similarity!r}", hint=f"use one of: {', '.join(METRICS)}")

    @property
    def batches(self) -> int:
        return -(-self.images // self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"]["scale"] = list(self.augment.scale)
        return d

