"""What every figure of the evaluations needs: pyplot on the file-only Agg backend (no display on a
server or in CI), and a save that makes the folder first."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, **options: Any) -> Path:
    """``fig`` written to ``path`` (its folder made); ``options`` go to ``savefig``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **options)
    return path
