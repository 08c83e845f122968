"""Stop a run whose loss or weights stop being finite, instead of training on (and saving) NaNs.

One step with a learning rate far too high, or a NaN in the inputs, turns every weight into NaN;
after that the loop would run to the end, checkpoint the NaN model over the last good one and
export an artifact that outputs NaN. The loop checks each step's loss and, before every
checkpoint, the weights: the first non-finite value raises :class:`~qcompile.errors.TrainingDiverged`
saying where it happened, the likely causes and the fix, and the last good checkpoint stays on disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from qcompile.errors import TrainingDiverged
from qcompile.train.config import TrainConfig


def first_non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of ``state`` holding a NaN or an infinity."""
    for name, tensor in state.items():
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def diverged(what: str, where: str, config: TrainConfig, checkpoint: Path | None) -> TrainingDiverged:
    """The error for a run that stopped being finite: ``what`` happened ``where`` (epoch and step)."""
    lower = f"{config.lr / 10:g}"
    causes = (f"likely causes: a learning rate too high for {config.optimizer} (lr={config.lr:g}), "
              "inputs holding NaN or inf values, or a loss that overflows")
    if checkpoint is not None and checkpoint.is_file():
        kept = (f"the last good checkpoint, {checkpoint}, was kept (a resume continues with the same settings "
                "and would diverge again)")
    else:
        kept = "nothing was saved"
    return TrainingDiverged(f"{what} at {where}; training stopped ({causes})",
                            hint=f"start again with a lower learning rate (e.g. --lr {lower}, API lr={lower}) "
                                 f"and check the data for NaN/inf; {kept}")
