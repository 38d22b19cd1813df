"""Region probe on a labelled volume: does a frozen encoder know *where in the anatomy* a crop is?

Crops are cut on a regular grid of centres from one volume with a voxel label map on the same
grid (Colin27 T1 + the AAL atlas), each labelled by the atlas label at its centre, and a linear
and a kNN probe are fitted on one set of crops and scored on another.

Decisions (documented here because they shape the numbers):

- **Grouping.** By default the 116 AAL labels are grouped by name into seven large regions
  (:data:`AAL_GROUPS`): frontal (incl. precentral, Rolandic operculum, SMA, olfactory, gyrus
  rectus, paracentral lobule), parietal (postcentral, superior/inferior parietal, supramarginal,
  angular, precuneus), temporal (Heschl, superior/middle/inferior temporal and poles, fusiform),
  occipital (calcarine, cuneus, lingual, occipital), limbic (insula, cingulum, hippocampus,
  parahippocampal, amygdala), subcortical (caudate, putamen, pallidum, thalamus) and cerebellum
  (hemispheres and vermis). Left and right are merged. A name no rule matches is an error, never
  silently dropped. ``fine=True`` keeps the raw AAL labels instead.
- **Split.** Train and test crops come from alternating slabs along ``slab_axis`` (train, test,
  train, ...), tiled over the labelled extent. A crop is kept only when it lies wholly inside its
  own slab (shrunk by ``gap``), so no test crop shares a voxel with any train crop and crops of
  the two splits are at least ``gap`` voxels apart along that axis (default 0 for 3D crops; for
  2D slice patches with the slab axis across the slices, a crop size minus one, so that train and
  test slices are a crop size apart); :func:`check_disjoint` asserts this on every run (both in
  :mod:`medrep.data.datasets.slabs`, shared with the ``colin27-regions`` image-text crops).
  Alternating slabs, not halves, so that most regions (the cerebellum lies only at the bottom)
  occur in both splits; a small deep region can still fall in one split only (on Colin27 with
  32-voxel axial slabs the subcortical nuclei lie in test slabs): such classes are dropped and
  reported, and ``slab_axis=0`` (alternating left-right slabs) or a smaller crop avoids it.
- **Crops.** ``crop`` voxels per axis (default 32, 32 mm on Colin27) for a 3D encoder; for a 2D
  encoder, ``crop x crop`` patches of single slices perpendicular to ``slice_axis`` (axial for a
  RAS volume). Centres lie on a grid of step ``stride`` over the bounding box of the label map;
  a centre on label 0 (background) is skipped and counted. The volume is padded with its minimum
  (after intensity scaling) so a crop at the edge is still full size.
- **Intensity.** The encoder's training preprocessing (``encoder.preprocess``: minmax,
  percentile or ct_window) is applied to the *whole volume* once, as in pretraining, then crops
  are cut; a per-crop rescaling would erase the absolute intensity that tells tissues apart.
  ``preprocess.size`` (a whole-image size) is not applied: crops are fed at their own size.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datasets.slabs import check_disjoint, slab_centres
from ..data.io.atlas import AAL_GROUPS as AAL_GROUPS  # re-exported: the region probe's grouping
from ..data.io.atlas import GROUPS, group_labels, read_label_names
from ..data.io.atlas import group_of as group_of
from ..errors import MedrepError
from .crops import CentredCrops, check_encoder_input, crop_shape_for, encode_crops, scale_volume
from .encoder import resolve_encoder
from .knn import knn_probe
from .linear import linear_probe
from .report import format_table, probe_rows, write_json

# ----------------------------------------------------------------------------------------------
# the probe


def _load_pair(volume_path, labels_path) -> tuple[dict, np.ndarray]:
    from ..data import read_image

    sample = read_image(volume_path)
    lab = read_image(labels_path)
    if tuple(lab["image"].shape) != tuple(sample["image"].shape):
        raise MedrepError(f"label map of shape {tuple(lab['image'].shape[1:])} is not on the volume's grid "
                          f"{tuple(sample['image'].shape[1:])}", labels_path)
    a1, a2 = sample["meta"].get("affine"), lab["meta"].get("affine")
    if a1 is not None and a2 is not None and not np.allclose(a1, a2, atol=1e-3):
        raise MedrepError("label map and volume have different affines (not the same grid)", labels_path)
    labels = lab["image"][0].numpy()
    if not np.all(labels == np.round(labels)) or labels.min() < 0:
        raise MedrepError("label map must hold non-negative integer labels", labels_path)
    return sample, labels.astype(np.int64)


@dataclass
class RegionSplit:
    """Labelled crop centres of a volume, train and test from disjoint slabs (see :func:`region_split`)."""

    image: torch.Tensor  # (1, *spatial), unscaled
    centres: dict[str, np.ndarray]  # "train" / "test": (N, dims) voxel indices
    labels: dict[str, np.ndarray]  # class index per centre
    class_names: list[str]
    crop_shape: tuple[int, ...]
    spatial_dims: int
    groups: dict[str, list[str]] | None
    slab_info: dict[str, Any]
    counts: dict[str, Any]
    class_counts: dict[str, dict[str, int]]
    dropped: dict[str, dict[str, int]]

    def crops(self, part: str, volume: np.ndarray | None = None) -> CentredCrops:
        """The ``part`` crops of ``volume`` (default: the unscaled image) with their labels."""
        vol = self.image[0].numpy() if volume is None else volume
        return CentredCrops(vol, self.centres[part], self.crop_shape, self.labels[part], squeeze=len(self.crop_shape) != self.spatial_dims)


def region_split(
    volume: str | Path,
    labels: str | Path,
    label_names: str | Path | None = None,
    crop: int = 32,
    stride: int | Sequence[int] = 16,
    slab_axis: int = 2,
    slab_width: int | None = None,
    gap: int | None = None,
    slice_axis: int = 2,
    fine: bool = False,
    min_count: int = 1,
    spatial_dims: int | None = None,
) -> RegionSplit:
    """The crops :func:`region_probe` scores, for an encoder of ``spatial_dims`` (default: the
    volume's): a grid of centres, labelled by the region under the centre (background centres
    skipped), split into train and test slabs along ``slab_axis`` with a gap so that no train crop
    overlaps a test crop. Also what a supervised reference trains on."""
    if not fine and label_names is None:
        raise MedrepError("grouping labels into regions needs the label names file (or use fine labels)", "--label-names")
    sample, label_map = _load_pair(volume, labels)
    vol_dims = sample["image"].ndim - 1
    enc_dims = int(spatial_dims or vol_dims)
    crop_shape = crop_shape_for(vol_dims, enc_dims, crop, slice_axis)
    names = read_label_names(label_names) if label_names is not None else {}
    present = sorted(int(v) for v in np.unique(label_map) if v != 0)
    if names:
        unknown = [v for v in present if v not in names]
        if unknown:
            raise MedrepError(f"label values {unknown[:10]} are not in the names file {label_names}", labels)
    if fine:
        class_names = [names.get(v, str(v)) for v in present]
        lut = {v: i for i, v in enumerate(present)}
        groups = None
    else:
        grouping = group_labels(names)
        class_names = list(GROUPS)
        lut = {v: GROUPS.index(grouping[v]) for v in present}
        groups = {g: [names[i] for i in sorted(names) if grouping[i] == g] for g in GROUPS}
    lut_arr = np.full(int(label_map.max()) + 1, -1, dtype=np.int64)
    for v, c in lut.items():
        lut_arr[v] = c

    train_c, test_c, slab_info = slab_centres(label_map > 0, crop_shape, stride, slab_axis, slab_width, gap)
    counts: dict[str, Any] = {"grid_centres": int(len(train_c) + len(test_c))}
    split_c, split_y = {}, {}
    for name, cs in (("train", train_c), ("test", test_c)):
        lab = label_map[tuple(cs.T)]
        keep = lab > 0
        counts[f"background_skipped_{name}"] = int((~keep).sum())
        split_c[name], split_y[name] = cs[keep], lut_arr[lab[keep]]
    counts["background_skipped"] = counts["background_skipped_train"] + counts["background_skipped_test"]
    check_disjoint(split_c["train"], split_c["test"], crop_shape, slab_axis, slab_info["gap"])

    tr_counts = Counter(split_y["train"].tolist())
    dropped = {class_names[c]: {"train": int(tr_counts[c]), "test": int((split_y["test"] == c).sum())}
               for c in sorted(set(tr_counts) | set(split_y["test"].tolist())) if tr_counts[c] < max(1, int(min_count))}
    drop_ids = [class_names.index(n) for n in dropped]
    for name in ("train", "test"):
        keep = ~np.isin(split_y[name], drop_ids)
        split_c[name], split_y[name] = split_c[name][keep], split_y[name][keep]
    class_counts = {class_names[c]: {"train": int((split_y["train"] == c).sum()), "test": int((split_y["test"] == c).sum())}
                    for c in range(len(class_names)) if (split_y["train"] == c).any() or (split_y["test"] == c).any()}
    counts.update(train=int(len(split_y["train"])), test=int(len(split_y["test"])))
    if len(np.unique(split_y["train"])) < 2 or len(np.unique(split_y["test"])) < 2:
        raise MedrepError(f"need at least 2 classes in each split, have {class_counts}; use a smaller --stride or --crop", "regions")

    return RegionSplit(sample["image"], split_c, split_y, class_names, crop_shape, enc_dims, groups, slab_info, counts,
                       class_counts, dropped)


def region_probe(
    encoder,
    volume: str | Path,
    labels: str | Path,
    label_names: str | Path | None = None,
    fractions: Sequence[float] = (0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    k: int = 20,
    random_init: bool = False,
    intensity: dict[str, Any] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    out: str | Path | None = None,
    progress: bool = True,
    **split_options: Any,
) -> dict[str, Any]:
    """Region probe of a frozen ``encoder`` (an nn.Module, or an exported encoder path loaded with
    ``random_init`` choosing random weights) on ``volume`` with label map ``labels``.

    ``split_options`` (crop, stride, slab_axis, slab_width, gap, slice_axis, fine, min_count) choose
    the crops, as in :func:`region_split`. ``label_names`` is needed for the grouping (default) and
    names the fine labels; without it and with ``fine=True`` the classes are the label ids.
    Classes with fewer than ``min_count`` train crops are dropped from both splits, and test crops
    of classes absent from training are dropped; both are counted in the result. Returns the result dict (and writes it to ``out``).
    """
    model, enc_name = resolve_encoder(encoder, random_init)
    split = region_split(volume, labels, label_names, spatial_dims=getattr(model, "spatial_dims", None), **split_options)
    check_encoder_input(model, split.crop_shape)
    enc_dims, crop_shape, class_names = split.spatial_dims, split.crop_shape, split.class_names
    split_y, counts, class_counts = split.labels, split.counts, split.class_counts
    scaled, used = scale_volume(split.image, getattr(model, "preprocess", None), intensity)
    feats = {name: encode_crops(model, split.crops(name, scaled), batch_size, device, progress) for name in ("train", "test")}
    linear = linear_probe(feats["train"], split_y["train"], feats["test"], split_y["test"], fractions=fractions, seeds=seeds)
    knn = knn_probe(feats["train"], split_y["train"], feats["test"], split_y["test"], k=k)
    label = "random-init" if random_init else "pretrained"
    rows = [{"encoder": label, **r} for r in probe_rows(linear) + probe_rows(knn)]
    table = format_table(rows, ["encoder", "probe", "fraction", "n_train", "auroc", "accuracy"])
    count_rows = [{"class": n, **c} for n, c in class_counts.items()]
    count_table = format_table(count_rows, ["class", "train", "test"])
    result = {
        "task": "regions", "encoder": enc_name, "random_init": random_init, "volume": str(volume), "labels": str(labels),
        "label_names": None if label_names is None else str(label_names),
        "grouping": "fine" if split_options.get("fine") else "lobes",
        "groups": split.groups, "classes": class_names, "crop_shape": list(crop_shape), "spatial_dims": enc_dims,
        "preprocess": used, "split": split.slab_info, "counts": counts, "class_counts": class_counts,
        "dropped_classes": split.dropped, "min_count": int(split_options.get("min_count", 1)),
        "chance_accuracy": _majority(split_y["test"]),
        "results": {"linear": linear, "knn": knn}, "table": table, "count_table": count_table,
    }
    if out:
        write_json(out, result)
    return result


def _majority(y: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent test class (the floor to beat)."""
    return float(np.bincount(y).max() / y.size) if y.size else math.nan
