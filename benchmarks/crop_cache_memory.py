"""Resident memory of the crop datasets' volume cache, per process, as under DDP.

Two processes (as two DDP ranks on one node) each build the crop datasets of the ISImed recipes
over Colin27 (T1, percentile scaling) and the head CT (HU window), touch every cached voxel,
and report their memory from /proc/self/smaps_rollup once both hold their caches:

- RSS: resident pages, shared ones included (what ``top`` shows);
- PSS: shared pages divided among the processes that map them (sums to the real total);
- USS: pages private to the process;
- peak: growth of VmHWM (the high-water mark, which includes decoding temporaries).

All as growth over the same process once warmed up (MONAI's readers imported, each volume
decoded once and dropped, freed heap handed back with malloc_trim), in MB (10^6 bytes); the
whole process's RSS and PSS are reported beside.
Cache modes: ``none`` (read and decode at every access), ``memory`` float32 / float16 (one copy
per process), ``mmap`` float32 / float16 (``.npy`` files in a cache folder, mapped by every
process: the page cache holds one copy).

Usage: python benchmarks/crop_cache_memory.py [--data $MEDREP_DATA] [--procs 2]
Writes benchmarks/results/crop_cache_memory.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = [("none", "float32"), ("memory", "float32"), ("memory", "float16"), ("mmap", "float32"), ("mmap", "float16")]
VOLUMES = {  # file -> data section overrides (as in the recipes)
    "colin27_t1.nii.gz": {"intensity": "percentile", "percentiles": [5.0, 95.0]},
    "head_ct.nii.gz": {"intensity": "ct_window", "window": [-1000.0, 1000.0]},
}


def memory() -> dict[str, float]:
    """RSS, PSS, USS (private clean + dirty) and VmHWM of this process, in MB."""
    rollup = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        rollup[key] = int(value.split()[0]) * 1024
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    mb = 1e6
    return {
        "rss": rollup["Rss"] / mb,
        "pss": rollup["Pss"] / mb,
        "uss": (rollup["Private_Clean"] + rollup["Private_Dirty"]) / mb,
        "peak": int(status["VmHWM"].split()[0]) * 1024 / mb,
    }


def _wait_for(sync: Path, name: str, procs: int, timeout: float = 300) -> None:
    (sync / f"{name}.{os.getpid()}").touch()
    start = time.time()
    while len(list(sync.glob(f"{name}.*"))) < procs:
        if time.time() - start > timeout:
            raise TimeoutError(name)
        time.sleep(0.05)


def trim() -> None:
    """Collect garbage and hand freed heap back to the OS, so that RSS shows live memory only."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def config(sync: Path, name: str, mode: str, dtype: str, cache_dir: Path) -> dict:
    from medrep.recipe import DEFAULTS

    folder = sync / f"vol_{name.split('.')[0]}"
    return {**DEFAULTS["data"], "source": "folder", "path": str(folder), "spatial_dims": 3, "cache": mode != "none",
            **VOLUMES[name], "crops": {"k": 16, "size": 32, "min_foreground": 0.25, "cache": "memory" if mode == "none" else mode,
                                       "cache_dtype": dtype, "cache_dir": str(cache_dir)}}


def worker(data: Path, mode: str, dtype: str, cache_dir: Path, sync: Path, procs: int, out: Path) -> None:
    import numpy as np

    from medrep.data import build_dataset

    imported = memory()
    # warm-up: MONAI's readers and transforms imported, both volumes decoded once and dropped,
    # so that the baseline holds everything but the cache
    for name in VOLUMES:
        build_dataset(config(sync, name, "none", "float32", cache_dir))[0]
    trim()
    before = memory()
    datasets = []
    for name in VOLUMES:
        cfg = config(sync, name, mode, dtype, cache_dir)
        datasets.append(build_dataset(cfg))
    t = time.time()
    for ds in datasets:
        for _ in range(3):
            ds[0]  # 16 crops, 3 times
    draw_s = (time.time() - t) / (3 * len(datasets))
    touched = 0.0
    for ds in datasets:  # every cached voxel resident: the worst case after a long run
        for sample in ds._cache.values():
            touched += float(np.asarray(sample["image"], dtype=np.float32).sum())
    trim()
    _wait_for(sync, f"held_{mode}_{dtype}", procs)
    after = memory()
    _wait_for(sync, f"measured_{mode}_{dtype}", procs)
    delta = {k: round(after[k] - before[k], 1) for k in after}
    cached = sum(np.asarray(s["image"]).nbytes for ds in datasets for s in ds._cache.values()) / 1e6
    out.write_text(json.dumps({"after_imports": imported, "baseline": before, "after": after, "delta": delta, "cached_mb": round(cached, 1),
                               "seconds_per_item": round(draw_s, 3)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("MEDREP_DATA"), help="the shared data folder (holds volumes/)")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "crop_cache_memory.json"))
    args = parser.parse_args()
    if not args.data:
        parser.error("pass --data or set MEDREP_DATA")
    volumes = Path(args.data) / "volumes"
    rows = []
    with tempfile.TemporaryDirectory(prefix="medrep_mem_") as tmp:
        tmp = Path(tmp)
        for mode, dtype in MODES:
            sync = tmp / f"{mode}_{dtype}"
            sync.mkdir()
            for name in VOLUMES:  # one folder per volume, a link to the file read in place
                (sync / f"vol_{name.split('.')[0]}").mkdir()
                (sync / f"vol_{name.split('.')[0]}" / name).symlink_to(volumes / name)
            cache_dir = tmp / "cache" / f"{mode}_{dtype}"
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(volumes), mode, dtype, str(cache_dir), str(sync),
                                       str(args.procs), str(sync / f"rank{r}.json")], env=env)
                     for r in range(args.procs)]
            for p in procs:
                if p.wait(timeout=900) != 0:
                    raise SystemExit(f"worker failed for {mode}/{dtype}")
            results = [json.loads((sync / f"rank{r}.json").read_text()) for r in range(args.procs)]
            per = {k: round(sum(r["delta"][k] for r in results) / len(results), 1) for k in ("rss", "pss", "uss", "peak")}
            per["rss_total"] = round(sum(r["after"]["rss"] for r in results) / len(results), 1)
            per["pss_total"] = round(sum(r["after"]["pss"] for r in results) / len(results), 1)
            rows.append({"cache": mode, "dtype": dtype, "cached_mb_per_process": results[0]["cached_mb"],
                         "per_process_mb": per, "total_pss_mb": round(sum(r["delta"]["pss"] for r in results), 1),
                         "seconds_per_item": results[0]["seconds_per_item"], "ranks": results})
            shutil.rmtree(cache_dir, ignore_errors=True)
    header = (f"{'cache':<8}{'dtype':<9}{'cached':>8}{'dRSS':>8}{'dPSS':>8}{'dUSS':>8}{'dpeak':>8}{'dPSS all':>10}"
              f"{'RSS':>8}{'PSS':>8}{'s/item':>8}")
    print(f"{args.procs} processes (as DDP ranks), MB per process: d* = growth for the cache over a warmed-up process "
          "(readers imported, volumes decoded once); RSS/PSS = whole process; dPSS all = summed over processes")
    print(header)
    for r in rows:
        m = r["per_process_mb"]
        print(f"{r['cache']:<8}{r['dtype']:<9}{r['cached_mb_per_process']:>8.1f}{m['rss']:>8.1f}{m['pss']:>8.1f}{m['uss']:>8.1f}"
              f"{m['peak']:>8.1f}{r['total_pss_mb']:>10.1f}{m['rss_total']:>8.1f}{m['pss_total']:>8.1f}{r['seconds_per_item']:>8.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    units = "MB (1e6 bytes); delta: growth over the same process after imports and one uncached decode of each volume"
    out.write_text(json.dumps({"procs": args.procs, "volumes": list(VOLUMES), "crops": "16 x 32^3, min_foreground 0.25",
                               "units": units, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 9 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), sys.argv[3], sys.argv[4], Path(sys.argv[5]), Path(sys.argv[6]), int(sys.argv[7]), Path(sys.argv[8]))
    else:
        sys.exit(main())
