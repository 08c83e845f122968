"""Package list and dependencies of the ``qcompile`` distribution (metadata lives in pyproject.toml).

Packages are discovered, never listed by hand: every folder with an ``__init__.py`` under the project's
top-level folders is installed under the ``qcompile`` namespace (``passes/`` as ``qcompile.passes``,
``cli/`` as ``qcompile.cli``), so a new subpackage cannot be left out of the wheel.

``qcompile.runtime`` (the ``runtime/`` folder) is its own distribution, ``qcompile-runtime``, which this
one requires at the same version. Only an editable install of a checkout (``pip install -e .``; see
``packaging/qcompile_build.py``) maps ``runtime/`` directly and needs no runtime wheel.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
FOLDERS = {"qcompile": "qcompile", "qcompile.passes": "passes", "qcompile.cli": "cli"}
RUNTIME = ("qcompile.runtime", "runtime")
RUNTIME_DEPENDENCIES = ["numpy>=1.24", "onnxruntime>=1.24"]  # keep equal to runtime/pyproject.toml's
COMPILER_DEPENDENCIES = [
    "torch>=2.9,<3",
    "onnx>=1.20",
    "onnx_ir>=0.1.12",
    "onnxscript>=0.5",
    "click>=8.1",
    "rich>=13",
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "pillow>=9",
]


def version() -> str:
    text = (ROOT / "runtime" / "version.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def packages_of(name: str, folder: str) -> list[str]:
    """``name`` and every subpackage of ``folder`` (folders with an ``__init__.py``) under it."""
    return [name] + [f"{name}.{sub}" for sub in find_packages(str(ROOT / folder))]


editable = os.environ.get("QCOMPILE_EDITABLE") == "1"
folders = {**FOLDERS, **(dict([RUNTIME]) if editable else {})}
runtime = RUNTIME_DEPENDENCIES if editable else [f"qcompile-runtime=={version()}"]

setup(
    version=version(),
    packages=[p for name, folder in folders.items() for p in packages_of(name, folder)],
    package_dir=folders,
    install_requires=[*runtime, *COMPILER_DEPENDENCIES],
)
