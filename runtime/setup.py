"""Packages of ``qcompile-runtime``: this folder as ``qcompile.runtime``, subpackages discovered.

Only ``qcompile.runtime`` is installed, not ``qcompile`` itself: on a deployment machine ``qcompile`` is
a namespace package holding just the runtime; the full ``qcompile`` distribution adds the rest.
This folder is both the package and the project root, so the build files themselves (this one) are
kept out of the package. ``codecs/*.qcodec`` (trained codec bundles) are package data.
"""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
NAME = "qcompile.runtime"
BUILD_FILES = {"setup"}


class BuildPy(build_py):
    """``build_py`` without this project's own build scripts among the package's modules."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == NAME and m[1] in BUILD_FILES)]


version = re.search(r'^__version__ = "([^"]+)"', (HERE / "version.py").read_text(encoding="utf-8"), re.M).group(1)
setup(
    version=version,
    packages=[NAME] + [f"{NAME}.{sub}" for sub in find_packages(str(HERE))],
    package_dir={NAME: "."},
    package_data={NAME: ["codecs/*.qcodec"]},  # the shipped codecs (qcompile.runtime.codec.shipped)
    cmdclass={"build_py": BuildPy},
)
