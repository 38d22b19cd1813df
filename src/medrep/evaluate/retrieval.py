"""Image-report retrieval: does a study's image lie nearest to its own report, and the report to its images?

Scores (:func:`retrieval_scores`) are Recall@K in both directions and the median rank of the first
true match, on cosine similarity. Ties are broken against the query: a wrong candidate that scores
exactly as high as the best true match ranks before it, so a collapsed model whose embeddings are all
equal ranks every match last instead of scoring by the order of the files (pessimistic ranking).

Two granularities (:func:`evaluate_retrieval`):

- ``image``: every image is a query; its match is its study's report.
- ``case``: images pooled per case (``case_by="study"``, or ``"patient"`` for MedPix 2.0, whose rows are
  single images and whose case id is the patient field): the mean of the images' normalised
  embeddings, renormalised. A case's text is the renormalised mean of its distinct texts' embeddings
  (each distinct caption once), so a case with one report gets that report's embedding.

Reports identical after whitespace cleaning are one candidate matching every image that has them
(MedPix dev: 197 captions, 130 distinct), so a model is not penalised for failing to tell a text from
its own copy; at case level, cases with the same set of texts likewise share one candidate.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MedrepError

KS = (1, 5, 10)
LEVELS = ("image", "case")


def _as_matrix(x, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise MedrepError(f"embeddings must be a non-empty 2D array (items, dims), got shape {arr.shape}", name)
    if not np.all(np.isfinite(arr)):
        raise MedrepError("embeddings contain NaN or inf", name)
    return arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)


def _match_matrix(image_to_text, n_images: int, n_texts: int) -> np.ndarray:
    """(n_images, n_texts) bool from one text index per image or one set of text indices per image."""
    if len(image_to_text) != n_images:
        raise MedrepError(f"{len(image_to_text)} entries for {n_images} images", "image_to_text")
    match = np.zeros((n_images, n_texts), dtype=bool)
    for i, targets in enumerate(image_to_text):
        idx = [int(t) for t in targets] if isinstance(targets, (set, frozenset)) or np.ndim(targets) else [int(targets)]
        if not idx:
            raise MedrepError(f"image {i} has no matching text", "image_to_text")
        if min(idx) < 0 or max(idx) >= n_texts:
            raise MedrepError(f"image {i}: text index out of range 0..{n_texts - 1}", "image_to_text")
        match[i, idx] = True
    unmatched = np.flatnonzero(~match.any(0))
    if unmatched.size:
        raise MedrepError(f"texts {unmatched[:5].tolist()} match no image", "image_to_text")
    return match


def match_ranks(sim: np.ndarray, match: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """1-based rank of each query's best true match: 1 + the wrong candidates scoring at least as high."""
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for start in range(0, sim.shape[0], chunk):
        s, m = sim[start : start + chunk], match[start : start + chunk]
        best = np.where(m, s, -np.inf).max(1, keepdims=True)
        ranks[start : start + chunk] = 1 + ((s >= best) & ~m).sum(1)
    return ranks


def _summary(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    return out | {"median_rank": float(np.median(ranks)), "mean_rank": float(np.mean(ranks)), "n_queries": int(ranks.size)}


def retrieval_scores(image_emb, text_emb, image_to_text, ks: Sequence[int] = KS) -> dict[str, Any]:
    """Recall@K and median rank, image-to-text and text-to-image, on cosine similarity.

    ``image_to_text`` gives each image's true texts: one index per image, or a set (list) of
    indices. A query is found at K when any of its true matches is among its top K; the text-to-image
    queries are the texts, whose true matches are the images that list them. Ties count against the query.
    """
    if not ks or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise MedrepError(f"must be positive integers, got {list(ks)!r}", "--ks")
    img, txt = _as_matrix(image_emb, "image_emb"), _as_matrix(text_emb, "text_emb")
    if img.shape[1] != txt.shape[1]:
        raise MedrepError(f"image embeddings have {img.shape[1]} dims, text embeddings {txt.shape[1]}", "text_emb")
    match = _match_matrix(image_to_text, len(img), len(txt))
    sim = img @ txt.T
    return {
        "image_to_text": _summary(match_ranks(sim, match), ks),
        "text_to_image": _summary(match_ranks(sim.T, match.T), ks),
        "n_images": len(img), "n_texts": len(txt), "ks": [int(k) for k in ks],
    }


def index_of(keys: Sequence[Hashable]) -> tuple[list, np.ndarray]:
    """Distinct keys in first-seen order and each key's position among them."""
    first: dict[Hashable, int] = {}
    index = np.array([first.setdefault(k, len(first)) for k in keys], dtype=np.int64)
    return list(first), index


def pool(emb: torch.Tensor, group: np.ndarray | torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per group: the mean of its members' normalised embeddings, renormalised (pooled at evaluation)."""
    group = torch.as_tensor(np.asarray(group), dtype=torch.int64)
    total = torch.zeros(n_groups, emb.shape[1], dtype=emb.dtype).index_add_(0, group, F.normalize(emb, dim=1))
    return F.normalize(total, dim=1)


def check_vlp(method: Any, where: str | Path = "--run") -> None:
    """Refuse a method that cannot embed both images and text (e.g. a SimCLR run)."""
    missing = [name for name in ("encode_image", "encode_text") if not callable(getattr(method, name, None))]
    if missing:
        name = getattr(method, "name", type(method).__name__)
        raise MedrepError(f"method {name!r} has no {' or '.join(missing)}: needs a vision-language run (e.g. convirt)", where)


@torch.no_grad()
def embed_images(method, rows, preprocess_cfg: dict, batch_size: int = 32, device: str = "auto") -> tuple[torch.Tensor, np.ndarray]:
    """Normalised embeddings of every image of ``rows`` (prepared as ``preprocess_cfg`` says: the
    run's recipe ``data`` section) and the row each image belongs to."""
    from torch.utils.data import DataLoader

    from ..data.datasets.image_text_dataset import ImageTextDataset, collate_image_text
    from ..data.datasets.preprocess import Preprocess
    from .encoder import resolve_device

    dev = resolve_device(device)
    dataset = ImageTextDataset(rows, Preprocess.from_config(preprocess_cfg), spatial_dims=preprocess_cfg.get("spatial_dims"), train=False)
    loader = DataLoader(dataset, batch_size=max(1, int(batch_size)), shuffle=False, collate_fn=collate_image_text)
    method.eval().to(dev)
    embs, owners, offset = [], [], 0
    for batch in loader:
        embs.append(F.normalize(method.encode_image(batch["images"].float().to(dev)).float(), dim=1).cpu())
        owners.append(batch["image_study"].numpy() + offset)
        offset += len(batch["study"])
    return torch.cat(embs), np.concatenate(owners)


@torch.no_grad()
def embed_texts(method, texts: Sequence[str], batch_size: int = 32, device: str = "auto") -> torch.Tensor:
    """Normalised text embeddings, in batches."""
    from .encoder import resolve_device

    dev = resolve_device(device)
    method.eval().to(dev)
    step = max(1, int(batch_size))
    out = [F.normalize(method.encode_text(list(texts[i : i + step])).float(), dim=1).cpu() for i in range(0, len(texts), step)]
    return torch.cat(out)


def evaluate_retrieval(
    method, rows, preprocess_cfg: dict, batch_size: int = 32, device: str = "auto", levels: Sequence[str] = LEVELS,
    ks: Sequence[int] = KS, case_by: str = "study",
) -> dict[str, Any]:
    """Retrieval on ``rows`` (:class:`~medrep.data.datasets.image_text.ImageTextRow`, one split) at each level.

    ``case_by``: ``study`` (a row is a case) or ``patient`` (rows of one patient form a case, falling
    back to the study where a row has none).
    """
    from ..data.io.reports import clean_text

    check_vlp(method)
    rows = list(rows)
    if not rows:
        raise MedrepError("no image-text rows to evaluate", "--split")
    if not levels or any(lv not in LEVELS for lv in levels):
        raise MedrepError(f"levels must be among {', '.join(LEVELS)}, got {list(levels)}", "--level")
    if case_by not in ("study", "patient"):
        raise MedrepError(f"must be study or patient, got {case_by!r}", "case_by")
    image_emb, image_row = embed_images(method, rows, preprocess_cfg, batch_size, device)
    texts, row_text = index_of([clean_text(r.report, r.source) for r in rows])
    text_emb = embed_texts(method, texts, batch_size, device)
    out: dict[str, Any] = {"n_rows": len(rows), "n_images": len(image_emb), "n_distinct_texts": len(texts), "case_by": case_by}
    if "image" in levels:
        out["image"] = retrieval_scores(image_emb, text_emb, row_text[image_row], ks)
    if "case" in levels:
        cases, row_case = index_of([(r.patient or r.study) if case_by == "patient" else r.study for r in rows])
        text_sets = [set() for _ in cases]
        for case, text in zip(row_case, row_text):
            text_sets[case].add(int(text))
        keys, case_key = index_of([tuple(sorted(s)) for s in text_sets])
        key_emb = torch.stack([F.normalize(text_emb[list(k)].mean(0), dim=0) for k in keys])
        out["case"] = retrieval_scores(pool(image_emb, row_case[image_row], len(cases)), key_emb, case_key, ks)
    return out


def run_data_config(run_dir: str | Path, size: Sequence[int] | None = None, source: str | None = None) -> dict[str, Any]:
    """The run's recipe ``data`` section (how images were prepared in pretraining), with
    ``spatial_dims`` resolved from the model; ``size`` overrides the resize (one value for every axis).
    A run on a ``mixed`` source gives the part read from ``source`` (e.g. ``medpix2``), else its first
    part: the preprocessing of the images the evaluation reads."""
    from ..data.sources.mixed import mixed_parts
    from ..recipe import load_recipe

    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        raise MedrepError(f"not a run folder (no recipe.yaml in {run_dir})", "--run")
    recipe = load_recipe(path)
    data = dict(recipe["data"])
    if data["source"] == "mixed":
        parts = [section for _, _, section in mixed_parts(data, expand=True)]
        data = dict(next((p for p in parts if p["source"] == source), parts[0]))
    data["spatial_dims"] = data.get("spatial_dims") or recipe["model"].get("spatial_dims", 2)
    if size is not None:
        dims = int(data["spatial_dims"])
        if len(size) not in (1, dims) or min(size) < 1:
            raise MedrepError(f"give one positive size or {dims} (one per axis), got {list(size)}", "--size")
        data["size"] = list(size) * dims if len(size) == 1 else list(size)
    return data
