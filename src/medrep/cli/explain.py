"""``medrep explain``: where a PLACE or GLoRIA run looks for each sentence (word) of one image-report pair, drawn
as heat maps over the image in one PNG, with the numbers in a JSON beside it.

A command of its own rather than an ``evaluate`` task: evaluations score a run on a split of a data set and
print a table, this inspects one pair the user names and scores nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

from medrep.cli import options
from medrep.errors import MedrepError

EPILOG = """examples:
  medrep explain --run runs/place_medpix --image scan.png --report "Axial CT. Hypodense lesion in the left liver lobe." --out lesion
  medrep explain --run runs/gloria_medpix --image scan.nii.gz --report-file report.txt --out explain/report.png
  medrep explain --run runs/place_medpix --row MPX1009_synpic46283 --out mpx   # a study (MedPix: an image) of the run's data
Writes PREFIX.png and PREFIX.json (--out with or without .png). PLACE: one panel per report sentence (split and
cut at method.max_sentences as in training) with the query it is matched to (method.match), the cosine, and that
query's attention over the encoder's token grid. GLoRIA: one panel per word with its attention over the regions,
the loss's own. Maps are upsampled (bilinear) onto the image, one colour scale for all panels; 3D: each panel
shows the slice (last axis) with the most attention. At most --max-panels panels; the JSON holds every map."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    own = options.parent()
    own.add_argument("--image", help="an image file (PNG/JPEG, DICOM file or series folder, NIfTI), prepared as the run's "
                                     "recipe prepares images")
    text = own.add_mutually_exclusive_group()
    text.add_argument("--report", help="the report text (with --image)")
    text.add_argument("--report-file", help="a UTF-8 text file holding the report (with --image)")
    own.add_argument("--row", metavar="STUDY", help="instead of --image and --report: this study of the run's own "
                                                    "image-report data (its first image)")
    own.add_argument("--root", help="with --row: the data's folder or manifest, if it moved since training (default: the recipe's)")
    own.add_argument("--max-panels", type=int, default=16, help="most sentence or word panels in the figure (default 16)")
    return options.command(subparsers, "explain", "heat maps of where a PLACE or GLoRIA run looks for each sentence or word "
                                                  "of one image-report pair",
                           epilog=EPILOG,
                           parents=[options.run("a PLACE or GLoRIA run folder (recipe.yaml + checkpoints/last.ckpt)"), own,
                                    options.size("resize the image to this size (default: the run's data.size)"), options.device(),
                                    options.output("output prefix: writes PREFIX.png and PREFIX.json (default: explain)",
                                                   default="explain")])


def _pair(args, cfg: dict) -> tuple[str, str, str, str]:
    """(image path, report text, where the image came from, where the report came from) as the options say."""
    if args.row is not None:
        if args.image or args.report is not None or args.report_file:
            raise MedrepError("takes the image and the report from the run's data; leave out --image, --report and --report-file",
                              "--row")
        return _row(args, cfg)
    if args.root:
        raise MedrepError("only with --row", "--root")
    if not args.image:
        raise MedrepError("give the image (or --row STUDY)", "--image")
    if args.report is None and not args.report_file:
        raise MedrepError("give the report text, or --report-file (or --row STUDY)", "--report")
    if args.report_file:
        from medrep.data.io.reports import read_text_file

        if not Path(args.report_file).is_file():
            raise MedrepError(f"no such file: {args.report_file}", "--report-file")
        return args.image, read_text_file(args.report_file), "--image", "--report-file"
    return args.image, args.report, "--image", "--report"


def _row(args, cfg: dict) -> tuple[str, str, str, str]:
    from medrep.data.sources import read_pairs, source_names

    source = cfg.get("source")
    if source not in source_names("image_text"):
        raise MedrepError(f"the run was trained on {source!r} data, not image-report pairs; give --image and --report", "--row")
    rows, _ = read_pairs({**cfg, "path": args.root or cfg.get("path")}, option="--root")
    found = [r for r in rows if str(r.study) == args.row]
    if not found:
        some = ", ".join(str(r.study) for r in rows[:5])
        raise MedrepError(f"no study {args.row!r} in the run's {source} data ({len(rows)} studies, e.g. {some})", "--row")
    row = found[0]
    return row.images[0], row.report, f"--row {args.row}", f"--row {args.row}"


def run(args: argparse.Namespace) -> int:
    from medrep.checkpoint import load_method
    from medrep.evaluate.explain import check_run, explain_kind, explain_pair, plot_explanation, prepare_image
    from medrep.evaluate.retrieval import run_data_config
    from medrep.results import write_json

    if args.max_panels < 1:
        raise MedrepError(f"must be positive, got {args.max_panels}", "--max-panels")
    check_run(args.run, "--run")  # a place or gloria run, from its recipe, before any weight is read
    cfg = run_data_config(args.run, args.size)
    image_path, report, image_where, report_where = _pair(args, cfg)
    method = load_method(args.run)
    explain_kind(method, "--run")
    image = prepare_image(image_path, cfg, image_where)
    result = explain_pair(method, image, report, args.device, report_where)
    prefix = Path(args.out)
    prefix = prefix / "explain" if prefix.is_dir() else prefix.with_suffix("") if prefix.suffix == ".png" else prefix
    png, js = prefix.parent / (prefix.name + ".png"), prefix.parent / (prefix.name + ".json")
    plot_explanation(png, image, result, args.max_panels)
    write_json(js, result | {"run": str(args.run), "image": str(image_path), "row": args.row, "preprocess": cfg,
                             "png": str(png), "panels": min(args.max_panels, len(result["items"]))})
    for item in result["items"]:
        head = f"query {item['query']:>2}  " if "query" in item else ""
        print(f"{head}cos {item['cosine']:+.3f}  {item['text']}")
    cut = result.get("cut") or []
    if cut:
        print(f"{len(cut)} of {result['n_sentences']} sentences cut (method.max_sentences {result['max_sentences']}, or past "
              "method.max_length)")
    if result.get("words_cut"):
        print(f"{result['words_cut']} of {result['n_words']} words past method.max_length")
    print(f"written: {png}, {js}")
    return 0
