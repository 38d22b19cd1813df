"""Probe results as table rows and mean/std summaries; the JSON and table writers themselves live in
:mod:`medrep.results` (re-exported here)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import MedrepError
from ..results import format_table, write_json

__all__ = ["format_table", "probe_rows", "summarise", "write_json"]


def summarise(values: Iterable[float]) -> dict[str, float]:
    """Mean and population standard deviation (ddof=0, so one seed gives std 0, not NaN)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise MedrepError("cannot summarise an empty list", where="values")
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=0))}


def probe_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flatten a ``linear_probe``, ``knn_probe`` or ``finetune`` result into table rows
    (probe, fraction, n_train, auroc, accuracy) for ``format_table``."""
    if "fractions" in result and "probe" in result:  # linear, finetune, frozen head: one row per label fraction
        return [
            {"probe": result["probe"], "fraction": r["fraction"], "n_train": r["n_train"], "auroc": r["auroc"], "accuracy": r["accuracy"]}
            for r in result["fractions"].values()
        ]
    if result.get("probe") == "knn":
        return [
            {"probe": f"knn (k={result['k']})", "fraction": 1.0, "n_train": result["n_train"], "auroc": result["auroc"],
             "accuracy": result["accuracy"]}
        ]
    raise MedrepError("not a linear_probe, knn_probe or finetune result (no 'probe' key)", where="result")
