"""What a task is, and the one registry of tasks (TaCo, METHODS.md).

A *task sample* is an ``(input, target)`` pair of one medical vision task on one image: a noisy
image and its clean original (denoising), an image and the mask of one structure (segmentation),
an image and its rotated copy (rotation). TaCo embeds such pairs, so a task is a generator

    make(image, mask, rng, strength) -> (input, target)

- ``image``: one 2D image, ``(H, W)`` float32 scaled to [0, 1] (a radiograph, or a slice of a CT
  or MR volume; 3D tasks are not part of the paper's design, nor of ours).
- ``mask``: an ``(H, W)`` integer label map (0 = background) for tasks that need one, else None.
- ``rng``: a :class:`numpy.random.Generator`; a task draws every random choice from it, so one
  seed gives one sample.
- ``strength``: a float in [0, 1]: how strong the task is (noise level, angle, zoom ...), 0 the
  weakest. Where ``monotone`` is set, a stronger task moves the pair further from the strength-0
  pair drawn with the same seed (tested); where that has no meaning (a flip) it is not set.

``input`` and ``target`` are float32 ``(C, H, W)`` arrays with C = 1, or 3 for a colour target;
the TaCo data layer stacks them on channels for the encoder.

Every task has a *failure variant* (``task.failure``): a pair whose target is inconsistent with its
input, a negative for the contrastive loss. Unless a task gives its own, the failure target is the
task's target of a *mismatched copy* of the image (circularly shifted by about half its size and
mirrored), drawn with the same random choices: a target that looks like a genuine one (a valid mask,
a clean image, a rotated image) of the wrong content, so an encoder must read both halves to tell.

A user adds a task in one place: decorate the generator with :func:`register_task` (in a module of
this package, or in their own code before building a data set).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import MedrepError

FAMILIES = ("semantic", "generative", "transformation")

Pair = tuple[np.ndarray, np.ndarray]
Generator = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator, float], Pair]


class TaskError(MedrepError):
    """A task asked of data it cannot use, an unknown task or family, or a bad strength."""


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    summary: str
    make: Generator
    fail: Generator | None = None
    #: needs a label map: asked of a data set without masks it is an error naming both
    needs_mask: bool = False
    #: a stronger task moves the pair further from strength 0 (same seed); tested where set
    monotone: bool = True
    #: the smallest image side (pixels) the task is defined for
    min_size: int = 16

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
        image, mask = self._check(image, mask, strength)
        return _pair(self.make(image, mask, rng, float(strength)), self.name)

    def failure(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
        """A pair whose target does not follow from its input by this task."""
        image, mask = self._check(image, mask, strength)
        if self.fail is not None:
            return _pair(self.fail(image, mask, rng, float(strength)), self.name)
        twin = copy.deepcopy(rng)  # the same random choices (angle, noise level ...) for the mismatched copy
        inp, _ = self.make(image, mask, rng, float(strength))
        _, tgt = self.make(mismatch(image), None if mask is None else mismatch(mask), twin, float(strength))
        return _pair((inp, tgt), self.name)

    def _check(self, image, mask, strength) -> tuple[np.ndarray, np.ndarray | None]:
        where = f"task {self.name!r}"
        if not isinstance(strength, (int, float, np.floating, np.integer)) or not 0.0 <= float(strength) <= 1.0:
            raise TaskError(f"strength must be a number in [0, 1], got {strength!r}", where)
        image = np.asarray(image)
        if image.ndim != 2:
            raise TaskError(f"needs one 2D image (H, W), got shape {tuple(image.shape)}", where)
        if min(image.shape) < self.min_size:
            raise TaskError(f"needs images of at least {self.min_size} x {self.min_size} pixels, got "
                            f"{image.shape[0]} x {image.shape[1]}", where)
        if not np.isfinite(image).all():
            raise TaskError("image has NaN or infinite pixels", where)
        if image.min() < -1e-6 or image.max() > 1 + 1e-6:
            raise TaskError(f"image must be scaled to [0, 1], got {image.min():.3g}..{image.max():.3g}", where)
        if self.needs_mask:
            if mask is None:
                raise TaskError("needs a mask (a label map), and this image has none", where)
            mask = np.asarray(mask)
            if mask.shape != image.shape:
                raise TaskError(f"mask shape {tuple(mask.shape)} differs from image shape {tuple(image.shape)}", where)
            if not (mask > 0).any():
                raise TaskError("the mask has no foreground label", where)
        return image.astype(np.float32, copy=False), (None if mask is None else np.asarray(mask).astype(np.int64, copy=False))


def _pair(pair: Pair, name: str) -> Pair:
    out = []
    for what, a in zip(("input", "target"), pair):
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[0] not in (1, 3):
            raise TaskError(f"{what} must be (H, W) or (C, H, W) with C 1 or 3, got {tuple(a.shape)}", f"task {name!r}")
        out.append(np.ascontiguousarray(a))
    if out[0].shape[1:] != out[1].shape[1:]:
        raise TaskError(f"input {out[0].shape} and target {out[1].shape} differ in size", f"task {name!r}")
    return out[0], out[1]


def mismatch(a: np.ndarray) -> np.ndarray:
    """The image (or mask) shifted by about half its size and mirrored: the same kind of content,
    in the wrong place. Deterministic, so the failure variant is seeded by ``rng`` alone."""
    h, w = a.shape[-2:]
    return np.ascontiguousarray(np.roll(a, (h // 2 + 1, w // 3 + 1), axis=(-2, -1))[..., ::-1])


TASKS: dict[str, Task] = {}


def register_task(name: str, family: str, summary: str, *, fail: Generator | None = None, needs_mask: bool = False,
                  monotone: bool = True, min_size: int = 16) -> Callable[[Generator], Task]:
    """Decorator: ``@register_task("denoise_gaussian", "generative", "...")`` over a generator
    makes it a :class:`Task` and registers it; the name must be new."""
    if family not in FAMILIES:
        raise TaskError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}", f"task {name!r}")

    def wrap(make: Generator) -> Task:
        if name in TASKS:
            raise TaskError("a task of this name is already registered", f"task {name!r}")
        task = Task(name, family, summary, make, fail, needs_mask, monotone, min_size)
        TASKS[name] = task
        return task

    return wrap


def get_task(name: str) -> Task:
    _load()
    if name not in TASKS:
        near = difflib.get_close_matches(str(name), TASKS, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; `medrep list` shows the {len(TASKS)} tasks"
        raise TaskError(f"unknown task {name!r}{hint}", "task")
    return TASKS[name]


def task_names(family: str | None = None) -> list[str]:
    """Registered tasks, in registration order (family by family), optionally of one family."""
    _load()
    if family is not None and family not in FAMILIES:
        raise TaskError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}", "family")
    names = [n for n, t in TASKS.items() if family is None or t.family == family]
    return sorted(names, key=lambda n: FAMILIES.index(TASKS[n].family))  # stable: registration order within a family


def select_tasks(names: list[str] | None = None, families: list[str] | None = None) -> list[Task]:
    """Tasks by name and/or family (all when both are None), each name checked."""
    if names is None and families is None:
        return [get_task(n) for n in task_names()]
    chosen = [get_task(n) for n in (names or [])]
    for f in families or []:
        chosen += [get_task(n) for n in task_names(f) if get_task(n) not in chosen]
    return chosen


def _load() -> None:
    from . import generative, semantic, transformation  # noqa: F401  (they register their tasks)
