"""Print the tables of the recorded benchmark results (``benchmarks/results/*.json``) without rerunning.

    python benchmarks/show.py [NAME | PATH.json ...]

With no argument, the four figures' ``benchmarks/results/<name>.json``; a path shows any record
(e.g. a second run written with ``--out``), rendered by the script named in its ``benchmark`` field.

Each figure script renders its JSON record with its own ``render``; this calls the same function,
so the tables in docs/BENCHMARKS.md can be checked against (or regenerated from) the JSON files.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIGURES = ("size_bound", "latency", "qat_step_time", "mnist_accuracy", "spinning")


def main(names: list[str]) -> None:
    for name in names or FIGURES:
        path = Path(name) if name.endswith(".json") else common.RESULTS_DIR / f"{name}.json"
        if not name.endswith(".json") and name not in FIGURES:
            raise SystemExit(f"unknown figure {name!r}; choose from {', '.join(FIGURES)} or give a .json path")
        if not path.exists():
            print(f"## {name}: no results yet (run python benchmarks/{name}.py)\n")
            continue
        record = json.loads(path.read_text())
        quick = " (QUICK smoke run, not a result)" if record.get("quick") else ""
        print(f"## {record['benchmark']}{quick}\n\n`{record['command']}` on {record['date']}, load average "
              f"{record['load_before']} → {record['load_after']}, {record['wall_seconds']} s\n")
        print(importlib.import_module(record["benchmark"]).render(record))
        print()

if __name__ == "__main__":
    main(sys.argv[1:])
