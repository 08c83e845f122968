"""DynaDFQ's settings (``QuantSpec.method_options``), checked once; torch-free (``qcompile --help`` reads it).

- ``bits``: the candidate widths, '4' or '2,3,4'. One width is a static configuration W_bA_b (every
  quantized layer's weights and input activations at b); several need the per-image bit selector,
  which this version does not have yet (a clear error says so).
- ``pool``: the synthetic pool (``qcompile synthesize ... --out pool.npz``) to calibrate and train on
  instead of real data (``--data-free pool.npz``; the same as ``--data pool:pool.npz``).
- ``target_bitops``: the selector's mean-BitOPs target; declared so the flag answers "not yet".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qcompile.errors import ConfigError
from qcompile.methods.cli_options import CliOption, CliOptions

NOT_YET = "the per-image bit selector (dynamic widths, --target-bitops) is not available in this version"
NOT_YET_HINT = "give one width for a static configuration, e.g. --bits 4 (W4A4)"


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

    @property
    def width(self) -> int:
        """The one width of a static configuration."""
        return self.bits[0]

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> DynaDFQOptions:
        unknown = sorted(set(options) - {"bits", "pool", "target_bitops"})
        if unknown:
            raise ConfigError(f"unknown DynaDFQ option(s) {', '.join(unknown)}",
                              hint="DynaDFQ takes bits, pool (and, later, target_bitops)")
        bits = parse_bits(options.get("bits", 4))
        if len(bits) > 1 or options.get("target_bitops") is not None:
            raise ConfigError(f"{NOT_YET} (asked for: --bits {','.join(map(str, bits))}"
                              f"{'' if options.get('target_bitops') is None else ', --target-bitops'})",
                              hint=NOT_YET_HINT)
        pool = options.get("pool")
        return cls(bits, None if pool is None else str(pool))


CLI_OPTIONS = CliOptions(
    title="DynaDFQ",
    description="Data-free quantization on a synthetic pool (qcompile synthesize). Static widths only so far: "
                "--bits B quantizes every layer's weights (nested mid-rise codes) and inputs at B bits.",
    usage="with --method dynadfq",
    options=(
        CliOption("--bits", "bits", "Width(s) of weights and activations: one (static W_bA_b, e.g. 4) or a "
                  "candidate list for the bit selector (e.g. 2,3,4; not available yet) [default: 4].", metavar="B[,B...]"),
        CliOption("--data-free", "pool", "Synthetic pool (.npz from `qcompile synthesize`) to calibrate and train on "
                  "instead of --data.", metavar="POOL.npz"),
        CliOption("--target-bitops", "target_bitops", "Mean BitOPs target of the bit selector (not available yet).",
                  type=float, min=0),
    ),
)
