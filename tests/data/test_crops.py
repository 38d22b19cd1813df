"""Physical-space crops: centres in mm (affine, anisotropic, resampled), bounds, batching, bad inputs."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch

from medrep.data import (
    CropDataset,
    CropSpec,
    FolderDataset,
    Preprocess,
    build_dataset,
    collate,
    index_to_world,
    read_image,
    read_nifti,
    sample_crops,
    world_of,
)
from medrep.data.synthetic import write_dicom, write_nifti, write_png
from medrep.errors import DataError, RecipeError
from medrep.recipe import DEFAULTS, check_crops, load_recipe

SPACING = (0.5, 1.0, 2.0)


def oblique_affine(spacing=SPACING, origin=(-31.0, 12.5, 40.0)) -> np.ndarray:
    """A rotated, translated, anisotropic index -> mm affine (rotation about two axes)."""
    a, b = math.radians(20), math.radians(-35)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def write_affine_nifti(path, array, affine):
    img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


def folder_cfg(path, **crops) -> dict:
    return {**DEFAULTS["data"], "source": "folder", "path": str(path), "spatial_dims": 3, "intensity": "none",
            "crops": {"k": 4, "size": 8, **crops}}


# ---------------------------------------------------------------- centres in mm


def test_voxel_crop_centre_is_affine_of_its_centre_index(tmp_path):
    """Values are flat indices, so a crop's first voxel says where it was cut from."""
    shape = (20, 18, 12)
    affine = oblique_affine()
    path = write_affine_nifti(tmp_path / "v.nii.gz", np.arange(np.prod(shape)).reshape(shape), affine)
    sample = read_nifti(path)
    assert torch.allclose(sample["spacing"], torch.tensor(SPACING))
    ds = CropDataset(FolderDataset(tmp_path, spatial_dims=3), k=6, size=(5, 4, 3), seed=1)
    item = ds[0]
    assert item["image"].shape == (6, 1, 5, 4, 3) and item["coords"].dtype == torch.float32
    for crop, coords in zip(item["image"], item["coords"]):
        start = np.array(np.unravel_index(int(crop[0, 0, 0, 0]), shape))
        ref = sample["image"][0, start[0]:start[0] + 5, start[1]:start[1] + 4, start[2]:start[2] + 3]
        assert torch.equal(crop[0], ref)
        centre = start + (np.array([5, 4, 3]) - 1) / 2
        want = affine[:3, :3] @ centre + affine[:3, 3]
        np.testing.assert_allclose(coords.numpy(), want, atol=1e-4)
    assert torch.allclose(item["spacing"], torch.tensor(SPACING).expand(6, 3))
    assert item["group"].tolist() == [0] * 6


@pytest.mark.parametrize("oblique", [False, True])
def test_physical_crops_are_resampled_around_their_recorded_centre(tmp_path, oblique):
    """Three volumes hold the world x, y and z (mm) of each voxel; drawn with one seed, the crops
    coincide, and (interpolation being exact on linear functions) each crop's mean is the world
    position of its centre, and its extent along each crop axis is crop_mm."""
    shape = (40, 30, 16)
    affine = oblique_affine() if oblique else np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-31.0, 12.5, 40.0)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    crop_mm, size = (10.0, 12.0, 16.0), (5, 6, 8)  # 20 x 12 x 8 input voxels, >= 1 per output voxel
    items = []
    for axis in range(3):
        folder = tmp_path / f"a{axis}"
        folder.mkdir()
        write_affine_nifti(folder / "w.nii.gz", world[..., axis], affine)
        items.append(CropDataset(FolderDataset(folder, spatial_dims=3), k=5, size=size, crop_mm=crop_mm, seed=3)[0])
    coords = items[0]["coords"]
    for item in items[1:]:
        assert torch.equal(item["coords"], coords)
    means = torch.stack([it["image"].mean(dim=(1, 2, 3, 4)) for it in items], dim=1)
    torch.testing.assert_close(means, coords, atol=2e-3, rtol=0)
    assert torch.allclose(items[0]["spacing"][0], torch.tensor(crop_mm) / torch.tensor(size))
    for d, (mm, s) in enumerate(zip(crop_mm, size)):
        first = [it["image"][0, 0].select(d, 0).mean() for it in items]
        last = [it["image"][0, 0].select(d, s - 1).mean() for it in items]
        span = torch.stack(last) - torch.stack(first)  # world vector from the first to the last output voxel
        assert span.norm().item() == pytest.approx(mm * (s - 1) / s, abs=1e-3)


def test_2d_dicom_coordinates_keep_in_plane_distances(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", np.zeros((30, 40), np.uint16), pixel_spacing=(0.7, 0.8),
                       orientation=(0.6, 0.8, 0, 0, 0, 1), position=(5.0, -3.0, 7.0))
    sample = read_image(path, spatial_dims=2)
    affine = np.asarray(sample["meta"]["affine"])
    idx = np.array([[0.0, 0.0], [10.0, 3.0], [29.0, 39.0], [4.5, 17.0]])
    got = world_of(sample, idx)
    want = idx @ affine[:3, :2].T
    for i in range(4):
        for j in range(4):
            assert np.linalg.norm(got[i] - got[j]) == pytest.approx(np.linalg.norm(want[i] - want[j]), abs=1e-9)
    linear, _ = index_to_world(sample)
    assert np.all(np.diag(linear) > 0)


def test_png_coordinates_are_pixels(tmp_path):
    write_png(tmp_path / "a.png", (np.arange(40 * 50).reshape(40, 50) % 251).astype(np.uint8))
    item = CropDataset(FolderDataset(tmp_path, spatial_dims=2), k=3, size=16, seed=0)[0]
    assert item["image"].shape == (3, 1, 16, 16) and item["coords"].shape == (3, 2)
    assert torch.all(item["coords"] >= 7.5) and torch.all(item["coords"] <= torch.tensor([40 - 8.5, 50 - 8.5]))


def test_resize_by_preprocess_is_folded_into_the_affine(tmp_path):
    affine = oblique_affine()
    path = write_affine_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((20, 18, 12)), affine)
    original = read_nifti(path)
    resized = Preprocess(intensity="none", size=(10, 9, 24))(original)
    # the outer edges and the centre of the volume stay where they are
    for old_idx, new_idx in (([-0.5] * 3, [-0.5] * 3), ([19.5, 17.5, 11.5], [9.5, 8.5, 23.5]), ([9.5, 8.5, 5.5], [4.5, 4.0, 11.5])):
        np.testing.assert_allclose(world_of(resized, np.array(new_idx)), world_of(original, np.array(old_idx)), atol=1e-9)


# ---------------------------------------------------------------- bounds, randomness


@pytest.mark.parametrize("crop_mm", [None, (5.0, 8.0, 6.0), (6.0, 14.0, 20.0)])
def test_crops_stay_inside_the_volume(crop_mm):
    shape = np.array([12, 14, 10])
    sample = {"image": torch.rand(1, *shape), "spacing": torch.tensor(SPACING), "meta": {"path": "mem"}}
    size = np.array([4, 6, 5])
    crops = sample_crops(sample, CropSpec(k=400, size=tuple(size), crop_mm=crop_mm), np.random.default_rng(0))
    extent = size if crop_mm is None else np.asarray(crop_mm) / np.asarray(SPACING)
    c = crops.centre_index
    assert np.all(c - extent / 2 >= -0.5 - 1e-9) and np.all(c + extent / 2 <= shape - 0.5 + 1e-9)
    # the whole admissible range is used
    assert np.all(c.min(0) - (extent / 2 - 0.5) < 0.1 * shape) and np.all((shape - 0.5 - extent / 2) - c.max(0) < 0.1 * shape)
    if crop_mm is None:
        assert np.allclose(c - (size - 1) / 2, np.round(c - (size - 1) / 2))


def test_crop_as_large_as_the_volume_is_the_volume():
    sample = {"image": torch.rand(1, 6, 7, 8), "spacing": torch.ones(3), "meta": {}}
    crops = sample_crops(sample, CropSpec(k=2, size=(6, 7, 8)), np.random.default_rng(0))
    assert torch.equal(crops.image[1, 0], sample["image"][0])
    crops = sample_crops(sample, CropSpec(k=2, size=(6, 7, 8), crop_mm=(6.0, 7.0, 8.0)), np.random.default_rng(0))
    torch.testing.assert_close(crops.image[0, 0], sample["image"][0])


def test_seeds(tmp_path):
    write_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    base = FolderDataset(tmp_path, spatial_dims=3)
    a, b = CropDataset(base, k=4, size=5, seed=7), CropDataset(base, k=4, size=5, seed=7)
    first = a[0]["coords"]
    assert torch.equal(first, b[0]["coords"])
    assert not torch.equal(first, a[0]["coords"])  # a fresh draw at every access
    unseeded = CropDataset(base, k=4, size=5)
    torch.manual_seed(0)
    x = unseeded[0]["coords"]
    torch.manual_seed(0)
    assert torch.equal(x, unseeded[0]["coords"])


# ---------------------------------------------------------------- batching


def test_group_and_collate_shapes(tmp_path):
    for i in range(3):
        write_nifti(tmp_path / f"v{i}.nii.gz", np.full((12, 12, 12), i + 1, np.float32), spacing=SPACING)
    ds = build_dataset({**folder_cfg(tmp_path, k=4, size=[6, 5, 4]), "class_folders": False})
    assert isinstance(ds, CropDataset) and len(ds) == 3
    batch = collate([ds[2], ds[0]])
    assert batch["image"].shape == (8, 1, 6, 5, 4)
    assert batch["coords"].shape == (8, 3) and batch["coords"].dtype == torch.float32
    assert batch["group"].tolist() == [2] * 4 + [0] * 4 and batch["group"].dtype == torch.int64
    assert batch["spacing"].shape == (8, 3)
    assert len(batch["meta"]) == 2 and batch["meta"][0]["index"] == 2
    assert batch["image"][:4].eq(3).all() and batch["image"][4:].eq(1).all()


def test_labels_are_repeated_per_crop(tmp_path):
    for cls in ("a", "b"):
        write_png(tmp_path / cls / "x.png", np.full((20, 20), 200, np.uint8))
    cfg = {**DEFAULTS["data"], "source": "folder", "path": str(tmp_path), "spatial_dims": 2, "class_folders": True,
           "crops": {"k": 3, "size": 8}}
    batch = collate([build_dataset(cfg)[i] for i in (0, 1)])
    assert batch["label"].tolist() == [0, 0, 0, 1, 1, 1]


def test_plain_batches_are_unchanged():
    s = {"image": torch.zeros(1, 4, 4), "spacing": torch.ones(2), "meta": {}}
    assert collate([s, s])["image"].shape == (2, 1, 4, 4)


# ---------------------------------------------------------------- caches


@pytest.mark.parametrize("cache,dtype", [("memory", "float16"), ("mmap", "float32"), ("mmap", "float16"), (None, "float32")])
def test_caches_give_the_same_crops(tmp_path, cache, dtype):
    write_nifti(tmp_path / "d" / "v.nii.gz", np.random.default_rng(0).random((16, 18, 20)).astype(np.float32))
    ref = CropDataset(FolderDataset(tmp_path / "d", spatial_dims=3), k=3, size=6, crop_mm=7.0, seed=2)[0]
    ds = CropDataset(FolderDataset(tmp_path / "d", spatial_dims=3), k=3, size=6, crop_mm=7.0, seed=2, cache=cache,
                     cache_dtype=dtype, cache_dir=tmp_path / "cache")
    item = ds[0]
    assert torch.equal(item["coords"], ref["coords"])
    torch.testing.assert_close(item["image"], ref["image"], atol=1e-3 if dtype == "float16" else 0, rtol=0)
    if cache == "mmap":
        files = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
        assert files == [".json", ".npy"]
        assert isinstance(ds._cache[0]["image"], np.memmap)
        # a second dataset (another process) maps the same file without reading the image again
        base = FolderDataset(tmp_path / "d", spatial_dims=3)
        base._load = None  # any read would fail
        again = CropDataset(base, k=3, size=6, crop_mm=7.0, seed=2, cache="mmap", cache_dtype=dtype, cache_dir=tmp_path / "cache")[0]
        assert torch.equal(again["image"], item["image"])


# ---------------------------------------------------------------- bad input


def raises_naming(where, fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    assert str(where) in str(info.value), f"{where} not named in: {info.value}"
    return info.value


def test_volume_smaller_than_the_crop(tmp_path):
    path = write_nifti(tmp_path / "small.nii.gz", np.ones((10, 12, 9), np.float32), spacing=SPACING)
    ds = build_dataset(folder_cfg(tmp_path, size=[8, 8, 10]))
    err = raises_naming(path, ds.__getitem__, 0)
    assert "[10, 12, 9]" in str(err) and "[8, 8, 10]" in str(err)
    ds = build_dataset(folder_cfg(tmp_path, size=8, crop_mm=12.0))  # 24 voxels of 0.5 mm along axis 0 > 10
    err = raises_naming(path, ds.__getitem__, 0)
    assert "12.0" in str(err) and "[5.0, 12.0, 18.0] mm" in str(err)


def test_no_foreground(tmp_path):
    path = write_nifti(tmp_path / "empty.nii.gz", np.zeros((12, 12, 12), np.float32))
    ds = build_dataset(folder_cfg(tmp_path, min_foreground=0.5, max_tries=5))
    raises_naming(path, ds.__getitem__, 0)


def test_foreground_rule_redraws(tmp_path):
    vol = np.zeros((30, 30, 30), np.float32)
    vol[:10] = 1.0  # a third of the volume is foreground
    write_nifti(tmp_path / "v.nii.gz", vol, spacing=(1, 1, 1))
    ds = build_dataset(folder_cfg(tmp_path, k=50, size=6, min_foreground=0.9))
    item = ds[0]
    assert (item["image"] > 0.1).float().mean(dim=(1, 2, 3, 4)).min() >= 0.9
    assert item["coords"][:, 0].max() <= 6.5  # 1 mm voxels at the origin (x mm = index): all 6 x-slices below 10


def test_2d_file_to_a_3d_recipe(tmp_path):
    path = write_png(tmp_path / "xray.png", np.full((40, 40), 128, np.uint8))
    recipe = load_recipe("isimed_3d_colin27", [f"data.path={tmp_path}"])
    ds = build_dataset(recipe["data"])
    raises_naming(path, ds.__getitem__, 0)
    # a 3D crop size given to a 2D image is refused too, naming the file
    ds = CropDataset(FolderDataset(tmp_path, spatial_dims=2), k=2, size=[8, 8, 8])
    raises_naming(path, ds.__getitem__, 0)


def test_zero_spacing_is_refused_by_the_reader(tmp_path):
    img = nib.Nifti1Image(np.ones((12, 12, 12), np.float32), None)
    img.header["pixdim"][1:4] = (1.0, 0.0, 1.0)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    path = tmp_path / "zero.nii.gz"
    nib.save(img, path)
    ds = build_dataset(folder_cfg(tmp_path))
    err = raises_naming(path, ds.__getitem__, 0)
    assert "positive" in str(err)


def test_skip_bad_leaves_out_and_counts(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz", np.ones((12, 12, 12), np.float32))
    small = write_nifti(tmp_path / "small.nii.gz", np.ones((5, 12, 12), np.float32))
    empty = write_nifti(tmp_path / "empty.nii.gz", np.zeros((12, 12, 12), np.float32))
    flat = write_png(tmp_path / "flat.png", np.full((30, 30), 9, np.uint8))
    cfg = {**folder_cfg(tmp_path, min_foreground=0.5, max_tries=5), "skip_bad": True, "intensity": "none"}
    ds = build_dataset(cfg)
    assert len(ds) == 1 and ds[0]["meta"]["path"] == str(good)
    assert sorted(p for p, _ in ds.skipped) == sorted(map(str, (empty, flat, small)))
    assert ds.base._cache == {}  # the crop dataset holds the only copy


def test_recipe_crops_are_checked():
    recipe = load_recipe("isimed_3d_colin27")
    assert recipe["data"]["crops"]["k"] == 16
    assert load_recipe("simclr_pneumoniamnist")["data"]["crops"] is None
    for override, field in (("data.crops.kk=3", "data.crops.kk"), ("data.crops.k=0", "data.crops.k"),
                            ("data.crops.size=[32, 32]", "data.crops.size"), ("data.crops.min_foreground=2", "data.crops.min_foreground"),
                            ("data.crops.cache=disk", "data.crops.cache"), ("data.crops.crop_mm=-1", "data.crops.crop_mm")):
        with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
            load_recipe("isimed_3d_colin27", [override])
    assert check_crops({"k": 2}, 2)["size"] == 32
    r = load_recipe("simclr_pneumoniamnist", ["data.crops.k=3"])  # crops switched on by an override
    assert r["data"]["crops"]["k"] == 3 and r["data"]["crops"]["cache"] == "memory"
    assert json.loads(json.dumps(recipe))  # plain values, dumpable beside checkpoints
