"""Datasets, preprocessing, collation and build_dataset, on small files written in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medrep.data import (
    FolderDataset,
    ManifestDataset,
    MedMNISTDataset,
    Preprocess,
    build_dataset,
    collate,
    default_medmnist_path,
    read_image,
    read_manifest,
)
from medrep.data.synthetic import write_ct_series, write_medmnist, write_nifti, write_png
from medrep.errors import DataError
from medrep.recipe import DEFAULTS


def _npz(tmp_path, shape=(10, 8, 8), name="m.npz"):
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 10), ("test", 4)):
        images = rng.integers(0, 255, size=(n, *shape[1:]), dtype=np.uint8)
        labels = (np.arange(n) % 2)[:, None].astype(np.uint8)  # (N, 1) as MedMNIST stores class ids
        splits[split] = (images, labels)
    return write_medmnist(tmp_path / name, splits), splits


def test_medmnist_2d(tmp_path):
    path, splits = _npz(tmp_path)
    ds = MedMNISTDataset(path, "test")
    assert len(ds) == 4
    sample = ds[1]
    assert sample["image"].shape == (1, 8, 8) and sample["image"].dtype == torch.float32
    np.testing.assert_array_equal(sample["image"][0].numpy(), splits["test"][0][1])
    assert sample["label"].dtype == torch.int64 and sample["label"].item() == 1
    assert sample["spacing"].tolist() == [1.0, 1.0] and sample["meta"]["spacing_known"] is False


def test_medmnist_multilabel_keeps_every_column(tmp_path):
    labels = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 1], [1, 1, 0]], dtype=np.uint8)  # as ChestMNIST's 14 findings
    images = np.zeros((4, 8, 8), np.uint8)
    path = write_medmnist(tmp_path / "multi.npz", {"train": (images, labels)})
    sample = MedMNISTDataset(path, "train")[2]
    assert sample["label"].tolist() == [0, 1, 1] and sample["label"].dtype == torch.int64
    bad = write_medmnist(tmp_path / "bad.npz", {"train": (images, labels * 2)})
    with pytest.raises(DataError, match="multi-label targets must be 0/1"):
        MedMNISTDataset(bad, "train")


def test_medmnist_rgb_and_3d(tmp_path):
    rgb, _ = _npz(tmp_path, (10, 8, 8, 3), "rgb.npz")
    assert MedMNISTDataset(rgb, "train")[0]["image"].shape == (1, 8, 8)
    assert MedMNISTDataset(rgb, "train", grayscale=False)[0]["image"].shape == (3, 8, 8)
    vol, _ = _npz(tmp_path, (10, 6, 7, 8), "vol.npz")
    sample = MedMNISTDataset(vol, "train")[0]
    assert sample["image"].shape == (1, 6, 7, 8) and sample["spacing"].tolist() == [1.0, 1.0, 1.0]


def test_default_medmnist_path(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDREP_DATA", raising=False)
    packaged = default_medmnist_path()
    assert packaged.name == "pneumoniamnist.npz" and "assets" in str(packaged)
    ds = MedMNISTDataset(None, "val")
    assert len(ds) == 524 and ds[0]["image"].shape == (1, 28, 28)
    (tmp_path / "medmnist").mkdir()
    own, _ = _npz(tmp_path / "medmnist", name="pneumoniamnist.npz")
    monkeypatch.setenv("MEDREP_DATA", str(tmp_path))
    assert default_medmnist_path() == own
    assert default_medmnist_path(own) == own


def test_preprocess_resize_keeps_physical_size():
    sample = {"image": torch.rand(1, 20, 10), "spacing": torch.tensor([0.5, 2.0]), "meta": {}}
    out = Preprocess(intensity="minmax", size=[10, 40])(sample)
    assert out["image"].shape == (1, 10, 40)
    torch.testing.assert_close(out["spacing"], torch.tensor([1.0, 0.5]))
    assert out["meta"]["original_shape"] == [20, 10] and out["meta"]["original_spacing"] == [0.5, 2.0]
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert sample["image"].shape == (1, 20, 10)  # input untouched


def test_preprocess_3d_ct_window_and_resize(tmp_path):
    write_ct_series(tmp_path / "ct", np.full((4, 6, 6), 600, np.int16), slice_gap=2.5, pixel_spacing=(0.7, 0.7))
    sample = read_image(tmp_path / "ct")  # 600 * 2 - 1024 = 176 HU
    out = Preprocess.from_config({**DEFAULTS["data"], "intensity": "ct_window", "window": [-24, 376], "size": 8})(sample)
    assert out["image"].shape == (1, 8, 8, 8)
    torch.testing.assert_close(out["image"], torch.full((1, 8, 8, 8), 0.5))
    torch.testing.assert_close(out["spacing"] * 8, torch.tensor([2.5 * 4, 0.7 * 6, 0.7 * 6]))


def _folder(tmp_path):
    root = tmp_path / "data"
    write_png(root / "normal" / "a.png", np.full((8, 8), 10, np.uint8))
    write_png(root / "normal" / "b.png", np.full((8, 8), 20, np.uint8))
    write_nifti(root / "tumour" / "v.nii.gz", np.ones((8, 8), np.float32), spacing=(0.5, 0.5))
    (root / "tumour" / "notes.txt").write_text("not an image")
    return root


def test_folder_dataset_class_folders(tmp_path):
    root = _folder(tmp_path)
    ds = FolderDataset(root, class_folders=True, preprocess=Preprocess(intensity="none"))
    assert ds.classes == ["normal", "tumour"] and len(ds) == 3
    assert [ds[i]["label"].item() for i in range(3)] == [0, 0, 1]
    batch = collate([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 1, 8, 8) and batch["label"].tolist() == [0, 0, 1]
    assert batch["spacing"].shape == (3, 2) and len(batch["meta"]) == 3


def test_folder_dicom_series_is_one_volume(tmp_path):
    root = tmp_path / "vols"
    write_ct_series(root / "patient1", np.zeros((3, 4, 4), np.int16))
    write_ct_series(root / "patient2", np.zeros((5, 4, 4), np.int16))
    write_nifti(root / "x.nii", np.zeros((4, 4, 4), np.float32))
    ds = FolderDataset(root, spatial_dims=3)
    assert len(ds) == 3
    assert sorted(ds[i]["image"].shape[1] for i in range(3)) == [3, 4, 5]


def test_folder_with_two_series_gives_two_volumes(tmp_path):
    write_ct_series(tmp_path / "mixed", np.zeros((3, 4, 4), np.int16))
    write_ct_series(tmp_path / "second", np.ones((2, 4, 4), np.int16))
    for path in (tmp_path / "second").iterdir():
        path.rename(tmp_path / "mixed" / f"b_{path.name}")
    ds = FolderDataset(tmp_path / "mixed")
    assert sorted(ds[i]["image"].shape[1] for i in range(len(ds))) == [2, 3]


def test_skip_bad_reports_and_strict_raises(tmp_path):
    root = _folder(tmp_path)
    bad = root / "normal" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    strict = FolderDataset(root)
    with pytest.raises(DataError) as info:
        [strict[i] for i in range(len(strict))]
    assert str(bad) in str(info.value)
    lenient = FolderDataset(root, skip_bad=True)
    assert len(lenient) == 3 and [p for p, _ in lenient.skipped] == [str(bad)]
    assert "cannot read" in lenient.skipped[0][1]


def test_cache_is_not_changed_by_transforms(tmp_path):
    root = _folder(tmp_path)

    def scribble(sample):
        sample["image"].add_(100.0)
        return sample

    ds = FolderDataset(root, cache=True, transform=scribble, preprocess=Preprocess(intensity="minmax"))
    first, second = ds[0]["image"].clone(), ds[0]["image"]
    torch.testing.assert_close(first, second)
    assert len(ds._cache) == 1


def _manifest_files(tmp_path):
    root = tmp_path / "set"
    for i in range(4):
        write_png(root / "img" / f"{i}.png", np.full((6, 6), i * 10, np.uint8))
    return root


def test_manifest_csv_relative_paths_labels_splits(tmp_path):
    root = _manifest_files(tmp_path)
    (root / "m.csv").write_text(
        "path,label,split,report\n"
        "img/0.png,1,train,clear lungs\n"
        'img/1.png,0,train,"effusion.\nIMPRESSION: small"\n'  # a quoted line break, as in real reports
        f"{root / 'img' / '2.png'},1,test,nodule\n"
        "img/3.png,,test,none\n"
    )
    rows = read_manifest(root / "m.csv")
    assert rows[0].path == str(root / "img" / "0.png") and rows[2].path == str(root / "img" / "2.png")
    assert [r.label for r in rows] == [1, 0, 1, None] and [r.split for r in rows] == ["train", "train", "test", "test"]
    train = ManifestDataset(root / "m.csv", split="train", fields=["report"])
    assert len(train) == 2 and train[1]["label"].item() == 0 and train[1]["report"] == "effusion.\nIMPRESSION: small"
    test = ManifestDataset(root / "m.csv", split="test")
    assert "label" not in test[1] and len(test) == 2


def test_manifest_jsonl_class_names(tmp_path):
    root = _manifest_files(tmp_path)
    lines = [{"path": f"img/{i}.png", "label": name, "split": "train"} for i, name in enumerate(["cat", "dog", "cat", "ant"])]
    (root / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    ds = ManifestDataset(root / "m.jsonl", require_labels=True)
    assert ds.classes == ["ant", "cat", "dog"]
    assert [ds[i]["label"].item() for i in range(4)] == [1, 2, 1, 0]


def test_build_dataset_sources(tmp_path):
    path, _ = _npz(tmp_path)
    cfg = {**DEFAULTS["data"], "path": str(path), "size": 16, "spatial_dims": 2}
    ds = build_dataset(cfg)
    assert len(ds) == 10 and ds[0]["image"].shape == (1, 16, 16)
    assert len(build_dataset(cfg, split="test")) == 4
    root = _folder(tmp_path)
    folder = build_dataset({**DEFAULTS["data"], "source": "folder", "path": str(root), "size": 8})
    assert len(folder) == 3
    mroot = _manifest_files(tmp_path)
    (mroot / "m.csv").write_text("path,label,split\nimg/0.png,0,train\nimg/1.png,1,val\n")
    manifest = build_dataset({**DEFAULTS["data"], "source": "manifest", "path": str(mroot / "m.csv")}, split="val")
    assert len(manifest) == 1 and manifest[0]["label"].item() == 1


def test_dataloader_with_collate(tmp_path):
    path, _ = _npz(tmp_path)
    ds = build_dataset({**DEFAULTS["data"], "path": str(path)})
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 1, 8, 8) and batch["label"].dtype == torch.int64
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1


def test_collate_different_sizes_names_data_size():
    a = {"image": torch.zeros(1, 4, 4), "spacing": torch.ones(2), "meta": {}}
    b = {"image": torch.zeros(1, 5, 4), "spacing": torch.ones(2), "meta": {}}
    with pytest.raises(DataError, match="data.size"):
        collate([a, b])
