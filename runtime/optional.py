"""Optional dependencies of ``qcompile-runtime``: import one, or say which extra installs it.

The runtime needs only numpy, onnxruntime and constriction. A few features need more: ``folder:``
data and the codec's image files are read with pillow, ``digits`` is scikit-learn's bundled set,
``bench``'s information bound reads the ONNX file with ``onnx``, and the codec's rate–distortion
plot draws with matplotlib. On a deployment machine those may be absent, and a bare ``ImportError``
traceback would not say what to do, so each is imported through :func:`require`. The extras in
``runtime/pyproject.toml`` (``qcompile-runtime[images]`` …) are the names :data:`EXTRAS` gives.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from qcompile.runtime.errors import MissingDependencyError

# import name -> (pip package, qcompile-runtime extra that installs it)
EXTRAS = {
    "PIL": ("pillow", "images"),
    "sklearn": ("scikit-learn", "digits"),
    "onnx": ("onnx", "onnx"),
    "matplotlib": ("matplotlib", "plot"),
}


def require(module: str, needed_for: str) -> ModuleType:
    """``import module`` (e.g. ``"PIL.Image"``), or :class:`MissingDependencyError` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = EXTRAS[module.partition(".")[0]][0]
        raise MissingDependencyError(f"{needed_for} needs the {package} package, which is not installed",
                                     hint=install_hint(module)) from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported here (it is imported to find out, as its first use would)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def install_hint(module: str) -> str:
    """How to install ``module`` for the runtime: ``pip install 'qcompile-runtime[onnx]' (or: pip install onnx)``."""
    package, extra = EXTRAS[module.partition(".")[0]]
    return f"pip install 'qcompile-runtime[{extra}]' (or: pip install {package})"
