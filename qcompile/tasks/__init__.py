"""Tasks: what a model is trained and judged for (see :mod:`qcompile.tasks.base`).

``classification`` is the default; a method names its task with ``Method.task``, an API user with
``qcompile.compile(..., task=...)``, and a new task plugs in with :func:`register_task` (plus
``qcompile.runtime.tasks.register_runtime_task`` for its torch-free report).
"""

from qcompile.tasks.base import Task
from qcompile.tasks.classification import Classification
from qcompile.tasks.codec import Codec
from qcompile.tasks.registry import available_tasks, get_task, register_task

__all__ = ["Classification", "Codec", "Task", "available_tasks", "get_task", "register_task"]
