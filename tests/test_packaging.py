"""The two wheels this repository builds: what each contains and requires (built once, from a clean copy).

Installing them in fresh virtualenvs (torch-free for the runtime) is .ci/run's job: too slow for the suite.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import qcompile

ROOT = Path(__file__).resolve().parents[1]
# source folder -> where its files go in a wheel
COMPILER_FOLDERS = {"qcompile": "qcompile", "passes": "qcompile/passes", "cli": "qcompile/cli"}
RUNTIME_FOLDER = ("runtime", "qcompile/runtime")
BUILD_FILES = {"setup.py", "pyproject.toml", "qcompile_build.py", "build_wheels.py"}
VERSION = re.search(r'^__version__ = "([^"]+)"', (ROOT / "runtime" / "version.py").read_text(), re.M).group(1)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("wheels")
    done = subprocess.run([sys.executable, str(ROOT / "packaging" / "build_wheels.py"), str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    runtime, compiler = (Path(line) for line in done.stdout.split())
    assert runtime.name == f"qcompile_runtime-{VERSION}-py3-none-any.whl"
    assert compiler.name == f"qcompile-{VERSION}-py3-none-any.whl"
    return {"runtime": zipfile.ZipFile(runtime), "compiler": zipfile.ZipFile(compiler)}


def sources(folder: str, installed_as: str, skip: set[str] = frozenset()) -> set[str]:
    """Where every module of every package (folder with an ``__init__.py``) under ``folder`` lands in a wheel."""
    base = ROOT / folder
    packages = [d for d in [base, *base.rglob("*")] if (d / "__init__.py").is_file() and "__pycache__" not in d.parts]
    return {f"{installed_as}/{f.relative_to(base).as_posix()}" for d in packages for f in d.glob("*.py")
            if f.name not in skip}


def files(wheel: zipfile.ZipFile) -> set[str]:
    return {n for n in wheel.namelist() if ".dist-info/" not in n}


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def metadata(wheel: zipfile.ZipFile):
    return Parser().parsestr(dist_info(wheel, "METADATA"))


def test_compiler_wheel_has_every_module_of_every_package_and_no_runtime(wheels):
    expected = set().union(*(sources(folder, dest) for folder, dest in COMPILER_FOLDERS.items()))
    assert len(expected) > 50 and "qcompile/cli/commands/runtime.py" in expected
    got = files(wheels["compiler"])
    assert expected - got == set()
    assert not [n for n in got if n.startswith("qcompile/runtime/")]
    assert got - expected == set()  # nothing else: no stray build output, no top-level packages


def shipped_codecs() -> set[str]:
    """The trained codec bundles the runtime ships as package data (runtime/codecs/*.qcodec)."""
    return {f"{RUNTIME_FOLDER[1]}/codecs/{p.name}" for p in (ROOT / RUNTIME_FOLDER[0] / "codecs").glob("*.qcodec")}


def test_runtime_wheel_has_every_runtime_subpackage_and_nothing_of_the_compiler(wheels):
    expected = sources(*RUNTIME_FOLDER, skip={"setup.py"}) | shipped_codecs()
    assert {"qcompile/runtime/cli/main.py", "qcompile/runtime/data/sources.py", "qcompile/runtime/size.py",
            "qcompile/runtime/codec/session.py"} <= expected
    got = files(wheels["runtime"])
    assert got == expected
    assert "qcompile/__init__.py" not in got  # qcompile stays a namespace: the compiler wheel owns __init__.py


def test_no_build_files_in_either_wheel(wheels):
    for wheel in wheels.values():
        assert {Path(n).name for n in files(wheel)} & BUILD_FILES == set()


def test_versions_are_equal_and_the_compiler_pins_the_runtime(wheels):
    runtime, compiler = metadata(wheels["runtime"]), metadata(wheels["compiler"])
    assert runtime["Name"] == "qcompile-runtime" and compiler["Name"] == "qcompile"
    assert runtime["Version"] == compiler["Version"] == VERSION == qcompile.__version__
    requires = compiler.get_all("Requires-Dist")
    assert f"qcompile-runtime[digits,images,onnx,plot]=={VERSION}" in requires
    assert [r for r in requires if r.startswith("torch")] == ["torch<3,>=2.9"]


def test_runtime_requires_only_numpy_onnxruntime_constriction_and_offers_the_extras(wheels):
    meta = metadata(wheels["runtime"])
    requires = meta.get_all("Requires-Dist")
    assert [r for r in requires if "extra ==" not in r] == ["numpy>=1.24", "onnxruntime>=1.24", "constriction>=0.4"]
    assert set(meta.get_all("Provides-Extra")) == {"images", "digits", "onnx", "plot", "gpu"}
    assert 'matplotlib>=3.5; extra == "plot"' in requires
    assert 'pillow>=9; extra == "images"' in requires and 'scikit-learn>=1.3; extra == "digits"' in requires
    assert 'onnx>=1.20; extra == "onnx"' in requires
    assert not [r for r in requires if r.startswith(("torch", "click", "rich"))]


def test_each_wheel_installs_its_own_command(wheels):
    assert dist_info(wheels["runtime"], "entry_points.txt").split() == [
        "[console_scripts]", "qcompile-runtime", "=", "qcompile.runtime.cli.main:main"]
    assert dist_info(wheels["compiler"], "entry_points.txt").split() == [
        "[console_scripts]", "qcompile", "=", "qcompile.cli.main:main"]
