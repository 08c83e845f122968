"""The method plug-in interface.

A method (STE, MetaQuant, universal quantization, DynaDFQ, ...) touches the core only here:
it chooses the weight quantizer of each planned site, may add graph passes after quantizer
insertion, and may supply its own training step. Methods register by name so the CLI and the
API find them (``qcompile.methods.get_method``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from qcompile.plan import QuantPlan, SitePlan
from qcompile.quantizers import WeightQuantizer, make_weight_quantizer

if TYPE_CHECKING:
    from qcompile.passes.base import GraphPass
    from qcompile.tasks import Task
    from qcompile.train.strategy import StepStrategy


class Method:
    """Default behaviour is plain STE QAT; plug-ins override what they change."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})

    def weight_quantizer(self, site: SitePlan) -> WeightQuantizer:
        return make_weight_quantizer(site.quantizer, site.w_bits, site.per_channel)

    def extra_passes(self, plan: QuantPlan) -> list[GraphPass]:
        return []

    def step_strategy(self) -> StepStrategy | None:
        """None: the loop's standard step (forward, loss, backward, optimizer step)."""
        return None

    def task(self) -> str | Task | None:
        """The task this method trains for (a registered name or a :class:`~qcompile.tasks.Task`, e.g. a
        codec's rate–distortion task). None: whatever the model/API asks for (classification by default)."""
        return None
