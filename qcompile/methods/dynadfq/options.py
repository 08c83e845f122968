"""DynaDFQ's settings (``QuantSpec.method_options``), checked once; torch-free (``qcompile --help`` reads it).

- ``bits``: the candidate widths, '4' or '2,3,4'. One width is a static configuration W_bA_b (every
  quantized layer's weights and input activations at b); several add the per-image bit selector, which
  picks one of them per layer and image.
- ``pool``: the synthetic pool (``qcompile synthesize ... --out pool.npz``) to calibrate and train on
  instead of real data (``--data-free pool.npz``; the same as ``--data pool:pool.npz``).
- ``target_bitops``: the selector's mean-BitOPs target as an equivalent width T (the cost of the same
  layers at static W_T A_T, selector included; see :mod:`.regulariser`); needed with several widths.
- ``bit_weight``: λ of the BitOPs regulariser (default 1); ``selector_lr``: the selector's learning rate
  (default 1e-2; the weights train at ``--lr``); ``selector_hidden``: the selector's hidden width (default
  32; its weights are 66·h + h·L·K int8 bytes, which matter against a small model's file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qcompile.errors import ConfigError
from qcompile.methods.cli_options import CliOption, CliOptions



def parse_bits(value: Any) -> tuple[int, ...]:
    """'4' | '2,3,4' | 4 | [2, 3, 4] → sorted distinct widths in 2..8."""
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    try:
        widths = tuple(sorted({int(item) for item in items}))
    except (TypeError, ValueError):
        widths = ()
    if not widths or any(not 2 <= b <= 8 for b in widths):
        raise ConfigError(f"--bits {value!r} is not a list of widths from 2 to 8",
                          hint="e.g. --bits 4 (static W4A4) or --bits 2,3,4 (candidates, for the bit selector)")
    return widths


@dataclass(frozen=True)
class DynaDFQOptions:
    bits: tuple[int, ...] = (4,)
    pool: str | None = None
    target_bitops: float | None = None
    bit_weight: float = 1.0
    selector_lr: float = 1e-2
    selector_hidden: int = 32

    @property
    def width(self) -> int:
        """The width the model is planned (and calibrated) at: the widest candidate."""
        return self.bits[-1]

    @property
    def dynamic(self) -> bool:
        return len(self.bits) > 1

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> DynaDFQOptions:
        unknown = sorted(set(options) - {"bits", "pool", "target_bitops", "bit_weight", "selector_lr", "selector_hidden"})
        if unknown:
            raise ConfigError(f"unknown DynaDFQ option(s) {', '.join(unknown)}",
                              hint="DynaDFQ takes bits, pool, target_bitops, bit_weight, selector_lr and selector_hidden")
        bits = parse_bits(options.get("bits", 4))
        target, given_weight = options.get("target_bitops"), options.get("bit_weight")
        weight = 1.0 if given_weight is None else float(given_weight)
        given_lr, given_hidden = options.get("selector_lr"), options.get("selector_hidden")
        selector_lr = 1e-2 if given_lr is None else float(given_lr)
        hidden = 32 if given_hidden is None else given_hidden
        listed = ",".join(map(str, bits))
        if len(bits) > 1 and target is None:
            raise ConfigError(f"--bits {listed} gives the bit selector several widths, but no --target-bitops",
                              hint=f"add --target-bitops T, the mean cost as an equivalent width from {bits[0]} to "
                                   f"{bits[-1]} (e.g. {(bits[0] + bits[-1]) / 2:g}: the cost of W{(bits[0] + bits[-1]) / 2:g}A"
                                   f"{(bits[0] + bits[-1]) / 2:g})")
        if len(bits) == 1 and any(v is not None for v in (target, given_weight, given_lr, given_hidden)):
            raise ConfigError(f"--target-bitops, --bit-weight, --selector-lr and --selector-hidden steer the bit selector, "
                              f"which one width (--bits {listed}) "
                              "does not have", hint="give several candidate widths, e.g. --bits 2,3,4, or drop them")
        if target is not None and not bits[0] <= float(target) <= bits[-1]:
            raise ConfigError(f"--target-bitops {target} is outside the candidate widths {bits[0]}..{bits[-1]} "
                              "(it is an equivalent width: the cost of static W_T A_T)",
                              hint=f"give a value from {bits[0]} to {bits[-1]}")
        if not weight >= 0 or not selector_lr > 0:
            raise ConfigError(f"--bit-weight {weight} must be >= 0 and --selector-lr {selector_lr} > 0",
                              hint="e.g. --bit-weight 1 --selector-lr 0.01")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or not 1 <= hidden <= 1024:
            raise ConfigError(f"--selector-hidden {hidden!r} is not a width from 1 to 1024",
                              hint="e.g. --selector-hidden 8 (a smaller selector file) or 32 (the default)")
        pool = options.get("pool")
        return cls(bits, None if pool is None else str(pool), None if target is None else float(target), weight,
                   selector_lr, hidden)


CLI_OPTIONS = CliOptions(
    title="DynaDFQ",
    description="Data-free quantization on a synthetic pool (qcompile synthesize): --bits B quantizes every "
                "layer's weights (nested mid-rise codes) and inputs at B bits; --bits 2,3,4 adds a per-image bit "
                "selector trained toward --target-bitops.",
    usage="with --method dynadfq",
    options=(
        CliOption("--bits", "bits", "Width(s) of weights and activations: one (static W_bA_b, e.g. 4) or a "
                  "candidate list for the per-image bit selector (e.g. 2,3,4) [default: 4].", metavar="B[,B...]"),
        CliOption("--data-free", "pool", "Synthetic pool (.npz from `qcompile synthesize`) to calibrate and train on "
                  "instead of --data.", metavar="POOL.npz"),
        CliOption("--target-bitops", "target_bitops", "Mean BitOPs per image the bit selector aims at, as an "
                  "equivalent width T: the cost of the same layers at static W_T A_T (e.g. 3).", type=float, min=0),
        CliOption("--bit-weight", "bit_weight", "Weight of the BitOPs regulariser [default: 1].", type=float, min=0),
        CliOption("--selector-lr", "selector_lr", "Learning rate of the bit selector (the weights use --lr) "
                  "[default: 0.01].", type=float, min=0),
        CliOption("--selector-hidden", "selector_hidden", "Hidden width of the bit selector (smaller: a smaller "
                  "file) [default: 32].", type=int, min=1),
    ),
)
