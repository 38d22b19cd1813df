"""Dice per class, per case, and the one rule for classes that are nowhere.

Dice of class c on one case is ``2 |P_c ∩ T_c| / (|P_c| + |T_c|)``. When a class is absent from
both the prediction and the truth of a case its Dice is undefined (0/0): it is left out (NaN
here), never counted as 1 (which would reward empty classes) nor as 0. A class predicted but
absent from the truth, or missed, counts 0. Per class, the Dice of a set of cases is the mean over
the cases where it is defined; the mean Dice is the mean over foreground classes (1..K-1) that are
defined somewhere. So every reported number is a real Dice, and classes defined nowhere are listed.
"""

from __future__ import annotations

import numpy as np


def dice_counts(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(3, K) counts: intersection, predicted voxels and true voxels per class (add them up over slices of one case)."""
    pred = np.asarray(pred, dtype=np.int64).ravel()
    truth = np.asarray(truth, dtype=np.int64).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"prediction has {pred.size} voxels, truth {truth.size}")
    inter = np.bincount(truth[pred == truth], minlength=num_classes)[:num_classes]
    return np.stack([inter, np.bincount(pred, minlength=num_classes)[:num_classes],
                     np.bincount(truth, minlength=num_classes)[:num_classes]]).astype(np.int64)


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """Dice per class from (3, K) counts; NaN where the class is in neither prediction nor truth."""
    inter, p, t = (np.asarray(c, dtype=np.float64) for c in counts)
    total = p + t
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / np.where(total > 0, total, 1.0), np.nan)


def dice_per_class(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice per class of one case (NaN: class in neither)."""
    return dice_from_counts(dice_counts(pred, truth, num_classes))


def summarise_cases(case_dice: list[np.ndarray], class_names: list[str]) -> dict:
    """Per-class mean over the cases where a class is defined, and the mean over defined foreground classes."""
    stack = np.stack(case_dice) if case_dice else np.full((0, len(class_names)), np.nan)
    defined = ~np.isnan(stack)
    per_class = {}
    for c, name in enumerate(class_names):
        if defined[:, c].any():
            per_class[name] = float(stack[defined[:, c], c].mean())
    fg = [per_class[n] for n in class_names[1:] if n in per_class]
    return {"mean_dice": float(np.mean(fg)) if fg else 0.0, "per_class": per_class,
            "undefined_classes": [n for n in class_names if n not in per_class], "cases": int(len(case_dice))}
