"""TaCo's task library: generators of (input, target) pairs of medical vision tasks.

:mod:`.base` says what a task is; :mod:`.semantic`, :mod:`.generative` and :mod:`.transformation`
hold the tasks of each family. ``medrep list`` shows them by family."""

from .base import FAMILIES, TASKS, Task, TaskError, get_task, mismatch, register_task, select_tasks, task_names

__all__ = ["FAMILIES", "TASKS", "Task", "TaskError", "get_task", "mismatch", "register_task", "select_tasks", "task_names"]
