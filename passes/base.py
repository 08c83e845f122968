"""The pass interface: torch.fx's ``PassBase`` plus a report.

A pass returns torch's ``PassResult(graph_module, modified)``; what it did (sites rewritten, what it
skipped and why) goes to ``self.report`` and is appended to ``graph_module.meta["qcompile.reports"]``
so a pipeline's history travels with the module.
"""

from __future__ import annotations

import abc
from typing import Any

from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassBase, PassResult

REPORTS_KEY = "qcompile.reports"


class GraphPass(PassBase):
    """Subclasses implement ``run(gm) -> (modified, report_dict)``."""

    def __init__(self) -> None:
        self.report: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return type(self).__name__

    @abc.abstractmethod
    def run(self, gm: GraphModule) -> tuple[bool, dict[str, Any]]:
        """Rewrite ``gm`` in place; return whether it changed and a JSON-friendly report."""

    def call(self, gm: GraphModule) -> PassResult:
        modified, report = self.run(gm)
        if modified:
            gm.graph.lint()
            gm.recompile()
        self.report = {"pass": self.name, "modified": modified, **report}
        gm.meta.setdefault(REPORTS_KEY, []).append(self.report)
        return PassResult(gm, modified)


def reports(gm: GraphModule) -> list[dict[str, Any]]:
    """The reports of every pass run on ``gm`` so far, in order."""
    return list(gm.meta.get(REPORTS_KEY, []))
