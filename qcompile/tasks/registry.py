"""Tasks registered by name, so a method, a saved run or a checkpoint can name the task it uses."""

from __future__ import annotations

from qcompile.errors import ConfigError
from qcompile.tasks.base import Task
from qcompile.tasks.classification import Classification
from qcompile.tasks.codec import Codec

DEFAULT = "classification"

_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Make the task class ``cls`` available by its ``name``; usable as a class decorator."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available_tasks() -> list[str]:
    return sorted(_REGISTRY)


def get_task(task: str | Task | None = None) -> Task:
    """A task object from a name, a task object (returned as it is) or None (classification)."""
    if isinstance(task, Task):
        return task
    name = DEFAULT if task is None else task
    if name not in _REGISTRY:
        raise ConfigError(f"unknown task {name!r}", hint=f"use one of: {', '.join(available_tasks())} "
                                                         "(or register_task your own Task subclass)")
    return _REGISTRY[name]()


register_task(Classification)
register_task(Codec)
