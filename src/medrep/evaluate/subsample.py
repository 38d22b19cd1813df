"""Label subsets for label-efficiency evaluation: which training examples a probe or a fine-tuning
run may see at 1 %, 10 % and 100 % of the labels.

Two properties the protocol needs and this module guarantees:

* **stratified**: per-class counts follow the class proportions (at least one example per class,
  so a rare class can still be learnt from a 1 % subset); for multi-label targets, every label
  that has a positive example in the split has one in the subset;
* **nested**: for one seed, the subset at a smaller fraction is contained in the subset at a
  larger one, so a curve over fractions measures more labels, not different examples. Each seed
  draws its own subsets, so the spread over seeds includes the choice of labelled examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import MedrepError
from ._checks import check_labels


def check_fraction(fraction: float) -> float:
    try:
        f = float(fraction)
    except (TypeError, ValueError) as exc:
        raise MedrepError(f"label fraction must be a number, got {fraction!r}", where="fractions") from exc
    if not (0.0 < f <= 1.0) or math.isnan(f):
        raise MedrepError(f"label fraction must lie in (0, 1], got {fraction!r}", where="fractions")
    return f


def _class_takes(counts: np.ndarray, f: float) -> np.ndarray:
    """Examples per class at fraction ``f``: ``max(n_classes, round(f * n))`` in all, at least one
    per class, the rest by largest remainder of ``f * count``."""
    quota = f * counts
    take = np.minimum(np.maximum(1, np.floor(quota)).astype(np.int64), counts)
    target = max(counts.size, int(math.floor(f * counts.sum() + 0.5)))
    remainder = quota - np.floor(quota)
    for i in np.argsort(-remainder, kind="stable"):  # largest remainder first
        if take.sum() >= target:
            break
        if take[i] < counts[i]:
            take[i] += 1
    return take


def nested_subsamples(labels: np.ndarray, fractions: Sequence[float], seed: int = 0) -> dict[float, np.ndarray]:
    """Sorted training indices per fraction, stratified and nested (see the module docstring).

    ``labels``: ``(N,)`` class ids, or ``(N, K)`` 0/1 multi-label targets. Class ids: every class
    is shuffled once with ``seed`` and a fraction takes the first :func:`_class_takes` of each
    (the per-class count is made monotone over the fractions, so largest-remainder rounding can
    never un-nest them). Multi-label: one shuffle of all examples; a fraction takes the first
    ``round(f * N)`` plus, for each label with positives but none taken, its first positive in the
    shuffle. ``fraction=1.0`` is every index.
    """
    fracs = sorted({check_fraction(f) for f in fractions})
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    out: dict[float, np.ndarray] = {}
    if y.ndim == 2 and y.shape[1] > 1:
        order = rng.permutation(y.shape[0])
        positives = y[order] > 0
        chosen = np.zeros(y.shape[0], dtype=bool)
        for f in fracs:
            chosen[order[: max(1, int(math.floor(f * y.shape[0] + 0.5)))]] = True
            for k in np.flatnonzero(positives.any(axis=0) & ~(y[chosen] > 0).any(axis=0)):
                chosen[order[np.argmax(positives[:, k])]] = True
            out[f] = np.flatnonzero(chosen)
        return out
    y = check_labels(y, len(y), "labels")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    orders = [rng.permutation(np.flatnonzero(inverse == i)) for i in range(classes.size)]
    take = np.zeros(classes.size, dtype=np.int64)
    for f in fracs:
        take = np.maximum(take, _class_takes(counts, f))
        out[f] = np.arange(y.size) if f == 1.0 else np.sort(np.concatenate([o[:t] for o, t in zip(orders, take)]))
    return out


def stratified_subsample(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified subsample holding ``fraction`` of ``labels``
    (:func:`nested_subsamples` at that one fraction). Size: ``max(n_classes, round(fraction * n))``."""
    f = check_fraction(fraction)
    return nested_subsamples(labels, [f], seed)[f]
