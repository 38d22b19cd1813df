"""Where a vision-language run looks for each part of a report: attention maps of one image-report pair.

:func:`explain_pair` reads the maps the run's own losses use, nothing re-derived:

- **PLACE** (:mod:`medrep.methods.place`): the report is cut into sentences as in training
  (:func:`~medrep.data.io.reports.split_sentences`, the first ``max_sentences`` kept, the rest
  and any that ``max_length`` truncates away counted as cut), read by one pass of the text tower
  (:class:`~medrep.methods.place.SentenceBatch`) and projected; the image's observations come from
  :meth:`PLACE.observations`. Each sentence is matched to a query by the training rule
  (:func:`medrep.losses.match_observations` with the run's ``match``), and its map is that query's
  cross-attention over the local tokens (last decoder layer, mean over heads), on the encoder's
  token grid (:func:`~medrep.methods.place.token_grid`): non-negative, summing to one. The
  cosines of the sentence with every observation are given too.
- **GLoRIA** (:mod:`medrep.methods.gloria`): the whole cleaned report, as the loss reads it; each
  word's map is its attention over the image's regions from :func:`medrep.losses.gloria_word_attention`,
  the code of :func:`~medrep.losses.gloria_local_loss` (a softmax over the report's words of the
  region-word dot products, then a softmax over regions at ``temp_attention``), so a word's map
  also depends on the other words of the report. Its cosine is the word's cosine with its
  attended region context, the quantity the loss aggregates.

Other methods have neither and are refused, naming ``--run``. 3D encoders give 3D maps; the
figure shows, per panel, the slice along the last axis (NIfTI ``k``) whose token cells hold the
most attention (``slice`` in the result), not a projection.

:func:`plot_explanation` draws one PNG: the image, then one panel per sentence (or word, at most
``max_panels``, default :data:`MAX_PANELS`, in report order; the JSON keeps them all) with its map
upsampled (bilinear; trilinear in 3D) to the image and overlaid, on one colour scale shared by
the panels, in attention per token cell (a uniform map is ``1/N``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MedrepError
from .figures import pyplot, save_figure

#: Most sentence / word panels in one figure (the JSON holds every one).
MAX_PANELS = 16
#: Characters per line of a panel title, and most lines.
TITLE_WIDTH, TITLE_LINES = 36, 4


def explain_kind(method: Any, where: str = "--run") -> str:
    """``"place"`` or ``"gloria"``: the kind of map ``method`` (a method, or its class and
    ``alignment`` read from a recipe: :func:`check_run`) has; anything else is refused, naming ``where``."""
    from ..methods.gloria import GLoRIA
    from ..methods.place import PLACE

    cls = method if isinstance(method, type) else type(method)
    name = getattr(cls, "name", "") or cls.__name__
    if issubclass(cls, PLACE):
        if not isinstance(method, type) and not method.options.alignment:
            raise MedrepError(_NO_ALIGNMENT, where)
        return "place"
    if issubclass(cls, GLoRIA):
        return "gloria"
    raise MedrepError(f"method {name!r} has no observations (PLACE) or word-region attention (GLoRIA) to show; "
                      "explain needs a place or gloria run", where)


_NO_ALIGNMENT = ("this PLACE run was trained with method.alignment: false, so it has no observations to show; "
                 "explain needs a run with the alignment term")


def check_run(run_dir: str | Path, where: str = "--run") -> str:
    """:func:`explain_kind` of a run folder from its ``recipe.yaml`` alone, before any weight is read."""
    from ..methods import get_method
    from ..recipe import load_recipe

    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        raise MedrepError(f"not a run folder (no recipe.yaml in {run_dir})", where)
    section = load_recipe(path)["method"]
    kind = explain_kind(get_method(section["name"]), where)
    if kind == "place" and section.get("alignment", True) is False:
        raise MedrepError(_NO_ALIGNMENT, where)
    return kind


def prepare_image(path: str | Path, preprocess_cfg: dict, where: str = "--image") -> torch.Tensor:
    """One image file (PNG/JPEG, DICOM file or series folder, NIfTI) read and prepared as the run's
    recipe ``data`` section says (:func:`medrep.evaluate.retrieval.run_data_config`): ``(C, *spatial)``."""
    from ..data.datasets.preprocess import Preprocess
    from ..data.io.readers import read_image

    if not Path(path).exists():
        raise MedrepError(f"no such file or folder: {path}", where)
    sample = read_image(path, preprocess_cfg.get("spatial_dims"))
    return Preprocess.from_config(preprocess_cfg)(sample)["image"].float()


def _check_image(image: Any, method: Any) -> torch.Tensor:
    dims = method.encoder.spatial_dims
    if not isinstance(image, torch.Tensor) or image.ndim != dims + 1:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise MedrepError(f"must be one prepared image (C, *spatial) for a {dims}D encoder, got {got}", "image")
    return image.float()


def _slice(grid_map: np.ndarray, depth: int) -> int | None:
    """3D: the image slice (last axis) at the centre of the token layer holding the most attention."""
    if grid_map.ndim != 3:
        return None
    layer = int(grid_map.sum(axis=(0, 1)).argmax())
    return min(depth - 1, int((layer + 0.5) * depth / grid_map.shape[2]))


@torch.no_grad()
def explain_pair(method: Any, image: torch.Tensor, report: str, device: str = "cpu", where: str = "--report") -> dict[str, Any]:
    """Attention maps of a PLACE or GLoRIA ``method`` for one ``image`` ``(C, *spatial)`` (prepared
    like evaluation images, :func:`prepare_image`) and its ``report``; see the module docstring.

    Returns ``method``, ``kind`` (``sentences`` or ``words``), ``spatial``, ``grid`` (the token
    grid), ``global_cosine`` (image and report embeddings), ``items`` (per sentence or word:
    ``text``, ``map`` (a ``grid``-shaped array, non-negative, summing to one), ``cosine``, ``slice``
    (3D) and, for PLACE, ``query`` and ``cosines`` with every observation), and what was cut:
    PLACE ``n_sentences``, ``cut`` (sentence texts) and ``max_sentences``, ``match``; GLoRIA
    ``n_words``, ``words_cut`` (words past ``max_length``) and ``temp_attention``. ``where`` names
    the report in errors (an empty report, no sentence left after cleaning).
    """
    from ..data.io.reports import clean_text
    from ..methods.place import token_grid
    from .encoder import resolve_device

    kind = explain_kind(method)
    image = _check_image(image, method)
    if not isinstance(report, str) or not clean_text(report):
        raise MedrepError("the report is empty", where)
    dev = resolve_device(device)
    method.eval().to(dev)
    x = image[None].to(dev)
    _, local = method.encoder.forward_with_local(x)
    grid = token_grid(tuple(image.shape[1:]), local.shape[1])
    out: dict[str, Any] = {"method": method.name, "kind": "sentences" if kind == "place" else "words",
                           "spatial": list(image.shape[1:]), "grid": list(grid), "report": clean_text(report)}
    img = F.normalize(method.encode_image(x).float(), dim=1)
    txt = F.normalize(method.encode_text([clean_text(report)]).float(), dim=1)
    out["global_cosine"] = float((img * txt).sum())
    items = (_place if kind == "place" else _gloria)(method, local, report, out, where)
    for item in items:
        item["map"] = item["map"].reshape(grid)
        item["slice"] = _slice(item["map"], image.shape[-1])
    out["items"] = items
    return out


def _place(method: Any, local: torch.Tensor, report: str, out: dict, where: str) -> list[dict]:
    from ..data.io.reports import split_sentences
    from ..losses import match_observations
    from ..methods.place import SentenceBatch

    o = method.options
    sentences = split_sentences(report)
    if not sentences:
        raise MedrepError("no sentence left after cleaning (PLACE explains a report sentence by sentence)", where)
    batch = SentenceBatch(method.text_encoder, [sentences], ["report"], o.max_sentences)
    text = method.text_encoder(batch.tokens)
    vectors = method.sentence_vectors(batch, text["tokens"])  # (1, S, D)
    mask = batch.mask.to(vectors.device)
    observations, attention = method.observations(local)  # (1, Q, D), (1, Q, N)
    index = match_observations(vectors, mask, observations, o.match)[0]
    cosines = (F.normalize(vectors.float(), dim=-1) @ F.normalize(observations.float(), dim=-1).transpose(1, 2))[0]
    kept = sentences[: o.max_sentences]
    shown = [k for k in range(len(kept)) if bool(mask[0, k])]
    if not shown:
        raise MedrepError(f"no sentence has a token left within method.max_length = {o.max_length}", where)
    out.update(n_sentences=len(sentences), max_sentences=o.max_sentences, match=o.match, queries=o.queries,
               cut=[s for k, s in enumerate(sentences) if k >= len(kept) or not bool(mask[0, k])])
    items = []
    for k in shown:
        q = int(index[k])
        items.append({"text": kept[k], "query": q, "cosine": float(cosines[k, q]), "cosines": cosines[k].cpu().numpy(),
                      "map": attention[0, q].float().cpu().numpy()})
    return items


def _gloria(method: Any, local: torch.Tensor, report: str, out: dict, where: str) -> list[dict]:
    from ..data.io.reports import clean_text
    from ..losses import gloria_word_attention
    from ..methods.gloria import text_features

    encoder, o = method.text_encoder, method.options
    text = clean_text(report)
    full = encoder.tokenizer(text, truncation=False)
    n_words = len({w for w in full.word_ids() if w is not None})
    feats = text_features(encoder, [text])
    spans = encoder.word_spans([text])[0]
    attention, cosine = gloria_word_attention(method.word_projector(feats["words"]), feats["word_mask"],
                                              method.region_projector(local), o.temp_attention)
    out.update(n_words=n_words, words_cut=n_words - len(spans), temp_attention=o.temp_attention)
    return [{"text": span.text, "cosine": float(cosine[0, w]), "map": attention[0, w].float().cpu().numpy()}
            for w, span in enumerate(spans)]


# ---------------------------------------------------------------- the figure



def _title(head: str, text: str) -> str:
    lines = textwrap.wrap(text, TITLE_WIDTH) or [""]
    if len(lines) > TITLE_LINES:
        lines = lines[:TITLE_LINES]
        lines[-1] = lines[-1][: TITLE_WIDTH - 1] + "\u2026"
    return "\n".join([head, *lines])


def upsample(grid_map: np.ndarray, spatial: Sequence[int]) -> np.ndarray:
    """A token-grid map brought to the image size: bilinear in 2D, trilinear in 3D (align_corners False)."""
    t = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))[None, None]
    mode = "bilinear" if t.ndim == 4 else "trilinear"
    return F.interpolate(t, size=tuple(int(s) for s in spatial), mode=mode, align_corners=False)[0, 0].numpy()


def plot_explanation(path: str | Path, image: torch.Tensor | np.ndarray, result: dict, max_panels: int = MAX_PANELS) -> Path:
    """One PNG: the image, then each sentence's (or word's) map over it, titled with its text; see the module docstring."""
    if isinstance(max_panels, bool) or not isinstance(max_panels, int) or max_panels < 1:
        raise MedrepError(f"must be a positive integer, got {max_panels!r}", "--max-panels")
    plt = pyplot()
    volume = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32).mean(0)
    items = result["items"][:max_panels]
    maps = [upsample(item["map"], volume.shape) for item in items]
    vmax = max([float(m.max()) for m in maps] + [1e-12])
    n = len(items) + 1
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 0.8, 3.9 * rows + 0.4), dpi=110, squeeze=False,
                             layout="constrained")
    try:
        for ax in axes.flat:
            ax.axis("off")
        middle = volume.shape[-1] // 2 if volume.ndim == 3 else None
        axes.flat[0].imshow(volume if middle is None else volume[..., middle], cmap="gray")
        axes.flat[0].set_title("image" + ("" if middle is None else f" (slice {middle})"), fontsize=8)
        heat = None
        for ax, item, up in zip(list(axes.flat)[1:], items, maps):
            s = item.get("slice")
            base, over = (volume, up) if s is None else (volume[..., s], up[..., s])
            ax.imshow(base, cmap="gray")
            heat = ax.imshow(over, cmap="jet", alpha=0.45, vmin=0.0, vmax=vmax, interpolation="nearest")
            head = (f"query {item['query']}  cos {item['cosine']:.2f}" if "query" in item else f"cos {item['cosine']:.2f}")
            ax.set_title(_title(head + ("" if s is None else f"  slice {s}"), item["text"]), fontsize=7, loc="left")
        fig.suptitle("\n".join(textwrap.wrap(_caption(result, len(items)), 40 * cols)), fontsize=8)
        if heat is not None:
            fig.colorbar(heat, ax=list(axes.flat), fraction=0.02, pad=0.01,
                         label=f"attention per token cell (uniform = 1/{math.prod(result['grid'])})")
        path = save_figure(fig, path)
    finally:
        plt.close(fig)
    return path


def _caption(result: dict, shown: int) -> str:
    grid = "x".join(map(str, result["grid"]))
    if result["kind"] == "sentences":
        cut = len(result["cut"])
        return (f"{result['method']}: each sentence's query (match {result['match']}) and its attention over the {grid} "
                f"token grid; image-report cosine {result['global_cosine']:.2f}"
                + (f"; {cut} of {result['n_sentences']} sentences cut (max_sentences {result['max_sentences']}, "
                   "or past max_length)" if cut else ""))
    total = len(result["items"])
    return (f"{result['method']}: each word's attention over the {grid} regions (temp_attention {result['temp_attention']:g}); "
            f"image-report cosine {result['global_cosine']:.2f}" + (f"; first {shown} of {total} words shown" if shown < total else "")
            + (f"; {result['words_cut']} words past max_length" if result["words_cut"] else ""))
