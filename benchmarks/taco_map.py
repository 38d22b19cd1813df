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

import numpy as np
import torch
from readme_section import write_section

from medrep.engine import pretrain
from medrep.recipe import load_recipe
from medrep.results import format_table, write_json

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


#: (row name, run folder or None for random init, read mode, random init)
MAPS = [("TaCo s0", "taco_s0", "pair", False), ("TaCo s1", "taco_s1", "pair", False), ("TaCo s2", "taco_s2", "pair", False),
        ("TaCo, head-ct left out", "taco_loo", "pair", False), ("random init (6 ch)", "taco_s0", "pair", True),
        ("SimCLR [e(x), e(y)]", "simclr", "concat", False), ("SimCLR e(y) - e(x)", "simclr", "diff", False),
        ("random init [e(x), e(y)]", "simclr", "concat", True)]


def task_maps(work: Path, samples: int, out: Path) -> dict[str, dict]:
    from medrep.cli.evaluate.taskmap import set_slices
    from medrep.evaluate.taskmap import taskmap

    slices = set_slices(["all"], 64, 64)
    maps = {}
    for row, run, read, random_init in MAPS:
        start = time.perf_counter()
        result = taskmap(work / run, slices, read=read, random_init=random_init, samples_per_task=samples, heldout_set=HELDOUT,
                         method="umap", seed=0, out=out / row_folder(row), progress=False)
        result.pop("table")
        result["minutes"] = (time.perf_counter() - start) / 60
        maps[row] = result
        print(f"{row}: mapped in {result['minutes']:.1f} min", flush=True)
    return maps


def row_folder(row: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in row.lower()).strip("_")


def metrics(m: dict) -> dict[str, float | None]:
    c, sim = m["clustering"], m["similarity"]
    row = {"kNN held-out images": m["knn"]["heldout_images"]["accuracy"], f"kNN {HELDOUT}": m["knn"]["heldout_set"]["accuracy"],
           "NMI family": c["family"]["nmi"], "NMI task": c["task"]["nmi"], "ARI task": c["task"]["ari"],
           "NMI data set": c["dataset"]["nmi"], "silhouette task": c["task"]["silhouette"]["features"],
           "sim within - between family": sim["within_family"] - sim["between_families"]}
    for name, t in m["trajectories"].items():
        key = "spearman" if t["spearman"]["mean"] is not None else "spearman_euclidean"
        row[f"Spearman {name}"] = t[key]["mean"]
    return row


def transfer_correlation(maps: dict[str, dict], gain: np.ndarray, tasks: list[str]) -> dict[str, dict]:
    from medrep.evaluate.task_transfer import similarity_vs_transfer

    out = {}
    for row, m in maps.items():
        names = m["similarity"]["tasks"]
        idx = [names.index(t) for t in tasks]
        sim = np.asarray(m["similarity"]["matrix"])[np.ix_(idx, idx)]
        out[row] = similarity_vs_transfer(sim, gain)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/bench_taco"))
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--runs", nargs="+", help="pretrain only these runs (default: all)")
    p.add_argument("--pretrain-only", action="store_true")
    p.add_argument("--transfer-only", action="store_true", help="compute the transfer matrix (no encoder needed) and stop")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=24, help="pairs per task and split in every map")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and figures go (default benchmarks/results)")
    p.add_argument("--no-readme", action="store_true")
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
    start = time.perf_counter()
    moved = transfer(args.work, args.seeds)
    maps = task_maps(args.work, args.samples, args.results / "taco")
    gain = np.asarray(moved["mean_gain"], dtype=float)
    correlation = transfer_correlation(maps, gain, moved["tasks"])
    rows = {row: metrics(m) for row, m in maps.items()}
    taco = [rows[f"TaCo s{s}"] for s in (0, 1, 2)]
    rows["TaCo mean of 3 seeds"] = {k: float(np.mean([r[k] for r in taco])) for k in taco[0]}
    record = {"heldout_set": HELDOUT, "steps": args.steps, "samples_per_task": args.samples, "maps": maps, "rows": rows,
              "transfer": moved, "correlation": correlation,
              "pretrain_minutes": {n: float((args.work / n / "minutes.txt").read_text()) for n in recipes
                                   if (args.work / n / "minutes.txt").is_file()},
              "minutes": (time.perf_counter() - start) / 60, "torch_threads": torch.get_num_threads()}
    write_json(args.results / "taco_map.json", record)
    plot_transfer(moved, maps["TaCo s0"], args.results / "taco" / "transfer.png")
    print(table(record))
    print(correlation_table(record))
    if not args.no_readme:
        write_section("taco-map", readme(record))


COLUMNS = ["kNN held-out images", f"kNN {HELDOUT}", "NMI family", "NMI task", "ARI task", "NMI data set", "silhouette task",
           "sim within - between family"]


def table(record: dict, markdown: bool = False) -> str:
    rows = [{"encoder": row, **{k: None if v is None else round(v, 3) for k, v in r.items()}} for row, r in record["rows"].items()]
    sweeps = sorted({k for r in record["rows"].values() for k in r if k.startswith("Spearman")})
    return format_table(rows, ["encoder", *COLUMNS, *sweeps], markdown=markdown)


def correlation_table(record: dict, markdown: bool = False) -> str:
    def ci(c: dict) -> str:
        return f"{c['ci95'][0]:.2f} to {c['ci95'][1]:.2f}"

    cols = ["similarity from", "Spearman, all pairs", "95 % CI", "Spearman within target", "95 % CI (within)", "pairs"]
    rows = [{cols[0]: row, cols[1]: round(c["spearman"], 3), cols[2]: ci(c), cols[3]: round(c["within_target"]["spearman"], 3),
             cols[4]: ci(c["within_target"]), cols[5]: c["pairs"]} for row, c in record["correlation"].items()]
    return format_table(rows, cols, markdown=markdown)


def readme(record: dict) -> str:
    t = record["transfer"]
    return (f"From `benchmarks/results/taco_map.json`: {record['samples_per_task']} true pairs per task of held-out images "
            f"(and of training images for the kNN probe), all 40 tasks, every slice set; TaCo `taco_medical` for "
            f"{record['steps']} steps (3 seeds; one run with {record['heldout_set']} left out). Spearman columns: strength "
            f"vs distance from the strength-0 embedding, mean over 8 images.\n\n" + table(record, markdown=True)
            + "\n\n![TaCo task similarity](benchmarks/results/taco/taco_s0/similarity.png)\n"
            + "![TaCo map by family](benchmarks/results/taco/taco_s0/map_family.png)\n"
            + "![TaCo strength sweeps](benchmarks/results/taco/taco_s0/trajectories.png)\n\n"
            + f"Transfer ({len(t['tasks'])} tasks, {len(t['tasks']) * (len(t['tasks']) - 1)} ordered pairs, seeds "
            + f"{t['options']['seeds']}; gain = relative drop of task B's test error after training on A, fine-tuned on "
            + f"{t['options']['few_samples']} samples of B for {t['options']['few_steps']} steps, vs the same from scratch; "
            + "*within target*: each target's gains centred first, so only which source helps a given target more counts; "
            + "intervals: 2000 resamples of the tasks):\n\n"
            + correlation_table(record, markdown=True) + "\n\n![transfer gain and similarity](benchmarks/results/taco/transfer.png)")


def plot_transfer(moved: dict, taco: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, gain = moved["tasks"], np.asarray(moved["mean_gain"], dtype=float)
    names = taco["similarity"]["tasks"]
    idx = [names.index(t) for t in tasks]
    sim = np.asarray(taco["similarity"]["matrix"])[np.ix_(idx, idx)]
    off = ~np.eye(len(tasks), dtype=bool)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    im = a.imshow(gain, cmap="RdBu", vmin=-np.nanmax(np.abs(gain)), vmax=np.nanmax(np.abs(gain)))
    a.set_xticks(range(len(tasks)), tasks, rotation=90, fontsize=7)
    a.set_yticks(range(len(tasks)), tasks, fontsize=7)
    a.set_xlabel("target task B")
    a.set_ylabel("source task A")
    a.set_title("transfer gain (mean over seeds)")
    fig.colorbar(im, ax=a)
    b.scatter(sim[off], gain[off], s=12)
    b.set_xlabel("TaCo similarity (seed 0)")
    b.set_ylabel("transfer gain A -> B")
    b.set_title("similarity vs transfer")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
