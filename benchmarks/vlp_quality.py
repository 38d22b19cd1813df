"""Vision-language pretraining on MedPix 2.0: ConVIRT, GLoRIA and MGCA with one budget, beside references.

Quality (``--part quality``, the default). Every method trains on the MedPix 2.0 train cases (each
CT/MR image with its own caption) and is scored on the dev cases:

  retrieval       image->text and text->image Recall@1/5/10, at image level (an image and its
                  caption) and case level (a case's images pooled, its distinct captions pooled):
                  ``medrep evaluate retrieval``'s :func:`~medrep.evaluate.retrieval.evaluate_retrieval`.
  zero-shot       accuracy and AUROC for modality (CT/MR), plane (Axial/Coronal/Sagittal) and body
                  region (5), from the packaged prompt templates: ``medrep evaluate zeroshot``'s
                  :func:`~medrep.evaluate.zeroshot.evaluate_zeroshot`.
  linear probe    accuracy and AUROC on the same labels, a logistic regression fitted on all train
                  labels, on the same image embeddings as zero-shot (``encode_image``: after the
                  projection head), as evaluate_zeroshot returns it beside zero-shot.

Each image is embedded once per evaluation (:class:`CachedImages`; eval mode, so identical to
embedding it again for each target: checked equal to the uncached scores).

Shared budget (what is the same for every method): the ``convirt_medpix`` recipe's model, data,
augmentation, optimiser and trainer sections (2D ResNet-18 with the ImageNet stem from scratch at
128 px, batch 32 pairs, AdamW 3e-4 cosine with 50 warmup steps, ConVIRT's augmentation without
flips), pinned again by :data:`BUDGET`, and the same text tower (:data:`TEXT_TOWER`: the packaged
all-MiniLM-L6-v2, its last 2 layers trained, mean pooling, 128 tokens). Each method's own section
is ``method`` of its ``<name>_medpix`` recipe (its method-specific options; its defaults where the
recipe is absent) with the text-tower options overridden. ``--steps`` (default 300) and the seed
are the only other differences between runs.

References (rows beside the methods):

  random-init     the same model built from the convirt recipe and not trained: a random image tower
                  and random projection heads on the pretrained MiniLM text tower (seeded per seed).
                  What the architecture gives before any pretraining; retrieval and zero-shot
                  should sit near chance, the probe shows what random image features carry.
  text-only       what the pretrained MiniLM reads from the dev captions alone, with no image (so
                  no retrieval: there is no image tower). Its "zero-shot" columns classify each
                  image's caption by the nearest class prompt (the same templates and phrases,
                  MiniLM sentence embeddings); its "probe" columns fit the same logistic
                  regression on MiniLM caption embeddings (train captions -> dev captions). An
                  upper reference of how much the captions themselves name the label, not an
                  image result: a caption often says "axial CT of the head". It does not depend
                  on the seed and is computed once (seeds column 1).

Cost (``--part cost``): ``--cost-steps`` training steps of each method (forward, backward,
AdamW step on real MedPix batches of 32 pairs loaded beforehand, so data loading is not timed),
each method in its own process so one method's peak memory does not hide another's. Reports
pairs/s over the timed steps (the first step excluded: allocation and kernel selection) and the
peak memory: process peak RSS on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU.

    python benchmarks/vlp_quality.py --seeds 0 1 2 --steps 300 --threads 1
    python benchmarks/vlp_quality.py --methods convirt --seeds 0 --steps 2 --out /tmp/vlp_smoke
    python benchmarks/vlp_quality.py --part cost --cost-steps 10 --threads 1
    python benchmarks/vlp_quality.py --readme-only

Methods are a list (``--methods``, default convirt gloria mgca): one that is not registered, or
cannot embed both images and texts, is reported as missing and left out; the others run. Per-run
records are ``<out>/<name>/seed<N>/quality.json`` (the run folder, with its checkpoint); ``--reuse``
loads finished ones, ``--collect`` only gathers them. Needs MEDREP_DATA (the data folder holding
medpix2/). Writes benchmarks/results/vlp_quality.json (or vlp_quality_cost.json) and the README
tables between the vlp-quality markers (nothing when the markers are absent), from both files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from readme_section import write_section

from medrep.evaluate.report import summarise
from medrep.recipe import load_recipe, read_yaml
from medrep.results import format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "medrep" / "configs"
METHODS = ["convirt", "gloria", "mgca"]
REFERENCES = ["random-init", "text-only"]
SHARED_RECIPE = "convirt_medpix"
# The convirt_medpix values every method shares, pinned so a change of that recipe shows up here.
BUDGET = ["model.name=resnet18", "model.spatial_dims=2", "model.conv1_t_size=7", "model.conv1_t_stride=2", "data.source=medpix2",
          "data.text_field=caption", "data.split=train", "data.size=[128, 128]", "data.batch_size=32", "optim.name=adamw",
          "optim.lr=3.0e-4", "optim.schedule=cosine", "optim.warmup_steps=50", "trainer.precision=32",
          "trainer.checkpoint_every_n_steps=100000", "trainer.progress_bar=false"]
TEXT_TOWER = {"text_model": None, "text_trainable_layers": 2, "text_pooling": "mean", "max_length": 128}
TARGETS = ("modality", "plane", "region")
LEVELS, KS, DIRECTIONS = ("image", "case"), (1, 5, 10), (("image_to_text", "i2t"), ("text_to_image", "t2i"))
RETRIEVAL_COLUMNS = [f"{lv} {short} R@{k}" for lv in LEVELS for _, short in DIRECTIONS for k in KS]
CLASS_COLUMNS = [f"{t} {kind} {m}" for t in TARGETS for kind in ("ZS", "probe") for m in ("ACC", "AUROC")]
EVAL_BATCH = 32


def data_root() -> Path:
    root = os.environ.get("MEDREP_DATA")
    if not root or not (Path(root) / "medpix2").is_dir():
        raise SystemExit("set MEDREP_DATA to the data folder holding medpix2/")
    return Path(root) / "medpix2"


def missing_reason(name: str) -> str | None:
    """Why ``name`` cannot run here (not registered, broken file, no image and text embedding), or None."""
    from medrep.methods import get_method

    try:
        cls = get_method(name)
    except Exception as exc:  # a file another session is still writing may not even import
        return f"{type(exc).__name__}: {exc}"
    absent = [f for f in ("encode_image", "encode_text") if not callable(getattr(cls, f, None))]
    return f"{name} has no {' or '.join(absent)}: not a vision-language method" if absent else None


def method_section(name: str) -> tuple[dict, list[str]]:
    """``method`` of the method's own medpix recipe (or only its name), text tower pinned; and notes."""
    from medrep.methods import method_options

    own = CONFIGS / f"{name}_medpix.yaml"
    notes = []
    section = dict((read_yaml(own.read_text()) or {}).get("method") or {}) if own.is_file() else {}
    if not own.is_file():
        notes.append(f"no recipe {own.name}: {name}'s own defaults")
    section["name"] = name
    options = method_options(name)
    section |= {k: v for k, v in TEXT_TOWER.items() if k in options}
    unpinned = [k for k in TEXT_TOWER if k not in options]
    if unpinned:
        notes.append(f"{name} takes no {', '.join(unpinned)}: left at its own setting")
    return section, notes


def recipe_for(name: str, seed: int, steps: int, out: Path) -> dict:
    shared = read_yaml((CONFIGS / f"{SHARED_RECIPE}.yaml").read_text())
    section, _ = method_section(name)
    recipe = {k: v for k, v in shared.items() if k != "method"} | {"method": section}
    return load_recipe(recipe, BUDGET + [f"trainer.seed={seed}", f"trainer.max_steps={steps}",
                                         f"trainer.output_dir={out / name / f'seed{seed}'}"])


def eval_data(recipe: dict) -> dict:
    """The recipe's ``data`` with spatial_dims resolved: what run_data_config gives for a run folder."""
    data = dict(recipe["data"])
    data["spatial_dims"] = data.get("spatial_dims") or recipe["model"].get("spatial_dims", 2)
    return data


def labelled_rows(root: Path) -> dict[str, tuple[list, list[str]]]:
    """Per target: MedPix rows labelled by it, and the classes scored (the CLI's defaults)."""
    from medrep.evaluate.zeroshot import DEFAULT_CLASSES, medpix_rows

    out = {}
    for target in TARGETS:
        rows, _ = medpix_rows(root, target)
        present = sorted({str(r.label) for r in rows if r.label is not None})
        out[target] = (rows, [c for c in DEFAULT_CLASSES.get(target, present) if c in present])
    return out


class CachedImages(torch.nn.Module):
    """``encode_image`` remembered per prepared image, ``encode_text`` passed through: the three targets'
    zero-shot and probes (and retrieval) then embed each image once. In eval mode an image's embedding
    does not depend on the batch it comes in, so the scores are those of the method itself."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method
        self.cache: dict[bytes, torch.Tensor] = {}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        keys = [hashlib.blake2b(x.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=16).digest() for x in images]
        new = [i for i, k in enumerate(keys) if k not in self.cache]
        if new:
            for i, emb in zip(new, self.method.encode_image(images[new]).detach()):
                self.cache[keys[i]] = emb
        return torch.stack([self.cache[k] for k in keys])

    def encode_text(self, texts) -> torch.Tensor:
        return self.method.encode_text(texts)


def evaluate(method: torch.nn.Module, data_cfg: dict, root: Path) -> dict:
    """Retrieval on the dev captions, zero-shot and probe per target: the CLI's own functions."""
    from medrep.data.sources.medpix2 import medpix2_pairs
    from medrep.evaluate.retrieval import evaluate_retrieval
    from medrep.evaluate.zeroshot import PHRASES, TEMPLATES, evaluate_zeroshot

    pairs, _ = medpix2_pairs(root, data_cfg.get("text_field") or "caption", skip_bad=bool(data_cfg.get("skip_bad")))
    dev = [r for r in pairs if r.split == "dev"]
    method = CachedImages(method)
    result = {"retrieval": evaluate_retrieval(method, dev, data_cfg, EVAL_BATCH, case_by="patient"), "classification": {}}
    for target, (rows, classes) in labelled_rows(root).items():
        res = evaluate_zeroshot(method, rows, data_cfg, classes, TEMPLATES[target], PHRASES.get(target), "train", "dev",
                                batch_size=EVAL_BATCH)
        res.pop("table", None)
        result["classification"][target] = res
    return result


class CaptionEncoder(torch.nn.Module):
    """The pretrained MiniLM alone, frozen, no projection: the text-only reference's encoder."""

    def __init__(self):
        super().__init__()
        from medrep.models.text import TextEncoder

        self.text_encoder = TextEncoder(TEXT_TOWER["text_model"], max_length=TEXT_TOWER["max_length"], trainable_layers=0,
                                        pooling=TEXT_TOWER["text_pooling"])

    def encode_text(self, texts) -> torch.Tensor:
        return F.normalize(self.text_encoder(list(texts))["sentence"], dim=1)


def text_only(root: Path) -> dict:
    """Each image's caption classified by the nearest class prompt, and a probe on caption embeddings."""
    from medrep.data.sources.medpix2 import medpix2_pairs
    from medrep.evaluate.linear import linear_probe
    from medrep.evaluate.retrieval import embed_texts
    from medrep.evaluate.zeroshot import PHRASES, TEMPLATES, class_embeddings, class_prompts, zeroshot_scores

    pairs, _ = medpix2_pairs(root, "caption", skip_bad=True)
    encoder = CaptionEncoder().eval()
    caption = dict(zip((r.study for r in pairs), embed_texts(encoder, [r.report for r in pairs], EVAL_BATCH).numpy()))
    result = {"classification": {}}
    for target, (rows, classes) in labelled_rows(root).items():
        emb, y, no_caption = {}, {}, {}
        for split in ("train", "dev"):
            part = [r for r in rows if r.split == split and str(r.label) in classes]
            kept = [r for r in part if r.study in caption]
            no_caption[split] = len(part) - len(kept)
            emb[split] = np.stack([caption[r.study] for r in kept])
            y[split] = np.array([classes.index(str(r.label)) for r in kept])
        prompts = class_prompts(classes, TEMPLATES[target], PHRASES.get(target))
        zs = zeroshot_scores(emb["dev"], class_embeddings(encoder, prompts), y["dev"], classes)
        lp = linear_probe(emb["train"], y["train"], emb["dev"], y["dev"], fractions=(1.0,), seeds=(0,))
        result["classification"][target] = {"zeroshot": zs | {"prompts": dict(zip(classes, prompts))}, "linear_probe": lp,
                                            "classes": classes, "no_caption": no_caption,
                                            "counts": {k: np.bincount(v, minlength=len(classes)).tolist() for k, v in y.items()}}
    return result


def metrics(result: dict) -> dict[str, float]:
    out = {}
    ret = result.get("retrieval")
    if ret:
        for level in LEVELS:
            for key, short in DIRECTIONS:
                out |= {f"{level} {short} R@{k}": ret[level][key][f"recall@{k}"] for k in KS}
    for target, res in result["classification"].items():
        lin = res["linear_probe"]["fractions"]["1"]
        out |= {f"{target} ZS ACC": res["zeroshot"]["accuracy"], f"{target} ZS AUROC": res["zeroshot"]["auroc"],
                f"{target} probe ACC": lin["accuracy"]["mean"], f"{target} probe AUROC": lin["auroc"]["mean"]}
    return out


def final_train_log(run_dir: Path) -> dict[str, float]:
    """The last logged value of each train/ metric (loss, i2t_acc ...), from the CSV log."""
    import csv

    logs = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    last: dict[str, float] = {}
    if logs:
        for row in csv.DictReader(open(logs[-1])):
            last |= {k: float(v) for k, v in row.items() if k.startswith("train/") and v not in ("", None)}
    return last


def run_one(name: str, seed: int, steps: int, out: Path, root: Path) -> dict:
    from medrep.checkpoint import load_method
    from medrep.engine import pretrain
    from medrep.evaluate.retrieval import run_data_config
    from medrep.methods import build_method

    start = time.perf_counter()
    if name == "text-only":
        return {"seed": None, "pretrain_minutes": 0.0, "deterministic": True, "result": text_only(root)}
    if name == "random-init":
        recipe = recipe_for("convirt", seed, steps, out)
        torch.manual_seed(seed)
        method = build_method(recipe).eval()
        return {"seed": seed, "pretrain_minutes": 0.0, "result": evaluate(method, eval_data(recipe), root)}
    run_dir = pretrain(recipe_for(name, seed, steps, out))
    minutes = (time.perf_counter() - start) / 60
    method = load_method(run_dir)
    return {"seed": seed, "pretrain_minutes": minutes, "final_train": final_train_log(run_dir),
            "result": evaluate(method, run_data_config(run_dir), root)}


def quality_part(args, out: Path, root: Path) -> dict:
    missing = {m: r for m in args.methods if (r := missing_reason(m))}
    for m, why in missing.items():
        print(f"{m}: not available, left out ({why})", flush=True)
    refs = set(args.references)
    names = ["random-init"] * ("random-init" in refs) + list(args.methods) + ["text-only"] * ("text-only" in refs)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    notes = {m: method_section(m)[1] for m in args.methods if m not in missing}
    for seed in args.seeds:
        for name in names:
            if name == "text-only" and runs[name]:
                continue  # seed-independent: once
            record = out / name / ("quality.json" if name == "text-only" else f"seed{seed}/quality.json")
            if (args.reuse or args.collect) and record.is_file():
                runs[name].append(json.loads(record.read_text()))
                print(f"seed {seed} {name}: reused {record}", flush=True)
                continue
            if args.collect or name in missing:
                print(f"seed {seed} {name}: {'missing method' if name in missing else 'no record'}, left out", flush=True)
                continue
            start = time.perf_counter()
            rec = run_one(name, seed, args.steps, out, root)
            rec["metrics"] = metrics(rec["result"])
            runs[name].append(rec)
            write_json(record, rec)
            print(f"seed {seed} {name}: {rec['metrics']} ({(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    table = []
    for name, per_seed in runs.items():
        if per_seed:
            keys = per_seed[0]["metrics"]
            table.append({"encoder": name, "seeds": len(per_seed),
                          **{k: summarise([r["metrics"][k] for r in per_seed]) for k in keys}})
    if not table:
        raise SystemExit("no run to report")
    print(format_table(with_retrieval(table), ["encoder", "seeds", *RETRIEVAL_COLUMNS]))
    print(format_table(table, ["encoder", "seeds", *CLASS_COLUMNS]))
    sections = {m: method_section(m)[0] for m in args.methods if m not in missing}
    majority, candidates = {}, {}
    for per_seed in runs.values():
        for rec in per_seed[:1]:
            for target, res in rec["result"]["classification"].items():
                if "majority_accuracy" in res:
                    majority[target] = res["majority_accuracy"]
            if "retrieval" in rec["result"]:
                r = rec["result"]["retrieval"]
                candidates = {lv: r[lv]["n_texts"] for lv in LEVELS} | {"queries": {lv: r[lv]["n_images"] for lv in LEVELS}}
    return {"part": "quality", "seeds": sorted({r["seed"] for p in runs.values() for r in p if r["seed"] is not None}),
            "steps": args.steps, "methods": args.methods, "references": [n for n in names if n in REFERENCES],
            "missing": missing, "shared_recipe": SHARED_RECIPE, "budget": BUDGET, "text_tower": TEXT_TOWER,
            "method_sections": sections, "notes": notes, "table": table,
            "columns": {"retrieval": ["encoder", "seeds", *RETRIEVAL_COLUMNS], "classification": ["encoder", "seeds", *CLASS_COLUMNS]},
            "majority_accuracy": majority, "retrieval_candidates": candidates, "runs": runs, "torch_threads": torch.get_num_threads()}


def cost_one(name: str, steps: int) -> dict:
    """Own process per method: ``steps + 1`` training steps on preloaded real batches, the first untimed."""
    import resource
    import tempfile

    from medrep.engine import build_loader
    from medrep.engine.module import param_groups
    from medrep.methods import build_method

    recipe = recipe_for(name, 0, steps + 1, Path(tempfile.gettempdir()) / "vlp_cost_unused")
    torch.manual_seed(0)
    method = build_method(recipe)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method.to(dev).train()
    optim = recipe["optim"]
    opt = torch.optim.AdamW(param_groups(method, optim["weight_decay"]), lr=optim["lr"])
    loader = iter(build_loader(recipe))
    batches = [next(loader) for _ in range(steps + 1)]
    times = []
    for i, batch in enumerate(batches):
        batch = {k: v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = method.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_train_batch_end(i + 1, steps + 1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pairs = int(batches[0]["image"].shape[0])
    return {"method": name, "device": str(dev), "pairs_per_step": pairs, "steps_timed": len(times),
            "seconds_per_step": float(np.median(times)), "pairs_per_second": float(pairs * len(times) / sum(times)),
            "peak_memory_mib": float(peak), "memory_kind": "max_memory_allocated" if dev.type == "cuda" else "process peak RSS",
            "params_total": sum(p.numel() for p in method.parameters()),
            "params_trainable": sum(p.numel() for p in method.parameters() if p.requires_grad),
            "torch_threads": torch.get_num_threads(), "image_size": recipe["data"]["size"]}


def cost_part(args) -> dict:
    if args.cost_steps < 1:
        raise SystemExit("--cost-steps must be at least 1 (one more step runs untimed)")
    rows, missing = [], {}
    for name in args.methods:
        if why := missing_reason(name):
            missing[name] = why
            print(f"{name}: not available, left out ({why})", flush=True)
            continue
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--cost-one", name, "--cost-steps", str(args.cost_steps),
                               "--threads", str(torch.get_num_threads())], capture_output=True, text=True)
        if proc.returncode != 0:
            missing[name] = f"failed (exit {proc.returncode}): " + " | ".join(proc.stderr.strip().splitlines()[-3:])
            print(f"{name}: {missing[name]}", flush=True)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{rows[-1]} ({time.perf_counter() - start:.0f} s with start-up)", flush=True)
    if not rows:
        raise SystemExit("no method measured")
    columns = ["method", "device", "pairs_per_step", "steps_timed", "seconds_per_step", "pairs_per_second", "peak_memory_mib",
               "memory_kind", "params_trainable"]
    print(format_table(rows, columns))
    return {"part": "cost", "rows": rows, "columns": columns, "missing": missing, "budget": BUDGET, "text_tower": TEXT_TOWER}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["quality", "cost"], default="quality")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--references", nargs="*", default=REFERENCES, choices=REFERENCES,
                        help="reference rows (default both; none with an empty list)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--cost-steps", type=int, default=10, help="timed training steps per method in --part cost")
    parser.add_argument("--cost-one", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="runs/vlp_quality")
    parser.add_argument("--reuse", action="store_true", help="load runs finished earlier under --out (quality.json)")
    parser.add_argument("--collect", action="store_true", help="only gather the per-run records present under --out (no training)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 when benchmarks share the CPU)")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--readme-only", action="store_true")
    args = parser.parse_args()
    if args.readme_only:
        update_readme()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cost_one:
        data_root()
        print(json.dumps(cost_one(args.cost_one, args.cost_steps)))
        return
    root = data_root()
    if args.part == "cost":
        result = cost_part(args)
    else:
        result = quality_part(args, Path(args.out).resolve(), root)
    write_json(ROOT / "benchmarks" / "results" / ("vlp_quality_cost.json" if args.part == "cost" else "vlp_quality.json"), result)
    if not args.no_readme:
        update_readme()


def with_retrieval(table: list[dict]) -> list[dict]:
    """Rows that have retrieval scores (text-only has no image tower, so none)."""
    return [row for row in table if RETRIEVAL_COLUMNS[0] in row]


def _budget_line(r: dict) -> str:
    text = r["text_tower"]
    return (f"shared budget: the `{r.get('shared_recipe', SHARED_RECIPE)}` recipe pinned by `{' '.join(r['budget'])}`; text tower "
            f"{text['text_model'] or 'packaged all-MiniLM-L6-v2'}, last {text['text_trainable_layers']} layers trained, "
            f"{text['text_pooling']} pooling, {text['max_length']} tokens")


def update_readme() -> None:
    parts = []
    results = ROOT / "benchmarks" / "results"
    quality, cost = results / "vlp_quality.json", results / "vlp_quality_cost.json"
    if quality.is_file():
        r = json.loads(quality.read_text())
        missing = "".join(f" Left out: {m} ({why})." for m, why in r["missing"].items())
        maj = ", ".join(f"{t} {v:.3f}" for t, v in r["majority_accuracy"].items())
        cand = r["retrieval_candidates"]
        chance = (f" Retrieval candidates (distinct texts): {cand['image']} at image level, {cand['case']} at case level."
                  if cand else "")
        parts.append(
            f"**MedPix 2.0 dev, {r['steps']} steps per method, seeds {r['seeds']}** (mean ± std over the seeds of each row); "
            f"{_budget_line(r)}. From `{quality.relative_to(ROOT)}`.{missing}\n\n"
            "Retrieval (Recall@K; i2t: an image finds its caption, t2i: a caption finds its image; case: a case's images "
            f"and captions pooled).{chance}\n\n"
            + format_table(with_retrieval(r["table"]), r["columns"]["retrieval"], markdown=True, floatfmt=".3f")
            + "\n\nZero-shot (ZS, class prompts) and linear probe (all train labels) on the same image embeddings; "
            f"largest dev class: {maj}. random-init: the untrained model (random image tower and heads, pretrained MiniLM). "
            "text-only: no image at all: each dev caption classified by the nearest class prompt (ZS) or by a probe on "
            "MiniLM caption embeddings, an upper reference of what the captions themselves say (seed-independent: computed once).\n\n"
            + format_table(r["table"], r["columns"]["classification"], markdown=True, floatfmt=".3f"))
    if cost.is_file():
        r = json.loads(cost.read_text())
        missing = "".join(f" Left out: {m} ({why})." for m, why in r["missing"].items())
        parts.append(f"**Training cost per method** ({r['rows'][0]['pairs_per_step']} pairs a step, first step untimed, data loading "
                     f"not timed; the budget above), "
                     f"from `{cost.relative_to(ROOT)}`.{missing}\n\n"
                     + format_table(r["rows"], r["columns"], markdown=True, floatfmt=".2f"))
    write_section("vlp-quality", "\n\n".join(parts))


if __name__ == "__main__":
    main()
