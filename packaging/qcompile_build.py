"""Build backend of the ``qcompile`` distribution: setuptools, told whether the build is editable.

This repository ships two distributions (see ``setup.py`` and ``runtime/pyproject.toml``): the torch-free
``qcompile-runtime`` (the ``runtime/`` folder, installed as ``qcompile.runtime``) and the compiler
``qcompile``, whose wheel leaves ``qcompile.runtime`` to the runtime distribution and requires it at
the same version. A development checkout installed with ``pip install -e .`` has both folders at hand,
so the editable install maps ``runtime/`` itself instead of requiring a runtime wheel that no index
holds. setuptools cannot tell the two builds apart when it computes metadata, so this backend says so:
every editable hook runs with ``QCOMPILE_EDITABLE=1`` set; ``setup.py`` reads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (the PEP 517 hooks this backend does not change)

EDITABLE_FLAG = "QCOMPILE_EDITABLE"


def _editable(hook: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        previous = os.environ.get(EDITABLE_FLAG)
        os.environ[EDITABLE_FLAG] = "1"
        try:
            return hook(*args, **kwargs)
        finally:
            if previous is None:
                os.environ.pop(EDITABLE_FLAG, None)
            else:
                os.environ[EDITABLE_FLAG] = previous

    run.__name__ = hook.__name__
    return run


get_requires_for_build_editable = _editable(_setuptools.get_requires_for_build_editable)
prepare_metadata_for_build_editable = _editable(_setuptools.prepare_metadata_for_build_editable)
build_editable = _editable(_setuptools.build_editable)
