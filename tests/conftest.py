import os
import warnings
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore")


@pytest.fixture(scope="session")
def shared_data() -> Path | None:
    """The real data folder, from $MEDREP_DATA (CI sets it to ../shared/data when present)."""
    root = os.environ.get("MEDREP_DATA")
    return Path(root) if root and Path(root).is_dir() else None


def make_npz(path: Path, n: int = 64, size: int = 16, seed: int = 0) -> Path:
    """A tiny MedMNIST-layout file whose two classes differ in brightness (learnable)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n), ("val", n // 4), ("test", n // 2)):
        labels = rng.integers(0, 2, size=(count, 1))
        images = rng.integers(0, 120, size=(count, size, size)) + 100 * labels[:, :, None]
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    return make_npz(tmp_path / "tiny.npz")


def tiny_recipe(npz: Path, out: Path, **sections) -> dict:
    """A SimCLR recipe small enough to train a few steps in a second or two."""
    recipe = {
        "method": {"name": "simclr", "proj_hidden_dim": 32, "proj_dim": 16},
        "model": {"name": "resnet10", "spatial_dims": 2, "conv1_t_size": 3, "conv1_t_stride": 1},
        "data": {"source": "medmnist", "path": str(npz), "batch_size": 16},
        "trainer": {"max_steps": 3, "checkpoint_every_n_steps": 2, "output_dir": str(out), "progress_bar": False,
                    "log_every_n_steps": 1, "accelerator": "cpu"},
    }
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    return recipe
