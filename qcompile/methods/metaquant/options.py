"""MetaQuant's settings (``QuantSpec.method_options``), validated once with actionable errors.

The defaults follow the paper (Sec. 5.1): a hidden width of 100, bias-free FC
meta-networks without a nonlinearity, the meta-net trained by Adam at 1e-3, and the forward of
Eq. (6). Note that these defaults make FC-Grad and MultiFC *linear* in their input (FC-Grad is a
single learned gain on the gradient, MultiFC a gain proportional to W̃) —
set ``nonlinearity`` and/or ``bias`` for a genuinely nonlinear meta-network.

One deviation from the paper, by default: **MultiFC on a sign-symmetric quantizer (BWN) gets FC
biases.** A bias-free MultiFC has M(0) = 0 for any nonlinearity (none, relu, tanh), so its
meta-gradient g ⊙ M(W̃) = g ⊙ W̃·h(W̃) vanishes at W̃ = 0. For BWN W̃ = W, and SGD's update
W ← W·(1 − lr·g·h(W)) is multiplicative: no weight can cross zero, i.e. no code can change, while
lr·g·h < 1 (a 1-layer example in the tests; none of the benchmark ResNet's 19,464 signs changed in
750 SGD steps). With biases M(W̃) = c·W̃ + d, and the intercept d acts like an STE gain at W = 0. The paper
reports no BWN-MultiFC result; the choice between biases and re-centring the input W̃ as DoReFa's
was made by measurement (docs/BENCHMARKS.md, "MultiFC on BWN"). ``bias=False`` keeps the paper's
exact form and warns when it freezes signs. DoReFa's W̃ lies in [0, 1] with ½ at W = 0, so its
MultiFC keeps the paper's bias-free form: it trains as is.

``CLI_OPTIONS`` are the same settings as command-line flags (``--meta``, ``--meta-hidden``, ...).
This module imports no torch: ``qcompile --help`` reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from qcompile.errors import ConfigError
from qcompile.methods.cli_options import CliOption, CliOptions
from qcompile.validation import is_int, is_number, require

META_NETS = ("fc-grad", "multifc", "lstmfc")
SIGN_FREEZE = ("MultiFC in the paper's bias-free form on a sign-symmetric quantizer (BWN) cannot change a "
               "weight's sign: its meta-gradient g ⊙ M(W̃) vanishes at W̃ = W = 0, so SGD multiplies each "
               "weight by (1 − lr·g·M(W)/W)")
SIGN_FREEZE_HINT = "leave the MultiFC bias unset (drop --no-meta-bias / bias=False): the default adds FC biases"
NONLINEARITIES = ("relu", "tanh")
FORWARD_MODES = ("paper", "reference")


@dataclass(frozen=True)
class MetaQuantOptions:
    """What the user may choose; see the module docstring for the defaults' provenance.

    - ``meta``: the meta-network variant (FC-Grad: g_Ŵ → g_W̃; MultiFC: g_Ŵ ⊙ M(W̃);
      LSTMFC: g_Ŵ ⊙ FC(LSTM(W̃)) with per-weight state carried across iterations).
    - ``layers``: Linear layers of the FC part — the whole net for FC-Grad/MultiFC (default 2:
      1→H→1), the head after the LSTM for LSTMFC (default 1: H→1). None: the variant's default.
    - ``nonlinearity``: None, 'relu' or 'tanh' between the FC layers.
    - ``bias``: FC biases (the LSTMFC head always has one, as in the paper). None (default): off
      (the paper's form), except MultiFC on a sign-symmetric quantizer, where it is on (see the
      module docstring); False there is the paper's exact form, which freezes every sign.
    - ``forward_mode``: 'paper' (Eq. 6: the forward uses the update that is then committed) or
      'reference' (the reference code's stale value W_t − lr·π_{t−1}: the previous update, applied twice).
    - ``meta_lr`` / ``meta_lr_decay``: Adam's lr for φ, optionally decayed with the base lr
      schedule (the paper says it is; the reference code never does).
    - ``chunk_size``: weights per meta-net call; bounds the meta-net's activation memory to
      chunk_size × H floats per hidden layer, at the cost of recomputing the meta-net forward
      (0: a whole layer at once and its graph kept — faster, N × H floats per hidden layer;
      see :mod:`.chunking`).
    """

    meta: str = "multifc"
    hidden: int = 100
    layers: int | None = None
    nonlinearity: str | None = None
    bias: bool | None = None
    forward_mode: str = "paper"
    meta_lr: float = 1e-3
    meta_lr_decay: bool = False
    chunk_size: int = 1 << 18

    def __post_init__(self) -> None:
        if isinstance(self.meta, str):
            object.__setattr__(self, "meta", self.meta.lower())
        if isinstance(self.nonlinearity, str) and self.nonlinearity.lower() in ("none", ""):
            object.__setattr__(self, "nonlinearity", None)
        _validate(self)

    @property
    def fc_layers(self) -> int:
        """``layers`` resolved against the variant's default."""
        if self.layers is not None:
            return self.layers
        return 1 if self.meta == "lstmfc" else 2

    def resolved_bias(self, sign_symmetric: bool) -> bool:
        """FC biases for quantizers whose W̃ is (``sign_symmetric``) or is not centred on zero."""
        if self.bias is not None:
            return self.bias
        return self.meta == "multifc" and sign_symmetric

    def freezes_signs(self, sign_symmetric: bool) -> bool:
        """True for the paper's bias-free MultiFC on a sign-symmetric quantizer: no weight can
        cross zero under SGD (see the module docstring)."""
        return self.meta == "multifc" and sign_symmetric and not self.resolved_bias(sign_symmetric)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MetaQuantOptions:
        """Build from ``QuantSpec.method_options``; unknown keys are an error naming the known ones."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown MetaQuant option(s): {', '.join(unknown)}",
                              hint=f"accepted options: {', '.join(sorted(known))}")
        return cls(**data)


def _validate(o: MetaQuantOptions) -> None:
    require(o.meta in META_NETS, f"unknown meta-network {o.meta!r}", f"choose one of {', '.join(META_NETS)}")
    require(is_int(o.hidden) and o.hidden >= 1, f"hidden must be an integer >= 1, got {o.hidden!r}",
             "the paper uses hidden=100")
    require(o.layers is None or (is_int(o.layers) and o.layers >= 1),
             f"layers must be an integer >= 1, got {o.layers!r}",
             "FC-Grad/MultiFC: 2 is the paper's 1→H→1; LSTMFC: 1 Linear after the LSTM")
    require(o.nonlinearity is None or o.nonlinearity in NONLINEARITIES,
             f"unknown nonlinearity {o.nonlinearity!r}", f"choose none, {', '.join(NONLINEARITIES)}")
    require(o.bias is None or isinstance(o.bias, bool), f"bias must be true or false, got {o.bias!r}",
             "leave it unset for the default (off, but on for MultiFC with BWN); false is the paper's form")
    require(o.forward_mode in FORWARD_MODES, f"unknown forward_mode {o.forward_mode!r}",
             "'paper' (Eq. 6, default) or 'reference' (the reference code's stale look-ahead)")
    require(is_number(o.meta_lr) and o.meta_lr >= 0,
             f"meta_lr must be a number >= 0, got {o.meta_lr!r}", "the paper uses meta_lr=1e-3")
    require(isinstance(o.meta_lr_decay, bool), f"meta_lr_decay must be true or false, got {o.meta_lr_decay!r}",
             "true decays the meta lr with the base lr schedule")
    require(is_int(o.chunk_size) and o.chunk_size >= 0,
             f"chunk_size must be an integer >= 0, got {o.chunk_size!r}",
             "e.g. 262144 weights per meta-net call; 0 keeps a whole layer's graph (fast, more memory)")


CLI_OPTIONS = CliOptions(
    title="MetaQuant",
    description="The paper quantizes weights only: add --a-bits none to match it.",
    usage="with --quantizer dorefa or bwn",
    options=(
        CliOption("--meta", "meta", choices=META_NETS, case_sensitive=False,
                  help="MetaQuant meta-network: FC-Grad (g → g), MultiFC (g ⊙ M(W̃)), LSTMFC (g ⊙ FC(LSTM(W̃))) "
                       "[default: multifc]."),
        CliOption("--meta-hidden", "hidden", type=int, min=1, help="Hidden width of the meta-network [default: 100]."),
        CliOption("--meta-layers", "layers", type=int, min=1,
                  help="Linear layers of the meta-network's FC part [default: 2 (1→H→1); LSTMFC: 1 after the LSTM]."),
        CliOption("--meta-nonlinearity", "nonlinearity", choices=("none", *NONLINEARITIES),
                  help="Between the FC layers [default: none — as the paper: FC-Grad is then a learned gain]."),
        CliOption("--meta-bias/--no-meta-bias", "bias", type=bool,
                  help="Biases in the FC layers [default: off, except MultiFC with --quantizer bwn: on; there "
                       "--no-meta-bias is the paper's form, which cannot flip any weight's sign]."),
        CliOption("--forward-mode", "forward_mode", choices=FORWARD_MODES,
                  help="'paper' (Eq. 6: the forward uses the update then committed) or 'reference' (the reference "
                       "code's stale look-ahead) [default: paper]."),
        CliOption("--meta-lr", "meta_lr", type=float, min=0, help="Adam lr of the meta-network [default: 1e-3]."),
        CliOption("--meta-lr-decay/--no-meta-lr-decay", "meta_lr_decay", type=bool,
                  help="Decay the meta lr with the --schedule of the base lr [default: off]."),
        CliOption("--meta-chunk-size", "chunk_size", type=int, min=0,
                  help="Weights per meta-network call (bounds its memory); 0 = a whole layer at once [default: 262144]."),
    ),
)
"""MetaQuant's flags; each sets the :class:`MetaQuantOptions` field of its key."""
