"""Universal quantization's settings (``QuantSpec.method_options``), validated once with actionable errors.

Defaults and where they come from (../shared/methods/uq.md):

- ``mode`` 'sr': soft rounding r_α(s_α(y) + u) with universal quantization inside, annealed to hard
  rounding — the variant the notes expect to win (§3, §7); 'un' (y + u) and 'uq' (⌊y − u⌉ + u) are the
  paper's other two channels.
- α from 1 to 30, geometric (§7's experiment; §1.4's common recipe: start soft, raise α 3–30×).
- ``expected_grads`` off: in a model (no rate term) the only place for §1.3's expected derivative is the
  distortion path, where it is biased; the notes say to keep it off by default and ablate it (§1.3).
- ``export`` 'deterministic': hard-rounded codes, what integer back ends run (§4.3 option 2);
  'dither' keeps the trained channel: codes k plus a shared seed, decoded Δ(k + u) (§4.3 option 1).
- ``levels`` 64: the offsets u are the centres of 64 equal cells (``qcompile.runtime.dither`` step 6),
  in training and at deployment alike, so Δ(k + u) is a multiple of Δ/128 and a quantized layer still
  sums integers (2L·k + 2L·u) exactly in float32 — in PyTorch and onnxruntime bit for bit. The offsets'
  variance is 1/12 − 1/(12·64²), within 0.03 % of the continuous U(−½, ½).

``CLI_OPTIONS`` are the same settings as command-line flags. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from qcompile.errors import ConfigError
from qcompile.methods.cli_options import CliOption, CliOptions
from qcompile.validation import is_int, is_number, require

MODES = ("un", "uq", "sr")
SCHEDULES = ("geometric", "linear", "constant")
EXPORTS = ("deterministic", "dither")
MAX_SEED = (1 << 63) - 1  # the runtime's seeds are < 2^64; the manifest's JSON integers stay signed-64


@dataclass(frozen=True)
class UniversalOptions:
    """What the user may choose; see the module docstring for the defaults' provenance.

    - ``mode``: 'un' (additive noise y + u), 'uq' (⌊y − u⌉ + u with fresh u), 'sr' (r_α(s_α(y) + u), UQ inside);
    - ``alpha_start``/``alpha_end``/``alpha_schedule``: α of s_α and r_α over training (SR only);
    - ``expected_grads``: §1.3's expected derivative r_α(s + ½) − r_α(s − ½) instead of the sampled one (SR);
    - ``export``: 'deterministic' (round) or 'dither' (codes + seed; UN/UQ weights only, see ``dither_refusal``);
    - ``seed``: the dither's global seed; ``levels``: offsets per cell (a power of two, 2..1024).
    """

    mode: str = "sr"
    alpha_start: float = 1.0
    alpha_end: float = 30.0
    alpha_schedule: str = "geometric"
    expected_grads: bool = False
    export: str = "deterministic"
    seed: int = 0
    levels: int = 64

    def __post_init__(self) -> None:
        for key in ("mode", "alpha_schedule", "export"):
            value = getattr(self, key)
            if isinstance(value, str):
                object.__setattr__(self, key, value.lower())
        _validate(self)

    @property
    def dither(self) -> bool:
        return self.export == "dither"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UniversalOptions:
        """Build from ``QuantSpec.method_options``; unknown keys are an error naming the known ones."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown universal-quantization option(s): {', '.join(unknown)}",
                              hint=f"accepted options: {', '.join(sorted(known))}")
        return cls(**data)


def _validate(o: UniversalOptions) -> None:
    require(o.mode in MODES, f"unknown universal mode {o.mode!r}", "choose --uq-mode un, uq or sr")
    for key in ("alpha_start", "alpha_end"):
        value = getattr(o, key)
        require(is_number(value) and value > 0, f"{key} must be a finite number > 0, got {value!r}",
                "α is the sharpness of soft rounding: e.g. --uq-alpha-start 1 --uq-alpha-end 30")
    require(o.alpha_schedule in SCHEDULES, f"unknown alpha schedule {o.alpha_schedule!r}",
            f"choose one of {', '.join(SCHEDULES)}")
    require(isinstance(o.expected_grads, bool), f"expected_grads must be true or false, got {o.expected_grads!r}",
            "--uq-expected-grads or --no-uq-expected-grads")
    require(o.export in EXPORTS, f"unknown universal export form {o.export!r}",
            "choose --uq-export deterministic (hard-rounded codes) or dither (codes + shared seed)")
    require(not (o.export == "dither" and o.mode == "sr"),
            "--uq-export dither cannot deploy soft rounding: its decode r_α(k + u) is not Δ·(k + u), so the "
            "packed codes would not reproduce the trained weights",
            "use --uq-export deterministic with --uq-mode sr (α ends large, so rounding is its limit), or "
            "--uq-mode uq/un with --uq-export dither")
    require(is_int(o.seed) and 0 <= o.seed <= MAX_SEED, f"seed must be an integer in [0, 2^63), got {o.seed!r}",
            "e.g. --uq-seed 0")
    ok_levels = is_int(o.levels) and 2 <= o.levels <= 1024 and o.levels & (o.levels - 1) == 0
    require(ok_levels, f"levels must be a power of two from 2 to 1024, got {o.levels!r}",
            "the default 64 keeps quantized layers exact in float32; larger values need smaller layers")


CLI_OPTIONS = CliOptions(
    title="Universal quantization",
    description="Training channel per quantized weight and activation: UN (y + u), UQ (⌊y − u⌉ + u) or SR "
                "(r_α(s_α(y) + u), α annealed); export hard-rounded codes, or codes + a shared-seed dither.",
    usage="with --quantizer uniform (per-channel symmetric steps) and --w-bits 2..8",
    options=(
        CliOption("--uq-mode", "mode", choices=MODES, case_sensitive=False,
                  help="Training channel: un (additive uniform noise), uq (universal quantization, fresh "
                       "dither), sr (soft rounding + UQ, α annealed) [default: sr]."),
        CliOption("--uq-alpha-start", "alpha_start", type=float, min=0,
                  help="Soft-rounding sharpness α at the first step (sr) [default: 1]."),
        CliOption("--uq-alpha-end", "alpha_end", type=float, min=0,
                  help="α at the last step (sr) [default: 30]."),
        CliOption("--uq-alpha-schedule", "alpha_schedule", choices=SCHEDULES,
                  help="How α moves from start to end over the training steps [default: geometric]."),
        CliOption("--uq-expected-grads/--no-uq-expected-grads", "expected_grads", type=bool,
                  help="Expected derivative of r_α over the noise instead of the sampled one (sr) [default: off]."),
        CliOption("--uq-export", "export", choices=EXPORTS,
                  help="deterministic: hard-rounded packed codes; dither: packed codes + seed, decoded Δ(k + u) "
                       "by the runtime (un/uq; activations are rounded in both) [default: deterministic]."),
        CliOption("--uq-seed", "seed", type=int, min=0, help="Global seed of the shared dither [default: 0]."),
        CliOption("--uq-levels", "levels", type=int, min=2,
                  help="Offsets per cell: a power of two 2..1024 [default: 64, exact integer sums]."),
    ),
)
"""Universal quantization's flags; each sets the :class:`UniversalOptions` field of its key."""
