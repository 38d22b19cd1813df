"""Results a person or a script reads: strict JSON files (written atomically) and aligned text or
markdown tables. Shared by the evaluations, the data-set summaries and the benchmarks, so it sits
at the library level rather than inside ``evaluate``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MedrepError
from .files import write_bytes_atomic


def _to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and sets; non-finite floats become null so
    the file stays strict JSON that any parser accepts."""
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [_to_jsonable(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if hasattr(obj, "tolist"):  # torch tensors and the like
        return _to_jsonable(obj.tolist())
    raise MedrepError(f"cannot write a {type(obj).__name__} to JSON", where="obj")


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys (stable diffs); create parent folders.

    Written atomically (:func:`medrep.files.write_atomic`), so a crash never leaves half a file.
    """
    path = Path(path)
    text = json.dumps(_to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
    return path


def _lookup(row: Mapping[str, Any], column: str) -> Any:
    """``row[column]``, or a dotted path into nested dicts (``"auroc.mean"``)."""
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _cell(value: Any, floatfmt: str) -> tuple[str, bool]:
    """Text of one cell and whether it is numeric (numbers are right-aligned)."""
    if value is None:
        return "", False
    if isinstance(value, Mapping) and "mean" in value and "std" in value:
        return f"{value['mean']:{floatfmt}} ± {value['std']:{floatfmt}}", True
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), False
    if isinstance(value, (int, np.integer)):
        return str(int(value)), True
    if isinstance(value, (float, np.floating)):
        return (f"{float(value):{floatfmt}}" if math.isfinite(value) else str(float(value))), True
    return str(value), False


def format_table(
    rows: list[Mapping[str, Any]], columns: list[str], markdown: bool = False, floatfmt: str = ".4f"
) -> str:
    """Aligned plain-text table (or a GitHub markdown table with ``markdown=True``).

    Columns may be dotted paths into nested dicts; a ``{"mean", "std"}`` dict prints as
    ``mean ± std``; missing values print empty. Numeric columns are right-aligned.
    """
    if not columns:
        raise MedrepError("no columns to show", where="columns")
    cells = [[_cell(_lookup(r, c), floatfmt) for c in columns] for r in rows]
    numeric = [bool(cells) and all(cells[i][j][1] or cells[i][j][0] == "" for i in range(len(cells))) for j in range(len(columns))]
    widths = [max([len(c)] + [len(row[j][0]) for row in cells]) for j, c in enumerate(columns)]

    def fmt(texts: list[str]) -> list[str]:
        return [t.rjust(w) if num else t.ljust(w) for t, w, num in zip(texts, widths, numeric)]

    lines = []
    if markdown:
        lines.append("| " + " | ".join(fmt(list(columns))) + " |")
        lines.append("|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|")
        lines += ["| " + " | ".join(fmt([t for t, _ in row])) + " |" for row in cells]
    else:
        lines.append("  ".join(fmt(list(columns))).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(fmt([t for t, _ in row])).rstrip() for row in cells]
    return "\n".join(lines)
