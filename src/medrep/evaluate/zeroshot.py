"""Zero-shot classification with a vision-language model: classes named in text, no labels trained on.

Each class name becomes a phrase (:data:`PHRASES`: "CT" -> "computed tomography (CT)"; other names
as given), the phrase fills every template of a list (:data:`TEMPLATES`, per MedPix target, or
:data:`GENERIC_TEMPLATES`), and the class embedding is the renormalised mean of its prompts'
normalised embeddings (CLIP's prompt ensembling: one wording's quirks average out). An image is
assigned the class of highest cosine similarity.

Scores: accuracy (argmax), and AUROC (binary, or one-vs-rest macro, :func:`medrep.evaluate.metrics.auroc`)
on ``softmax(similarity / temperature)``; accuracy and binary AUROC do not depend on the temperature,
the multiclass AUROC does a little (default 0.1, ConVIRT's). Beside it, :func:`evaluate_zeroshot`
fits the linear probe (100 % of the training labels) on the same image embeddings: the gap is what the
text side fails to name that the image side knows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from ..errors import MedrepError
from .linear import linear_probe
from .metrics import accuracy, auroc
from .report import format_table
from .retrieval import check_vlp, embed_images, embed_texts, pool

GENERIC_TEMPLATES = ("{}", "a {} image", "an image of the {}")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "modality": ("{}", "a {} image", "a {} scan", "an image acquired with {}"),
    "plane": ("{}", "{} image", "an image in the {} plane", "{} view", "{} slice"),
    "region": ("{}", "an image of the {}", "a scan of the {}", "{} imaging"),
    "location": GENERIC_TEMPLATES,
}
PHRASES: dict[str, dict[str, str]] = {"modality": {"CT": "computed tomography (CT)", "MR": "magnetic resonance (MR)"}}
#: classes kept by default: MedPix planes besides these (montage, "NOS", "other view", photograph)
#: name no visual property a prompt can describe, and have few images
DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {"plane": ("Axial", "Coronal", "Sagittal")}


def check_templates(templates: Sequence[str]) -> list[str]:
    templates = list(templates)
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if not templates or bad:
        raise MedrepError(f"each template needs exactly one '{{}}' for the class name, got {bad or templates!r}", "--templates")
    return templates


def class_prompts(classnames: Sequence[str], templates: Sequence[str], phrases: Mapping[str, str] | None = None) -> list[list[str]]:
    """For each class, its phrase in every template."""
    templates = check_templates(templates)
    return [[t.format((phrases or {}).get(c, c)) for t in templates] for c in classnames]


def class_embeddings(method, prompts: Sequence[Sequence[str]], batch_size: int = 64, device: str = "auto") -> torch.Tensor:
    """(C, D): per class, the renormalised mean of its prompts' normalised embeddings."""
    flat = [p for group in prompts for p in group]
    emb = embed_texts(method, flat, batch_size, device)
    owner = np.repeat(np.arange(len(prompts)), [len(g) for g in prompts])
    return pool(emb, owner, len(prompts))


def zeroshot_scores(image_emb, class_emb, labels, classnames: Sequence[str], temperature: float = 0.1) -> dict[str, Any]:
    """Accuracy, AUROC, per-class recall and AUROC, and the confusion matrix (rows true, columns predicted).

    ``labels``: class names or indices into ``classnames``.
    """
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise MedrepError(f"must be a positive number, got {temperature!r}", "--temperature")
    names = list(classnames)
    y = np.asarray([names.index(v) if isinstance(v, str) and v in names else v for v in labels])
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= len(names))):
        raise MedrepError(f"labels must be among the classes {names}", "labels")
    sim = F.normalize(torch.as_tensor(image_emb).double(), dim=1) @ F.normalize(torch.as_tensor(class_emb).double(), dim=1).T
    probs = torch.softmax(sim / temperature, dim=1).numpy()
    idx = np.arange(len(names))
    pred = np.argmax(probs, axis=1)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    present = np.unique(y)
    per_class = {}
    for i, name in enumerate(names):
        n = int((y == i).sum())
        one_vs_rest = float(roc_auc_score(y == i, probs[:, i])) if 0 < n < y.size else None
        per_class[name] = {"n": n, "recall": confusion[i, i] / n if n else None, "auroc": one_vs_rest}
    return {
        "accuracy": accuracy(y, probs, idx), "auroc": auroc(y, probs, idx) if present.size >= 2 else None,
        "per_class": per_class, "confusion": confusion.tolist(), "classes": names, "n": int(y.size), "temperature": temperature,
    }


def zeroshot_classify(method, image_emb, labels, classnames: Sequence[str], templates: Sequence[str] = GENERIC_TEMPLATES,
                      phrases: Mapping[str, str] | None = None, temperature: float = 0.1, batch_size: int = 64,
                      device: str = "auto") -> dict[str, Any]:
    """Zero-shot scores of ``image_emb`` against the ensembled prompts of ``classnames``."""
    check_vlp(method)
    prompts = class_prompts(classnames, templates, phrases)
    result = zeroshot_scores(image_emb, class_embeddings(method, prompts, batch_size, device), labels, classnames, temperature)
    return result | {"prompts": dict(zip(classnames, prompts))}


def medpix_rows(root: str | Path, target: str, min_count: int = 5) -> tuple[list, dict[str, Any]]:
    """MedPix 2.0 images labelled by ``target`` as single-image rows (patient = case), and the manifest report."""
    from ..data.datasets.image_text import ImageTextRow
    from ..data.sources.medpix2 import medpix_manifest

    records, report = medpix_manifest(root, target, min_count)
    rows = [ImageTextRow((r["path"],), r["label"], Path(r["path"]).stem, r["split"], r["case"], r["label"]) for r in records]
    return rows, report


def _split(rows, split: str, option: str) -> list:
    chosen = [r for r in rows if r.split == split]
    if not chosen:
        present = sorted({str(r.split) for r in rows})
        raise MedrepError(f"no labelled images in split {split!r}; splits: {', '.join(present)}", option)
    return chosen


def evaluate_zeroshot(
    method, rows, preprocess_cfg: dict, classnames: Sequence[str] | None = None, templates: Sequence[str] = GENERIC_TEMPLATES,
    phrases: Mapping[str, str] | None = None, train_split: str = "train", test_split: str = "dev", temperature: float = 0.1,
    batch_size: int = 32, device: str = "auto", probe: bool = True,
) -> dict[str, Any]:
    """Zero-shot on ``test_split`` and the linear probe (``train_split`` -> ``test_split``) on the same
    embeddings (a row with several images: their pooled embedding). Rows whose label is not among
    ``classnames`` (default: every label) are left out and counted per split (``left_out``)."""
    check_vlp(method)
    labelled = [r for r in rows if r.label is not None]
    names = sorted({str(r.label) for r in labelled}) if classnames is None else [str(c) for c in classnames]
    if len(names) < 2:
        raise MedrepError(f"zero-shot needs at least 2 classes, got {names}", "--classes")
    kept = [r for r in labelled if str(r.label) in names]
    test = _split(kept, test_split, "--split")
    splits = {"test": test} | ({"train": _split(kept, train_split, "--train-split")} if probe else {})
    emb, y = {}, {}
    for key, part in splits.items():
        image_emb, owner = embed_images(method, part, preprocess_cfg, batch_size, device)
        emb[key], y[key] = pool(image_emb, owner, len(part)).numpy(), np.array([names.index(str(r.label)) for r in part])
    zs = zeroshot_classify(method, emb["test"], y["test"], names, templates, phrases, temperature, batch_size, device)
    majority = float(np.bincount(y["test"], minlength=len(names)).max() / y["test"].size)
    left_out = Counter(str(r.split) for r in rows if r.label is None or str(r.label) not in names)
    result: dict[str, Any] = {"zeroshot": zs, "classes": names, "train_split": train_split, "test_split": test_split,
                              "left_out": dict(left_out), "majority_accuracy": majority,
                              "counts": {k: np.bincount(v, minlength=len(names)).tolist() for k, v in y.items()}}
    table = [{"classifier": "zero-shot", "n_train": 0, "accuracy": zs["accuracy"], "auroc": zs["auroc"]}]
    if probe:
        lp = linear_probe(emb["train"], y["train"], emb["test"], y["test"], fractions=(1.0,), seeds=(0,))
        result["linear_probe"] = lp
        r = lp["fractions"]["1"]
        table.append({"classifier": "linear probe (100 %)", "n_train": r["n_train"], "accuracy": r["accuracy"]["mean"],
                      "auroc": r["auroc"]["mean"]})
    table.append({"classifier": "largest test class", "accuracy": majority})
    result["table"] = format_table(table, ["classifier", "n_train", "accuracy", "auroc"])
    return result
