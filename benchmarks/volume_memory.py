"""Does a CT-RATE pretraining run's memory grow with the number of volumes?

CT-RATE holds ~50,000 volumes of 100-300 MB, so the loader must stream them from disk and hold
nothing per volume beyond its row. Two measurements, each run in a fresh process:

- ``trees``: synthetic CT-RATE trees (the ``ct_rate`` source's layout: one scan, one reconstruction
  a patient, 64x64x48 int16 volumes of 0.8x0.8x2.5 mm, 90 % train) of ``--volumes`` sizes. The
  loader pretraining uses (:func:`medrep.engine.build_loader` on a ConVIRT recipe, ``data.size`` so
  that every volume is resized) serves the same ``--steps`` batches whatever the tree's size (a
  small tree restarts its epoch). Also: milliseconds to build the rows (list the tree, read the CSVs)
  and the Python memory the rows hold (tracemalloc), per row.
- ``rows``: ``--rows`` rows at CT-RATE's scale without any volume (reads stubbed; each report
  ``--text`` characters, an assumed length, not one measured on CT-RATE) served for 3 shuffled
  epochs, with the rows kept as the dataset keeps them (``packed``) and as a list of row objects
  (``list``, before :class:`~medrep.data.datasets.image_text_dataset.PackedRows`).

Memory, in MB (10^6 bytes): peak RSS of the main process (``getrusage(RUSAGE_SELF)``) and of the
largest loader worker (``RUSAGE_CHILDREN`` once the workers are joined), and each worker's private
memory (USS, from /proc/<pid>/smaps_rollup just before it is joined). A forked worker's RSS counts
every page it shares with the main process, so only its USS shows what it copied.

Usage: python benchmarks/volume_memory.py [--volumes 32 320] [--steps 40] [--batch 4] [--workers 2] [--rows 500 50000]
Writes benchmarks/results/volume_memory.json (or --out) and prints two tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medrep.results import format_table, write_json

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE, SPACING = (64, 64, 48), (0.8, 0.8, 2.5)


def write_tree(root: Path, volumes: int) -> Path:
    from medrep.data.sources.ct_rate import write_ct_rate_tree

    valid = max(1, volumes // 10)
    return write_ct_rate_tree(root, {"train": volumes - valid, "valid": valid}, shape=SHAPE, spacing=SPACING)


def uss_mb(pid: int) -> float:
    """Private (unshared) memory of process ``pid``."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) * 1024 / 1e6


def serve(loader, steps: int | None = None, epochs: int = 1) -> dict[str, float]:
    """Iterate ``steps`` batches (or ``epochs`` epochs), join the workers; the peaks and the workers' USS."""
    import gc

    done, epoch, start = 0, 0, time.perf_counter()
    while (done < steps) if steps is not None else (epoch < epochs):
        it = iter(loader)  # a new epoch, on the same persistent workers
        for _ in it:
            done += 1
            if done == steps:
                break
        epoch += 1
    ms = 1000 * (time.perf_counter() - start) / done
    uss = [uss_mb(w.pid) for w in it._workers]  # DataLoader's own worker processes (a private attribute)
    loader._iterator, it = None, None  # joins the persistent workers, so that RUSAGE_CHILDREN counts them
    gc.collect()
    mb = 1024 / 1e6  # ru_maxrss is in KiB
    return {"ms_per_step": ms, "main_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * mb,
            "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * mb, "worker_uss_mb": max(uss)}


def tree_child(tree: str, steps: int, batch: int, workers: int, size: int) -> dict:
    import tracemalloc

    from medrep.data.sources import read_pairs
    from medrep.engine import build_loader
    from medrep.recipe import load_recipe

    recipe = load_recipe({"method": {"name": "convirt"}, "model": {"name": "resnet10", "spatial_dims": 3},
                          "data": {"source": "ct_rate", "path": tree, "batch_size": batch, "num_workers": workers, "size": size,
                                   "intensity": "ct_window", "window": [-1000.0, 1000.0]}})
    start = time.perf_counter()
    rows, _ = read_pairs(recipe["data"])
    rows_s, rows = time.perf_counter() - start, None
    tracemalloc.start()  # a second build, traced: what the rows themselves hold
    rows, _ = read_pairs(recipe["data"])
    rows_bytes, count = tracemalloc.get_traced_memory()[0], len(rows)
    tracemalloc.stop()
    rows = None
    return {"rows": count, "rows_ms": 1000 * rows_s, "bytes_per_row": round(rows_bytes / count), **serve(build_loader(recipe), steps=steps)}


def rows_child(rows: int, text: int, workers: int, kept_as: str) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from medrep.data.datasets.image_text import ImageTextRow
    from medrep.data.datasets.image_text_dataset import ImageTextDataset, collate_image_text

    class NoVolumes(ImageTextDataset):
        def _read(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.zeros(1, 4, 4, 4), torch.tensor(SPACING)

    made = [ImageTextRow((f"/data/ct_rate/dataset/train/train_{i}/train_{i}_a/train_{i}_a_1.nii.gz",), f"Case {i}. " + "x" * text,
                         f"train_{i}_a", "train", f"train_{i}", source=f"train_reports.csv line {i + 2}") for i in range(rows)]
    dataset = NoVolumes(made, split="train", spatial_dims=3)
    if kept_as == "list":
        dataset.rows = made
    made = None
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers, collate_fn=collate_image_text, persistent_workers=True)
    return {"rows": rows, "kept_as": kept_as, **serve(loader, epochs=3)}


def run_child(kind: str, **kwargs) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child", kind, json.dumps(kwargs), out.name]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return {**kwargs, **json.loads(Path(out.name).read_text())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, nargs="+", default=[32, 320], help="tree sizes, in volumes")
    parser.add_argument("--steps", type=int, default=40, help="batches served on every tree")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=32, help="data.size: each volume is resized to size^3")
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 50000], help="row counts of the rows-only runs")
    parser.add_argument("--text", type=int, default=1500, help="report length (characters) of the rows-only runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "volume_memory.json")
    args = parser.parse_args()
    trees = []
    with tempfile.TemporaryDirectory(prefix="medrep_volumes_") as tmp:
        for volumes in args.volumes:
            tree = write_tree(Path(tmp) / f"ct_rate_{volumes}", volumes)
            disk = sum(f.stat().st_size for f in tree.rglob("*.nii.gz")) / 1e6
            run = run_child("tree", tree=str(tree), steps=args.steps, batch=args.batch, workers=args.workers, size=args.size)
            trees.append({"volumes": volumes, "disk_mb": disk, **{k: v for k, v in run.items() if k != "tree"}})
    rows = [run_child("rows", rows=n, text=args.text, workers=args.workers, kept_as=kept)
            for n in args.rows for kept in ("packed", "list")]
    peaks = ["main_peak_mb", "worker_peak_mb", "worker_uss_mb"]
    print(f"trees: {args.steps} steps of batch {args.batch}, {args.workers} workers, {'x'.join(map(str, SHAPE))} int16 volumes "
          f"resized to {args.size}^3 (MB = 1e6 bytes)")
    print(format_table(trees, ["volumes", "rows", "disk_mb", "rows_ms", "bytes_per_row", "ms_per_step", *peaks], floatfmt=".1f"))
    print(f"\nrows: 3 shuffled epochs of batch 64, {args.workers} workers, no volume read, reports of {args.text} characters")
    print(format_table(rows, ["rows", "kept_as", *peaks], floatfmt=".1f"))
    write_json(args.out, {"question": __doc__.splitlines()[0], "shape": SHAPE, "spacing_mm": SPACING, "units": "MB = 1e6 bytes",
                          "trees": trees, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        result = {"tree": tree_child, "rows": rows_child}[sys.argv[2]](**json.loads(sys.argv[3]))
        Path(sys.argv[4]).write_text(json.dumps(result))
    else:
        sys.exit(main())
