"""Task kinds: the registry of `TaskKind` classes.

A codebook's ``kind`` names a registered class; ``codebook.task`` is that class bound to the codebook.
Adding a kind is one module with a `TaskKind` subclass plus one registration::

    from annotune.tasks import register_task
    from annotune.tasks.base import TaskKind

    @register_task
    class RankingTask(TaskKind):
        name = "ranking"
        ...

Built-in kinds are registered below, in this order. Third-party packages can add kinds through the entry
point group ``annotune.tasks`` (``[project.entry-points."annotune.tasks"] ranking = "mypkg.ranking:RankingTask"``); they are
loaded the first time a kind is looked up that is not built in, or when the names are listed.
"""

from __future__ import annotations

from annotune.plugins import load_plugins
from annotune.tasks.base import CellReader, ParsedAnswer, Question, TaskKind
from annotune.tasks.dimensions import DimensionsTask
from annotune.tasks.multi import MultiTask
from annotune.tasks.qa import QATask
from annotune.tasks.single import SingleTask

ENTRY_POINT_GROUP = "annotune.tasks"

_REGISTRY: dict[str, type[TaskKind]] = {}


def register_task(cls: type[TaskKind]) -> type[TaskKind]:
    """Register a `TaskKind` subclass under ``cls.name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, TaskKind)):
        raise TypeError(f"{cls!r} is not a TaskKind subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} has no kind name (set the class attribute `name`)")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"task kind {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def unregister_task(name: str) -> None:
    """Remove a kind from the registry (tests; a plug-in that replaces a kind)."""
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    load_plugins(ENTRY_POINT_GROUP, register_task, lambda name: name in _REGISTRY)


def task_names() -> tuple[str, ...]:
    """The registered kinds, built-in ones first, in registration order."""
    _load_entry_points()
    return tuple(_REGISTRY)


def get_task(kind: str) -> type[TaskKind]:
    """The `TaskKind` class of ``kind``; KeyError (listing the known kinds) when none is registered."""
    if kind not in _REGISTRY:
        _load_entry_points()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown task kind {kind!r}; expected one of {', '.join(_REGISTRY)}") from None


for _cls in (SingleTask, MultiTask, DimensionsTask, QATask):
    register_task(_cls)

__all__ = [
    "ENTRY_POINT_GROUP",
    "CellReader",
    "DimensionsTask",
    "MultiTask",
    "ParsedAnswer",
    "QATask",
    "Question",
    "SingleTask",
    "TaskKind",
    "get_task",
    "register_task",
    "task_names",
    "unregister_task",
]
