"""TaCo's task map on real images: does the embedding group tasks, families and data sets, does it
generalise to held-out images and to a data set left out of training, do strength sweeps trace
smooth paths, and does closeness in the map predict transfer between tasks?

Runs (each reused when its exported encoder is there):
- ``taco_s{0,1,2}``: the CPU recipe ``taco_medical`` on every slice set available, 3 seeds;
- ``taco_loo``: the same, seed 0, with ``HELDOUT`` left out (leave one data set out);
- ``simclr``: SimCLR on the same slice pool (source ``slices``), the baseline that reads a pair
  through an image encoder, as [e(x), e(y)] and as e(y) - e(x).

Then ``evaluate taskmap`` on the held-out images of every set, for TaCo (3 seeds), random init of
the same architecture, and SimCLR read both ways; the transfer experiment on ``TRANSFER_TASKS``
(3 seeds) against TaCo's similarity of the same tasks.

    python benchmarks/taco_map.py --pretrain-only --runs taco_s0 taco_s1   # one lane (--threads 1)
    python benchmarks/taco_map.py                                          # everything left, then scores

Writes benchmarks/results/taco_map.json, PNGs under benchmarks/results/taco/ and the README section.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from medrep.engine import pretrain
from medrep.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HELDOUT = "head-ct"  # CT with derived masks; CT is still present in training (medpix-ct, pydicom-ct)
STEPS = 1000
TRANSFER_TASKS = ["denoise_gaussian", "deblur_gaussian", "super_resolution", "inpaint_box", "rotate", "brightness",
                  "gamma", "edges", "foreground", "segment_structure"]


def run_recipes(work: Path, steps: int) -> dict[str, dict]:
    common = [f"trainer.max_steps={steps}", "trainer.log_every_n_steps=50", "trainer.checkpoint_every_n_steps=100000"]
    runs = {f"taco_s{s}": load_recipe("taco_medical", common + [f"trainer.seed={s}", f"data.task_seed={s}"]) for s in (0, 1, 2)}
    runs["taco_loo"] = load_recipe("taco_medical", common + ["trainer.seed=0", f"data.exclude_sets=[{HELDOUT}]"])
    runs["simclr"] = load_recipe("simclr_pneumoniamnist", common + [
        "data.source=slices", "data.size=64", "data.batch_size=64", "data.path=null", "model.conv1_t_size=7",
        "model.conv1_t_stride=2", "method.proj_hidden_dim=512"])
    for name, recipe in runs.items():
        recipe["trainer"]["output_dir"] = str(work / name)
    return runs


def pretrained(name: str, recipe: dict) -> Path:
    out = Path(recipe["trainer"]["output_dir"])
    if not (out / "encoder" / "encoder.json").is_file():
        start = time.perf_counter()
        pretrain(recipe)
        (out / "minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.2f}\n")
        print(f"{name}: {recipe['trainer']['max_steps']} steps in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return out


def transfer(work: Path, seeds: list[int]) -> dict:
    """The transfer matrix of TRANSFER_TASKS on the held-in / held-out slices of every set (reused when saved)."""
    from medrep.data.sources.task_pairs import load_pool, split_pool
    from medrep.evaluate.task_transfer import TransferOptions, transfer_matrix
    from medrep.tasks import get_task

    path = work / "transfer.json"
    if path.is_file():
        return json.loads(path.read_text())
    data = load_recipe("taco_medical")["data"]
    pool = load_pool(data)
    train, test = split_pool(pool, "train", data["holdout"]), split_pool(pool, "test", data["holdout"])
    start = time.perf_counter()
    result = transfer_matrix(train, test, [get_task(t) for t in TRANSFER_TASKS], TransferOptions(seeds=tuple(seeds)),
                             progress=lambda seed, a: print(f"transfer seed {seed}: source task {a + 1}/{len(TRANSFER_TASKS)} "
                                                            f"({(time.perf_counter() - start) / 60:.1f} min)", flush=True))
    result["minutes"] = (time.perf_counter() - start) / 60
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/bench_taco"))
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--runs", nargs="+", help="pretrain only these runs (default: all)")
    p.add_argument("--pretrain-only", action="store_true")
    p.add_argument("--transfer-only", action="store_true", help="compute the transfer matrix (no encoder needed) and stop")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.transfer_only:
        transfer(args.work, args.seeds)
        return
    recipes = run_recipes(args.work, args.steps)
    for name in args.runs or recipes:
        pretrained(name, recipes[name])
    if args.pretrain_only:
        return


if __name__ == "__main__":
    main()
