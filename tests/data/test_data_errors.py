"""Every kind of bad input raises DataError naming the file (or field), never another exception type."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medrep.data import (
    FolderDataset,
    ManifestDataset,
    MedMNISTDataset,
    Preprocess,
    build_dataset,
    default_medmnist_path,
    read_dicom,
    read_dicom_series,
    read_image,
    read_manifest,
    read_nifti,
    read_png,
)
from medrep.data.synthetic import write_ct_series, write_dicom, write_medmnist, write_nifti, write_png
from medrep.errors import DataError
from medrep.recipe import DEFAULTS


def raises_naming(where, fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    assert str(where) in str(info.value), f"{where} not named in: {info.value}"
    assert info.value.where == str(where)
    return info.value


def _half(src, dst, fraction=0.5):
    data = open(src, "rb").read()
    open(dst, "wb").write(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("reader", [read_image, read_dicom, read_nifti, read_png, read_dicom_series])
def test_missing_file(tmp_path, reader):
    raises_naming(tmp_path / "nope.dcm", reader, tmp_path / "nope.dcm")


@pytest.mark.parametrize("name", ["r.dcm", "r.nii", "r.nii.gz", "r.png", "r.jpg"])
def test_random_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(os.urandom(4096))
    raises_naming(path, read_image, path)


def test_gzip_of_random_bytes(tmp_path):
    path = tmp_path / "g.nii.gz"
    path.write_bytes(gzip.compress(os.urandom(4096)))
    raises_naming(path, read_image, path)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.05])
def test_truncated_dicom(tmp_path, fraction):
    path = _half(get_testdata_file("CT_small.dcm"), tmp_path / "t.dcm", fraction)
    error = raises_naming(path, read_image, path)
    assert str(pydicom.dcmread(get_testdata_file("CT_small.dcm")).PatientName) not in str(error)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_truncated_nifti(tmp_path, name):
    full = write_nifti(tmp_path / name, np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
    path = _half(full, tmp_path / f"half_{name}")
    raises_naming(path, read_image, path)


def test_truncated_png(tmp_path):
    full = write_png(tmp_path / "p.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path = _half(full, tmp_path / "half.png")
    raises_naming(path, read_image, path)


def test_truncated_real_files(tmp_path, real_data):
    for src in (real_data / "volumes" / "head_ct.nii.gz", real_data / "cxr_samples" / "siim_sample.dcm"):
        path = _half(src, tmp_path / src.name)
        raises_naming(path, read_image, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path, bad):
    array = np.zeros((4, 4, 4), np.float32)
    array[1, 2, 3] = bad
    path = write_nifti(tmp_path / "nan.nii.gz", array)
    error = raises_naming(path, read_image, path)
    assert "NaN" in str(error)


def test_wrong_dimensionality(tmp_path):
    png = write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    raises_naming(png, read_image, png, spatial_dims=3)
    vol = write_nifti(tmp_path / "v.nii", np.zeros((4, 4, 4), np.float32))
    raises_naming(vol, read_image, vol, spatial_dims=2)
    write_ct_series(tmp_path / "ct", np.zeros((3, 4, 4), np.int16))
    raises_naming(tmp_path / "ct", read_image, tmp_path / "ct", spatial_dims=2)
    dcm = get_testdata_file("CT_small.dcm")
    raises_naming(dcm, read_dicom, dcm, spatial_dims=3)
    four_d = write_nifti(tmp_path / "t.nii", np.zeros((4, 4, 4, 2), np.float32), spacing=(1, 1, 1, 1))
    raises_naming(four_d, read_image, four_d)


@pytest.mark.parametrize("spacing", [(0.0, 0.7), (-0.5, 0.7)])
def test_bad_dicom_spacing(tmp_path, spacing):
    path = write_dicom(tmp_path / "s.dcm", np.zeros((4, 4), np.int16), pixel_spacing=spacing)
    error = raises_naming(path, read_image, path)
    assert "spacing" in str(error)


@pytest.mark.parametrize("pixdim", [(0.0, 1.0, 1.0), (-1.0, 1.0, 1.0)])
def test_bad_nifti_spacing(tmp_path, pixdim):
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), None)
    img.header["pixdim"][1:4] = pixdim
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    path = tmp_path / "p.nii.gz"
    nib.save(img, path)
    raises_naming(path, read_image, path)


def test_series_errors(tmp_path):
    two = tmp_path / "two"
    write_ct_series(two, np.zeros((3, 4, 4), np.int16))
    write_ct_series(tmp_path / "other", np.zeros((2, 4, 4), np.int16))
    for path in (tmp_path / "other").iterdir():
        path.rename(two / f"b_{path.name}")
    assert "series" in str(raises_naming(two, read_dicom_series, two))

    sizes = tmp_path / "sizes"
    write_dicom(sizes / "a.dcm", np.zeros((4, 4), np.int16), position=(0, 0, 0), series_uid="1.2.3")
    write_dicom(sizes / "b.dcm", np.zeros((5, 4), np.int16), position=(0, 0, 1), series_uid="1.2.3")
    assert "size" in str(raises_naming(sizes, read_dicom_series, sizes))

    same = tmp_path / "same"
    for name in ("a", "b"):
        write_dicom(same / f"{name}.dcm", np.zeros((4, 4), np.int16), position=(0, 0, 5), series_uid="1.2.4")
    assert "same position" in str(raises_naming(same, read_dicom_series, same))

    gap = tmp_path / "gap"
    for i, z in enumerate((0.0, 2.0, 4.0, 8.0)):
        write_dicom(gap / f"{i}.dcm", np.zeros((4, 4), np.int16), position=(0, 0, z), series_uid="1.2.5")
    assert "uneven" in str(raises_naming(gap, read_dicom_series, gap))

    empty = tmp_path / "empty"
    empty.mkdir()
    raises_naming(empty, read_dicom_series, empty)


def test_unknown_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    raises_naming(path, read_image, path)


def test_manifest_errors(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\na.png,0\n,1\n")
    assert "row 2" in str(raises_naming(csv, read_manifest, csv))
    csv.write_text("path,label\na.png,0\na.png,\n")
    assert "row 2" in str(raises_naming(csv, read_manifest, csv, require_labels=True))
    csv.write_text("file,label\na.png,0\n")
    assert "path" in str(raises_naming(csv, read_manifest, csv))
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"path": "a.png"}) + "\n" + json.dumps({"label": 1}) + "\n")
    assert "row 2" in str(raises_naming(jsonl, read_manifest, jsonl))
    jsonl.write_text(json.dumps({"path": "a.png"}) + "\n{broken\n")
    assert "row 2" in str(raises_naming(jsonl, read_manifest, jsonl))
    jsonl.write_text(json.dumps({"path": "a.png", "label": 0.5}) + "\n")
    assert "row 1" in str(raises_naming(jsonl, read_manifest, jsonl))
    jsonl.write_text(json.dumps({"path": "a.png", "split": "train"}) + "\n" + json.dumps({"path": "a.png", "split": "val"}) + "\n")
    error = raises_naming(jsonl, ManifestDataset, jsonl, split="test")
    assert "train, val" in str(error)
    raises_naming(tmp_path / "missing.csv", read_manifest, tmp_path / "missing.csv")
    other = tmp_path / "m.xlsx"
    other.write_text("x")
    raises_naming(other, read_manifest, other)


def test_manifest_row_pointing_to_missing_file(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("path\nmissing.png\n")
    raises_naming(tmp_path / "missing.png", ManifestDataset(csv).__getitem__, 0)
    lenient = ManifestDataset(csv.parent / "m.csv", skip_bad=True)
    assert len(lenient) == 0 and lenient.skipped[0][0] == str(tmp_path / "missing.png")


def test_medmnist_errors(tmp_path):
    images = np.zeros((3, 4, 4), np.uint8)
    path = write_medmnist(tmp_path / "m.npz", {"train": (images, np.zeros((3, 1))), "val": (images, np.zeros((3, 1)))})
    error = raises_naming(path, MedMNISTDataset, path, "test")
    assert "train, val" in str(error)
    raises_naming(tmp_path / "none.npz", MedMNISTDataset, tmp_path / "none.npz", "train")
    raises_naming(tmp_path / "none.npz", default_medmnist_path, tmp_path / "none.npz")
    nolabels = tmp_path / "nl.npz"
    np.savez(nolabels, train_images=images)
    raises_naming(nolabels, MedMNISTDataset, nolabels, "train")
    nan = tmp_path / "nan.npz"
    np.savez(nan, train_images=np.full((2, 4, 4), np.nan, np.float32), train_labels=np.zeros((2, 1)))
    raises_naming(nan, MedMNISTDataset, nan, "train")
    corrupt = tmp_path / "c.npz"
    corrupt.write_bytes(os.urandom(2048))
    raises_naming(corrupt, MedMNISTDataset, corrupt, "train")
    raises_naming(path, MedMNISTDataset, path, "train", spatial_dims=3)


def test_folder_errors(tmp_path):
    raises_naming(tmp_path / "nope", FolderDataset, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    raises_naming(tmp_path / "empty", FolderDataset, tmp_path / "empty")
    loose = write_png(tmp_path / "cls" / "loose.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "cls" / "a" / "x.png", np.zeros((4, 4), np.uint8))
    raises_naming(loose, FolderDataset, tmp_path / "cls", class_folders=True)


def test_recipe_fields_are_named():
    for kwargs, field in (
        ({"intensity": "zscore"}, "data.intensity"),
        ({"intensity": "ct_window", "window": None}, "data.window"),
        ({"size": 0}, "data.size"),
        ({"size": [32, "a"]}, "data.size"),
    ):
        raises_naming(field, Preprocess, **kwargs)
    raises_naming("data.source", build_dataset, {**DEFAULTS["data"], "source": "web"})
    raises_naming("data.path", build_dataset, {**DEFAULTS["data"], "source": "folder", "path": None})
    sample = read_image(get_testdata_file("CT_small.dcm"))
    raises_naming("data.size", Preprocess(size=[8, 8, 8]), sample)
