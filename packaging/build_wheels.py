"""Build both wheels of this repository, ``qcompile-runtime`` and ``qcompile``, from a clean copy of the checkout.

    python packaging/build_wheels.py OUT_DIR      # prints the two wheel paths, runtime first

setuptools builds in the source tree (``build/``, ``*.egg-info``) and a wheel takes whatever an earlier
build left in ``build/lib``, a module deleted since included. Building from a fresh copy (without
those folders, caches and virtualenvs) gives wheels of exactly the files at hand, and leaves the
checkout untouched. The builds use pip's standard isolated build environment, as ``pip install .``
does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = {"qcompile-runtime": "runtime", "qcompile": "."}  # the runtime first: the compiler requires it
LEFT_OUT = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache",
                                  ".venv", "venv", "runs")


def build_wheels(out_dir: str | Path) -> dict[str, Path]:
    """``{distribution name: wheel path}``, the wheels written to ``out_dir``."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheels = {}
    with tempfile.TemporaryDirectory(prefix="qcompile-build-") as tmp:
        source = Path(tmp) / "src"
        shutil.copytree(ROOT, source, ignore=LEFT_OUT)
        for name, folder in PROJECTS.items():
            with tempfile.TemporaryDirectory(dir=tmp) as one:
                done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", one,
                                       str(source / folder)], capture_output=True, text=True)
                built = list(Path(one).glob("*.whl"))
                if done.returncode != 0 or len(built) != 1:
                    raise SystemExit(f"building the {name} wheel failed:\n{done.stdout}\n{done.stderr}")
                wheels[name] = Path(shutil.copy2(built[0], out_dir))
    return wheels


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for path in build_wheels(sys.argv[1]).values():
        print(path)
