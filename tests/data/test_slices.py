"""Slice sets (medrep.data.slices): the registry, scaling/slicing/resizing, errors, user data.

Registry logic runs on tiny trees written in each source's own layout under a temporary
``$MEDREP_DATA`` (the sources' ``example`` writers); real-data tests need ``$MEDREP_DATA`` and
skip a set whose optional package (pydicom-data, nilearn, mricron-data) is not installed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from medrep.data.slices import get_slice_set, load_slices, mricron, slice_set_names, slice_sets, user_slice_set
from medrep.data.slices.prepare import labels_on_grid, spread, square_resize, volume_slices
from medrep.data.sources.colin27_lobes import colin27_example
from medrep.data.sources.folder import folder_example
from medrep.data.sources.manifest import manifest_example
from medrep.data.sources.medmnist import medmnist_example, write_example_npz
from medrep.data.sources.medpix2 import write_example_tree
from medrep.data.synthetic import write_dicom, write_nifti, write_png
from medrep.errors import DataError

SHARED_SETS = ("pneumoniamnist", "medpix-ct", "medpix-mr", "colin27-aal", "head-ct", "cxr-samples")


def _head_ct(path: Path, fill: float | None = None) -> Path:
    """A 24x22x10 'head': air around an ellipse of soft tissue (40 HU) in a bone shell (1000 HU)."""
    z, y, x = np.meshgrid(np.arange(24), np.arange(22), np.arange(10), indexing="ij")
    r = ((z - 11.5) / 9) ** 2 + ((y - 10.5) / 8) ** 2
    hu = np.where(r < 0.7, 40, np.where(r < 1.0, 1000, -1000)).astype(np.int16)
    return write_nifti(path, np.full_like(hu, fill) if fill is not None else hu, (1.0, 1.0, 2.0))


@pytest.fixture
def tiny_shared(tmp_path, monkeypatch) -> Path:
    """A $MEDREP_DATA in the real folder's layout, with a few tiny files per data set."""
    root = tmp_path / "shared"
    write_example_npz(root / "medmnist" / "pneumoniamnist.npz", 8, 28)
    write_example_tree(root / "medpix2", (2, 1), 2)
    colin27_example(root / "volumes")
    _head_ct(root / "volumes" / "head_ct.nii.gz")
    rng = np.random.default_rng(0)
    for name in ("00000001_000.png", "00027426_000.png"):
        write_png(root / "cxr_samples" / name, rng.integers(30, 220, (40, 36)).astype(np.uint8))
    write_dicom(root / "cxr_samples" / "siim_sample.dcm", rng.integers(0, 4000, (48, 40)).astype(np.uint16), modality="CR")
    monkeypatch.setenv("MEDREP_DATA", str(root))
    return root


def _check(slices, name: str, modality: str, size: int, masked: bool) -> None:
    assert slices, name
    for s in slices:
        assert s.image.shape == (size, size) and s.image.dtype == np.float32, s.id
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0 and s.image.max() > 0, s.id
        assert s.source == name and s.modality == modality and s.id
        if masked:
            assert s.mask is not None and s.mask.shape == (size, size) and s.mask.dtype == np.int64 and s.mask.any(), s.id
        else:
            assert s.mask is None


def test_registry_lists_enough_sets_and_modalities():
    rows = {r["name"]: r for r in slice_sets()}
    assert len(rows) >= 10 and {"XR", "CT", "MR", "US"} <= {r["modality"] for r in rows.values()}
    for row in rows.values():
        assert row["available"] in ("yes", "no") and (row["available"] == "yes" or row["reason"])
    assert rows["head-ct"]["masks"] == "derived" and rows["colin27-aal"]["masks"] == "labels"


def test_unknown_name_suggests_close_ones():
    with pytest.raises(DataError, match="did you mean head-ct"):
        get_slice_set("head_ct")
    with pytest.raises(DataError, match="unknown slice set 'zzz'"):
        load_slices("zzz")


@pytest.mark.parametrize("name", SHARED_SETS)
def test_shared_sets_from_tiny_trees(tiny_shared, name):
    s = get_slice_set(name)
    assert s.available() == (True, "")
    first = s.load(6, 32, np.random.default_rng(1))
    _check(first, name, s.modality, 32, s.masks is not None)
    assert len(first) <= 6
    again = s.load(6, 32, np.random.default_rng(1))
    assert [a.id for a in first] == [b.id for b in again]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again))


def test_head_ct_derived_masks_follow_hu(tiny_shared):
    slices = load_slices("head-ct", 9, 24)
    assert {int(v) for s in slices for v in np.unique(s.mask)} == {0, 1, 2}
    for s in slices:  # in the window bone (2) is brightest, air (0) darkest (resizing blurs the thin shell)
        assert s.image[s.mask == 2].mean() > s.image[s.mask == 1].mean() > s.image[s.mask == 0].mean()


def test_unavailable_set_says_how_to_get_it(monkeypatch):
    monkeypatch.delenv("MEDREP_DATA", raising=False)
    ok, reason = get_slice_set("medpix-ct").available()
    assert not ok and "MEDREP_DATA" in reason
    with pytest.raises(DataError, match="slice set medpix-ct.*not available"):
        load_slices("medpix-ct")


def test_corrupt_file_names_file_and_set(tiny_shared):
    t1 = tiny_shared / "volumes" / "colin27_t1.nii.gz"
    t1.write_bytes(gzip.compress(t1.read_bytes()[:200]))
    with pytest.raises(DataError, match=r"colin27_t1\.nii\.gz.*slice set colin27-aal") as info:
        load_slices("colin27-aal")
    assert info.value.where == str(t1)


def test_no_usable_image_counts_what_was_skipped(tiny_shared):
    _head_ct(tiny_shared / "volumes" / "head_ct.nii.gz", fill=-1000)  # air only
    with pytest.raises(DataError, match=r"slice set head-ct: no usable image \(\d+ empty slice\)"):
        load_slices("head-ct", 6)


def test_mricron_labels_resampled_onto_a_finer_grid(tmp_path, monkeypatch):
    """ch2better is on a 0.5 mm grid, the Brodmann atlas on 1 mm: labels follow world coordinates."""
    labels = np.zeros((10, 12, 8), np.uint8)
    labels[2:8, 3:9, 2:6] = 4
    image = np.zeros((20, 24, 16), np.float32)
    image[4:16, 6:18, 4:12] = 100  # the same box at 0.5 mm
    write_nifti(tmp_path / "ch2better.nii.gz", image + np.random.default_rng(0).normal(0, 1, image.shape).astype(np.float32),
                (0.5, 0.5, 0.5), origin=(-0.25, -0.25, -0.25))
    write_nifti(tmp_path / "brodmann.nii.gz", labels, (1.0, 1.0, 1.0))
    monkeypatch.setattr(mricron, "TEMPLATES", tmp_path)
    slices = load_slices("mricron-ch2better", 6, 16)
    _check(slices, "mricron-ch2better", "MR", 16, True)
    for s in slices:
        assert s.image[s.mask == 4].mean() > 0.8 and s.image[s.mask == 0].mean() < 0.3
    monkeypatch.setattr(mricron, "TEMPLATES", tmp_path / "nowhere")
    assert "apt-get install mricron-data" in get_slice_set("mricron-inia19").available()[1]


def test_labels_on_grid_is_nearest_in_world():
    labels = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    same = labels_on_grid(labels, np.eye(4), np.eye(4), labels.shape, "x")
    assert np.array_equal(same, labels)
    half = np.diag([0.5, 0.5, 0.5, 1.0])
    fine = labels_on_grid(labels, np.eye(4), half, (8, 10, 12), "x")
    assert fine[6, 4, 2] == labels[3, 2, 1]
    shifted = np.eye(4)
    shifted[0, 3] = -1.0  # the image starts one voxel before the atlas: its first plane lies outside
    assert not labels_on_grid(labels, np.eye(4), shifted, labels.shape, "x")[0].any()
    rotated = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    with pytest.raises(DataError, match="axis-aligned"):
        labels_on_grid(labels, rotated, np.eye(4), labels.shape, "x")


def test_square_resize_pads_and_keeps_labels():
    image = np.ones((10, 40), np.float32)
    mask = np.zeros((10, 40), np.int64)
    mask[:, 20:] = 7
    out, m = square_resize(image, mask, 20)
    assert out.shape == m.shape == (20, 20) and m.dtype == np.int64
    assert set(np.unique(m)) <= {0, 7}
    assert out[:6].max() < 0.05 and out[10].min() > 0.95  # padded rows are black, the image sits in the middle


def test_volume_slices_spread_and_skip():
    vol = np.zeros((20, 20, 20), np.float32)
    vol[5:15, 5:15, 5:15] = 1.0
    from collections import Counter

    skipped = Counter()
    slices = volume_slices(vol, None, 6, (0, 1, 2), 16, "t", "v", "MR", skipped, view=False)
    assert len(slices) == 6 and not skipped
    assert spread(5, 14, 2) == [8, 11] and spread(0, 1, 3) == [0, 1]
    mask = np.zeros(vol.shape, np.int64)
    mask[9:11, 5:15, 5:15] = 1  # labels in two sagittal planes only
    skipped = Counter()
    volume_slices(vol, mask, 6, (1,), 16, "t", "v", "MR", skipped, view=False)
    assert not skipped  # slices lie inside the labels' box
    volume_slices(np.zeros_like(vol), None, 4, (0,), 16, "t", "v", "MR", skipped, view=False)
    assert skipped["empty slice"] == 4


@pytest.mark.parametrize("example", [folder_example, manifest_example, medmnist_example])
def test_user_data_through_the_sources(tmp_path, example):
    data = example(tmp_path / "d")
    user = user_slice_set(data["path"], modality="XR")
    slices = user.load(5, 24, np.random.default_rng(0))
    _check(slices, "user", "XR", 24, masked=False)
    assert len(slices) == 5


def test_user_volumes_give_slices_and_missing_paths_are_named(tmp_path):
    data = folder_example(tmp_path / "vol", spatial_dims=3)
    slices = user_slice_set(data["path"]).load(24, 16)  # 8 volumes: 3 slices each, one per axis
    _check(slices, "user", "OT", 16, masked=False)
    assert len(slices) == 24 and sum("axis 2" in s.id for s in slices) == 8
    with pytest.raises(DataError, match="no such file or folder"):
        user_slice_set(tmp_path / "nothing").load(4)


def test_user_corrupt_file_is_named(tmp_path):
    data = folder_example(tmp_path / "d")
    bad = next(Path(data["path"]).rglob("*.png"))
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"slice set user") as info:
        user_slice_set(data["path"]).load(8)
    assert info.value.where == str(bad)


# ------------------------------------------------------------------ real data and optional packages


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED_SETS)
def test_real_shared_sets(real_data, name):
    s = get_slice_set(name)
    if not s.available()[0]:
        pytest.skip(s.available()[1])
    slices = s.load(12, 64, np.random.default_rng(0))
    _check(slices, name, s.modality, 64, s.masks is not None)
    assert len(slices) >= min(3, 12)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in slice_set_names() if n not in SHARED_SETS])
def test_registry_sets_from_packages(name):
    """pydicom-data, nilearn and mricron-data sets: skipped cleanly where the package is not installed."""
    s = get_slice_set(name)
    ok, reason = s.available()
    if not ok:
        pytest.skip(reason)
    slices = s.load(8, 64, np.random.default_rng(0))
    _check(slices, name, s.modality, 64, s.masks is not None)
