"""What to quantize and how: a small explicit spec, resolved into a per-site plan.

``QuantSpec`` is what the user says (bits, quantizer, first/last-layer policy, per-layer
overrides); ``build_plan`` resolves it against the traced graph into one ``SitePlan`` per
Conv/Linear. Passes consume the plan; ``inspect`` prints it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field

from torch import fx

from qcompile.errors import ConfigError
from qcompile.quantizers import WEIGHT_QUANTIZERS
from qcompile.validation import is_int

LAYER_POLICIES = ("quantize", "8bit", "float")


@dataclass
class QuantSpec:
    """User-level quantization settings (CLI flags and API arguments map 1:1 onto these)."""

    method: str = "ste"
    w_bits: int = 4
    a_bits: int | None = 8  # None: activations stay float
    quantizer: str = "uniform"  # weight quantizer: uniform | uniform-asym | dorefa | bwn
    per_channel: bool | None = None  # None: the quantizer's usual choice (uniform: yes; dorefa/bwn: no)
    first_layer: str = "quantize"  # quantize | 8bit | float
    last_layer: str = "quantize"
    overrides: dict[str, int] = field(default_factory=dict)  # glob on site name -> weight bits (0 = float)
    method_options: dict = field(default_factory=dict)  # the method plug-in's own settings
    group_size: int | None = None  # Linear weights in blocks of this many inputs (MatMulNBits); None: per channel
    # exact | ort-int8 (onnxruntime's integer kernels; qcompile.integer) | auto (qcompile.targets picks one of
    # them; a plan holds the one picked). "exact" here, so a run saved before targets existed reloads as exact.
    target: str = "exact"

    def validate(self) -> None:
        if not (is_int(self.w_bits) and 1 <= self.w_bits <= 8):
            raise ConfigError(f"--w-bits must be an integer in 1..8, got {self.w_bits!r}",
                              hint="pick 1, 2, 4 or 8 for packed storage (3, 5-7 are stored in the next container)")
        if self.a_bits is not None and not (is_int(self.a_bits) and 2 <= self.a_bits <= 8):
            raise ConfigError(
                f"--a-bits must be an integer in 2..8, or none for float activations, got {self.a_bits!r}",
                hint="use --a-bits 8 (or 4, 2), or --a-bits none (API: a_bits=None) to keep activations float",
            )
        for pattern, bits in self.overrides.items():
            if not (isinstance(pattern, str) and pattern and is_int(bits) and 0 <= bits <= 8):
                raise ConfigError(f"--layer-bits {pattern}={bits}: weight bits must be an integer in 1..8, or 0 to "
                                  "keep the layer float",
                                  hint=f"e.g. --layer-bits '{pattern}=8' (API: layer_bits={{{pattern!r}: 8}}), "
                                       f"or '{pattern}=0' to keep it float")
        if self.quantizer not in WEIGHT_QUANTIZERS:
            raise ConfigError(f"unknown --quantizer {self.quantizer!r}", hint=f"choose one of {', '.join(WEIGHT_QUANTIZERS)}")
        if self.quantizer == "bwn" and self.w_bits != 1:
            raise ConfigError("BWN is binary: it needs --w-bits 1", hint="use --w-bits 1 or another --quantizer")
        from qcompile.targets import CHOICES, ORT_INT8, integer_kernel_obstacle

        if self.target not in CHOICES:
            raise ConfigError(f"unknown --target {self.target!r}", hint=f"choose one of {', '.join(CHOICES)}")
        obstacle = integer_kernel_obstacle(self) if self.target == ORT_INT8 else None
        if obstacle is not None:  # onnxruntime's integer kernels: see qcompile.targets for the rules
            raise ConfigError(obstacle.message, hint=obstacle.hint)
        for policy in (self.first_layer, self.last_layer):
            if policy not in LAYER_POLICIES:
                raise ConfigError(f"unknown layer policy {policy!r}", hint=f"choose one of {', '.join(LAYER_POLICIES)}")
        if self.group_size is not None:
            from qcompile.quantizers.block import check_group_spec

            check_group_spec(self)

    def label(self) -> str:
        """The quantizer and bits in a few characters, e.g. 'uniform W4A8' or 'bwn W1'."""
        group = f" g{self.group_size}" if self.group_size else ""
        return f"{self.quantizer}{group} W{self.w_bits}" + (f"A{self.a_bits}" if self.a_bits else "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantSpec:
        return cls(**d)


@dataclass
class SitePlan:
    """How one Conv/Linear is quantized. ``w_bits is None`` means it stays float (``reason`` says why)."""

    name: str
    op: str
    w_bits: int | None
    a_bits: int | None
    quantizer: str
    per_channel: bool
    reason: str = ""
    group_size: int | None = None  # a Linear site's weight blocks (QuantSpec.group_size); None: per channel

    @property
    def quantized(self) -> bool:
        return self.w_bits is not None


@dataclass
class QuantPlan:
    spec: QuantSpec  # its target resolved: exact or ort-int8
    sites: list[SitePlan]
    target_reason: str = ""  # why spec.target (qcompile.targets.resolve_target)

    def site(self, name: str) -> SitePlan | None:
        return next((s for s in self.sites if s.name == name), None)

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "target_reason": self.target_reason,
                "sites": [asdict(s) for s in self.sites]}


def _default_per_channel(quantizer: str) -> bool:
    return quantizer.startswith("uniform")


def build_plan(gm: fx.GraphModule, spec: QuantSpec) -> QuantPlan:
    """Resolve ``spec`` against the Conv/Linear sites of ``gm`` (in graph order)."""
    from qcompile.passes.sites import find_sites

    spec.validate()
    found = [info for _, info in find_sites(gm)]
    if not found:
        raise ConfigError("the model has no Conv1d/Conv2d/Linear layers to quantize",
                          hint="check the model factory, or that its layers are not hidden inside --leaf modules")
    per_channel = spec.per_channel if spec.per_channel is not None else _default_per_channel(spec.quantizer)
    unmatched = [p for p in spec.overrides if not any(fnmatch.fnmatchcase(i.name, p) for i in found)]
    if unmatched:
        raise ConfigError(f"--layer-bits pattern(s) {unmatched} match no layer",
                          hint=f"layers are: {', '.join(i.name for i in found)}")
    sites = []
    for idx, info in enumerate(found):
        w_bits, a_bits, quantizer, reason = spec.w_bits, spec.a_bits, spec.quantizer, ""
        policy = spec.first_layer if idx == 0 else spec.last_layer if idx == len(found) - 1 else "quantize"
        if policy == "float":
            w_bits, a_bits, reason = None, None, f"{'first' if idx == 0 else 'last'} layer kept in float by policy"
        elif policy == "8bit":
            w_bits, quantizer = 8, "uniform"
            a_bits = 8 if a_bits is not None else None
            reason = f"{'first' if idx == 0 else 'last'} layer at 8 bits by policy"
        for pattern, bits in spec.overrides.items():
            if fnmatch.fnmatchcase(info.name, pattern):
                w_bits, reason = (bits or None), f"override {pattern}={bits}"
                if bits == 0:
                    a_bits = None
                elif quantizer == "bwn" and bits != 1:
                    quantizer = "uniform"
        group = spec.group_size if info.op == "Linear" and w_bits is not None and quantizer == "uniform" else None
        sites.append(SitePlan(info.name, info.op, w_bits, a_bits, quantizer,
                              per_channel if quantizer == spec.quantizer else _default_per_channel(quantizer), reason,
                              group))
    return QuantPlan(spec, sites)
