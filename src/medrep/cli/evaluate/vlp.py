"""``medrep evaluate retrieval`` and ``medrep evaluate zeroshot``: vision-language runs (encode_image and
encode_text) scored on image-report retrieval and on naming classes in text."""

from __future__ import annotations

import argparse
from typing import Any

from medrep.cli import options
from medrep.errors import MedrepError

EPILOG_RETRIEVAL = """examples:
  medrep evaluate retrieval --run runs/convirt_medpix --data medpix2 --split dev --out retrieval.json
  medrep evaluate retrieval --run runs/convirt_iu --data iu_xray --image-root iu/images --split test --level case
  medrep evaluate retrieval --run runs/a --data pairs.jsonl --split test --ks 1 5 10 50
Images are prepared as the run's recipe prepares them. Level image: each image is a query, its report the match.
Level case: images pooled per case (MedPix: the U_id case; otherwise the study) and the case's distinct texts pooled.
Identical texts are one candidate. Ties count against the query. Recall is a fraction (0-1)."""

EPILOG_ZEROSHOT = """examples:
  medrep evaluate zeroshot --run runs/convirt_medpix --target modality --out zs_modality.json
  medrep evaluate zeroshot --run runs/convirt_medpix --target plane --classes Axial Coronal Sagittal
  medrep evaluate zeroshot --run runs/a --target region --templates "{}" "an image of the {}"
Each class name (CT -> "computed tomography (CT)", MR -> "magnetic resonance (MR)", others as given) fills
every template; the class embedding is the mean of its prompts' embeddings. The linear probe is fitted on
--train-split with all its labels and scored on --split, on the same image embeddings."""




def _common() -> argparse.ArgumentParser:
    """Where the data is and which split is scored: the same for both evaluations."""
    p = options.parent()
    p.add_argument("--root", help="MedPix 2.0 folder, or the folder of another --data source such as mimic_cxr "
                                  "(default: $MEDREP_DATA/medpix2)")
    p.add_argument("--split", default=None, help="split to score (default: dev for medpix2, else test)")
    return p


def _add(tasks, name: str, help: str, epilog: str, own: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return options.command(tasks, name, help, epilog=epilog,
                           parents=[options.run("a vision-language run folder (recipe.yaml + checkpoints/last.ckpt)"), _common(),
                                    options.size("resize images to this size (default: the run's data.size)"), own,
                                    options.batch_size(32, "studies per batch (default 32)"), options.device(), options.output()])


def add_retrieval(tasks) -> argparse.ArgumentParser:
    t = options.parent()
    t.add_argument("--data", help="an image-report source (medpix2, iu_xray, mimic_cxr, ...) or an image-text manifest "
                                  "(.csv/.jsonl; default: the run's own data)")
    t.add_argument("--field", default="caption", help="medpix2 text: caption (per image), findings, history, diagnosis ...")
    t.add_argument("--annotation", help="iu_xray: R2Gen annotation.json (default: $MEDREP_DATA/iu_xray/annotation.json)")
    t.add_argument("--image-root", help="iu_xray: folder the annotation's image paths are relative to")
    t.add_argument("--level", choices=["image", "case", "both"], default="both", help="granularity (default both)")
    t.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], help="K of Recall@K (default 1 5 10)")
    t.add_argument("--skip-bad", action="store_true", help="leave out (and count) studies without text or images")
    return _add(tasks, "retrieval", "image-report retrieval: Recall@K and median rank, both directions", EPILOG_RETRIEVAL, t)


def add_zeroshot(tasks) -> argparse.ArgumentParser:
    t = options.parent()
    t.add_argument("--data", default="medpix2", help="medpix2 (default) or an image-text manifest with a label column")
    t.add_argument("--target", choices=["location", "modality", "plane", "region"], help="medpix2 label (modality: CT/MR, plane, region); "
                                                             "picks the default templates")
    t.add_argument("--classes", nargs="+", help="classes to score (default: all; plane: Axial Coronal Sagittal)")
    t.add_argument("--templates", nargs="+", help="prompt templates, each with one {} (default: the target's list)")
    t.add_argument("--train-split", default="train", help="split the linear probe is fitted on (default train)")
    t.add_argument("--min-count", type=int, default=5, help="medpix2: drop classes with fewer training images (default 5)")
    t.add_argument("--temperature", type=float, default=0.1, help="softmax temperature of the AUROC scores (default 0.1)")
    t.add_argument("--no-probe", action="store_true", help="zero-shot only")
    return _add(tasks, "zeroshot", "zero-shot classification from class prompts, beside a linear probe", EPILOG_ZEROSHOT, t)


def _load_run(run: str, source: str | None = None) -> tuple[Any, dict]:
    """The run's method, checked to embed images and text, and its recipe's data section (a mixed
    run's part of ``source``)."""
    from medrep.checkpoint import load_method
    from medrep.evaluate.retrieval import check_vlp, run_data_config

    cfg = run_data_config(run, source=source)  # refuses a folder without recipe.yaml, naming --run
    method = load_method(run)
    check_vlp(method, "--run")
    return method, cfg


def _pairs(args, cfg: dict) -> tuple[list, dict, str, str]:
    """(rows, what was read, case_by, default split) of the image-report source the registry names.

    ``--data`` is a registered image-report source (medpix2, iu_xray, mimic_cxr, ...; read from
    ``--root`` or ``--annotation``, else its default under $MEDREP_DATA) or an image-text manifest;
    without it, the run's own source, path and image root, as in pretraining.
    """
    from medrep.data.sources import get_source, read_pairs, source_names

    own, named = args.data is None, args.data in source_names("image_text")
    if own:
        source, path = cfg.get("source"), args.root or args.annotation or cfg.get("path")
        if source not in source_names("image_text"):
            raise MedrepError(f"the run was trained on {source!r} data, not image-text pairs: give the pairs", "--data")
    elif named:
        source, path = args.data, args.root or args.annotation
    else:  # a manifest file
        source, path = "image_text", args.data
    pair_cfg = {**(cfg if own else {}), "source": source, "path": path, "text_field": args.field, "skip_bad": args.skip_bad,
                "image_root": args.image_root or (cfg.get("image_root") if own else None)}
    rows, info = read_pairs(pair_cfg, option="--annotation" if args.annotation else "--root")
    found = get_source(source)
    return rows, info, found.case_by, found.eval_split


def _in_split(rows: list, split: str) -> list:
    chosen = [r for r in rows if r.split == split]
    if not chosen:
        raise MedrepError(f"no study in split {split!r}; splits: {', '.join(sorted({str(r.split) for r in rows}))}", "--split")
    return chosen


def _finish(result: dict, out: str | None) -> int:
    from medrep.results import write_json

    if out:
        write_json(out, result)
        print(f"written: {out}")
    return 0


def run_retrieval(args) -> int:
    from medrep.evaluate.retrieval import evaluate_retrieval, run_data_config
    from medrep.results import format_table

    if min(args.ks) < 1:
        raise MedrepError(f"must be positive, got {args.ks}", "--ks")
    method, cfg = _load_run(args.run, args.data)
    if args.size:
        cfg = run_data_config(args.run, args.size, args.data)
    rows, info, case_by, default_split = _pairs(args, cfg)
    split = args.split or default_split
    levels = ("image", "case") if args.level == "both" else (args.level,)
    result = evaluate_retrieval(method, _in_split(rows, split), cfg, args.batch_size, args.device, levels, args.ks, case_by)
    table = [{"level": lv, "direction": d.replace("_", " "), **result[lv][d]}
             for lv in levels for d in ("image_to_text", "text_to_image")]
    print(f"{info.get('dataset')} {split}: {result['n_rows']} studies, {result['n_images']} images, "
          f"{result['n_distinct_texts']} distinct texts; case = {case_by}")
    print(format_table(table, ["level", "direction", "n_queries", *[f"recall@{k}" for k in args.ks], "median_rank"]))
    return _finish(result | {"run": str(args.run), "data": info, "split": split, "preprocess": cfg}, args.out)


def run_zeroshot(args) -> int:
    from medrep.data.datasets.image_text import read_image_text_manifest
    from medrep.evaluate.retrieval import run_data_config
    from medrep.evaluate.zeroshot import (
        DEFAULT_CLASSES,
        GENERIC_TEMPLATES,
        PHRASES,
        TEMPLATES,
        check_templates,
        evaluate_zeroshot,
        medpix_rows,
    )
    from medrep.results import format_table

    templates = check_templates(args.templates or TEMPLATES.get(args.target, GENERIC_TEMPLATES))
    if args.data == "medpix2" and args.target is None:
        raise MedrepError("needed with --data medpix2: modality, plane, region or location", "--target")
    method, cfg = _load_run(args.run, args.data)
    if args.size:
        cfg = run_data_config(args.run, args.size, args.data)
    if args.data == "medpix2":
        from medrep.data.sources import source_path

        rows, info = medpix_rows(source_path("medpix2", {"path": args.root}, "--root"), args.target, args.min_count)
    else:
        rows, info = read_image_text_manifest(args.data), {"dataset": "manifest", "path": str(args.data)}
    present = sorted({str(r.label) for r in rows if r.label is not None})
    classes = args.classes or [c for c in DEFAULT_CLASSES.get(args.target, present) if c in present]
    unknown = sorted(set(classes) - set(present))
    if unknown:
        raise MedrepError(f"classes {unknown} have no images; present: {', '.join(present)}", "--classes")
    split = args.split or "dev"
    result = evaluate_zeroshot(method, rows, cfg, classes, templates, PHRASES.get(args.target), args.train_split, split,
                               args.temperature, args.batch_size, args.device, probe=not args.no_probe)
    zs = result["zeroshot"]
    print(f"{args.target or 'label'} on {split}: {zs['n']} images, classes {', '.join(classes)}; {len(templates)} templates, "
          f"{result['left_out'].get(split, 0)} {split} images of other classes left out")
    print(format_table([{"class": c, **v} for c, v in zs["per_class"].items()], ["class", "n", "recall", "auroc"]))
    print(result["table"])
    return _finish(result | {"run": str(args.run), "data": info, "target": args.target, "templates": templates,
                             "preprocess": cfg}, args.out)
