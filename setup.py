"""Package list, dependencies and scripts of the ``qcompile`` distribution (metadata lives in pyproject.toml).

Packages are discovered, never listed by hand: every folder with an ``__init__.py`` under the project's
top-level folders is installed under the ``qcompile`` namespace (``passes/`` as ``qcompile.passes``,
``cli/`` as ``qcompile.cli``), so a new subpackage cannot be left out of the wheel.

``qcompile.runtime`` (the ``runtime/`` folder) is its own distribution, ``qcompile-runtime``, which this
one requires at the same version, with the extras the compiler uses (pillow and scikit-learn for data,
onnx for export). Only an editable install of a checkout (``pip install -e .``; see
``packaging/qcompile_build.py``) maps ``runtime/`` directly and needs no runtime wheel: it then takes
the runtime's dependencies and its ``qcompile-runtime`` command from ``runtime/pyproject.toml``, the
one place they are declared.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pyproject.toml's build requirements provide it
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent
FOLDERS = {"qcompile": "qcompile", "qcompile.passes": "passes", "qcompile.cli": "cli"}
RUNTIME = ("qcompile.runtime", "runtime")
RUNTIME_EXTRAS = ("digits", "images", "onnx", "plot")  # of qcompile-runtime; every one but gpu
SCRIPTS = {"qcompile": "qcompile.cli.main:main"}
COMPILER_DEPENDENCIES = [
    "torch>=2.9,<3",
    "onnx_ir>=0.1.12",
    "onnxscript>=0.5",
    "click>=8.1",
    "rich>=13",
    "matplotlib>=3.7",
]


def version() -> str:
    text = (ROOT / "runtime" / "version.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def runtime_project() -> dict:
    """The ``[project]`` table of ``runtime/pyproject.toml``."""
    with open(ROOT / "runtime" / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def packages_of(name: str, folder: str) -> list[str]:
    """``name`` and every subpackage of ``folder`` (folders with an ``__init__.py``) under it."""
    return [name] + [f"{name}.{sub}" for sub in find_packages(str(ROOT / folder))]


editable = os.environ.get("QCOMPILE_EDITABLE") == "1"
folders = {**FOLDERS, **(dict([RUNTIME]) if editable else {})}
if editable:
    project = runtime_project()
    runtime = [*project["dependencies"], *(r for e in RUNTIME_EXTRAS for r in project["optional-dependencies"][e])]
    scripts = {**SCRIPTS, **project["scripts"]}
else:
    runtime, scripts = [f"qcompile-runtime[{','.join(RUNTIME_EXTRAS)}]=={version()}"], SCRIPTS

setup(
    version=version(),
    packages=[p for name, folder in folders.items() for p in packages_of(name, folder)],
    package_dir=folders,
    install_requires=[*runtime, *COMPILER_DEPENDENCIES],
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in scripts.items()]},
)
