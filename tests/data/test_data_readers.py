"""Readers: pixel values, axis order, spacing and privacy, on files built here and on real files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from medrep.data import META_KEYS, read_dicom, read_dicom_series, read_image, read_nifti, read_png
from medrep.data.synthetic import FAKE_PATIENT, write_ct_series, write_dicom, write_nifti, write_png


def _check_contract(sample: dict, spatial_dims: int) -> None:
    assert set(sample) == {"image", "spacing", "meta"}
    assert sample["image"].dtype == torch.float32 and type(sample["image"]) is torch.Tensor
    assert sample["image"].ndim == spatial_dims + 1 and sample["image"].shape[0] == 1
    assert sample["spacing"].dtype == torch.float32 and sample["spacing"].shape == (spatial_dims,)
    assert set(sample["meta"]) <= META_KEYS
    assert sample["meta"]["spatial_shape"] == list(sample["image"].shape[1:])


def _all_text(obj) -> str:
    """Every key and value of a nested structure as one string, to search for leaked tags."""
    if isinstance(obj, dict):
        return " ".join(f"{k} {_all_text(v)}" for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return " ".join(_all_text(v) for v in obj)
    return str(obj)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_matches_pydicom_pixel_array(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    sample = read_dicom(path)
    _check_contract(sample, 2)
    expected = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    assert sample["image"].shape == (1, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(sample["image"][0].numpy(), expected.astype(np.float32))
    np.testing.assert_allclose(sample["spacing"].numpy(), [float(v) for v in ds.PixelSpacing], rtol=1e-6)
    assert sample["meta"]["modality"] == ds.Modality and sample["meta"]["axes"] == ["row", "col"]


def test_ct_small_is_in_hounsfield_units():
    sample = read_dicom(get_testdata_file("CT_small.dcm"))
    assert sample["meta"]["rescale"] == {"slope": 1.0, "intercept": -1024.0}
    assert float(sample["image"].min()) < -500  # air/fat regions below zero: the intercept was applied


def test_dicom_non_square_keeps_rows_cols_and_row_col_spacing(tmp_path):
    pixels = (np.arange(6)[:, None] * 10 + np.arange(5)[None, :]).astype(np.int16)  # 6 rows, 5 cols
    path = write_dicom(tmp_path / "a.dcm", pixels, pixel_spacing=(0.7, 0.8), slope=2.0, intercept=-1024.0)
    sample = read_image(path)
    assert sample["image"].shape == (1, 6, 5)
    np.testing.assert_array_equal(sample["image"][0].numpy(), pixels * 2.0 - 1024.0)
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, pixels)
    np.testing.assert_allclose(sample["spacing"].numpy(), [0.7, 0.8], rtol=1e-6)
    affine = np.array(sample["meta"]["affine"])
    np.testing.assert_allclose(affine[:3, 0], [0, -0.7, 0], atol=1e-9)  # rows go down: +y LPS = -y RAS
    np.testing.assert_allclose(affine[:3, 1], [-0.8, 0, 0], atol=1e-9)  # cols go right: +x LPS = -x RAS


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[0, 100], [200, 65535]], dtype=np.uint16)
    sample = read_dicom(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    assert sample["meta"]["inverted"] is True
    np.testing.assert_array_equal(sample["image"][0].numpy(), 65535.0 - pixels)


def test_dicom_without_pixel_spacing_assumes_1mm_and_says_so(tmp_path):
    sample = read_dicom(write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.int16), pixel_spacing=None))
    assert sample["spacing"].tolist() == [1.0, 1.0] and sample["meta"]["spacing_known"] is False


def _volume(d=4, h=6, w=5) -> np.ndarray:
    k, r, c = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    return (k * 100 + r * 10 + c).astype(np.int16)


def test_dicom_series_sorted_along_normal_with_spacing(tmp_path):
    volume = _volume()
    write_ct_series(tmp_path / "ct", volume, slice_gap=2.5, pixel_spacing=(0.7, 0.8), origin=(-10, 20, 30))
    sample = read_dicom_series(tmp_path / "ct")
    _check_contract(sample, 3)
    np.testing.assert_array_equal(sample["image"][0].numpy(), volume * 2.0 - 1024.0)
    np.testing.assert_allclose(sample["spacing"].numpy(), [2.5, 0.7, 0.8], rtol=1e-6)
    assert sample["meta"]["axes"] == ["slice", "row", "col"] and sample["meta"]["num_files"] == 4
    np.testing.assert_allclose(sample["meta"]["origin"], [10, -20, 30])  # RAS of slice 0, row 0, col 0
    np.testing.assert_allclose(np.array(sample["meta"]["affine"])[:3, 0], [0, 0, 2.5])


def test_dicom_series_oblique_orientation(tmp_path):
    volume = _volume(5, 4, 3)
    # sagittal slices: normal is -x (LPS), so positions decrease in x
    write_ct_series(tmp_path / "sag", volume, slice_gap=1.25, orientation=(0, 1, 0, 0, 0, -1), shuffle_seed=3)
    sample = read_image(tmp_path / "sag")
    np.testing.assert_array_equal(sample["image"][0].numpy(), volume * 2.0 - 1024.0)
    np.testing.assert_allclose(sample["spacing"].numpy(), [1.25, 0.7, 0.8], rtol=1e-6)


def test_no_patient_tags_in_samples(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    secrets = [str(ds.PatientName), str(ds.PatientID), str(ds.get("StudyDate", "")), *FAKE_PATIENT.values()]
    secrets = [s for s in secrets if s]
    write_ct_series(tmp_path / "ct", _volume(3, 4, 4))
    samples = [
        read_dicom(get_testdata_file("CT_small.dcm")),
        read_image(tmp_path / "ct"),
        read_dicom(write_dicom(tmp_path / "one.dcm", np.ones((3, 3), np.int16))),
    ]
    for sample in samples:
        assert set(sample["meta"]) <= META_KEYS
        text = _all_text(sample["meta"]) + repr(sample)
        for secret in secrets:
            assert secret not in text
        assert "Patient" not in text and "00100010" not in text


def test_nifti_anisotropic_spacing_and_voxel_order(tmp_path):
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    sample = read_nifti(write_nifti(tmp_path / "v.nii.gz", array, spacing=(0.5, 0.8, 2.0)))
    _check_contract(sample, 3)
    np.testing.assert_array_equal(sample["image"][0].numpy(), array)
    np.testing.assert_allclose(sample["spacing"].numpy(), [0.5, 0.8, 2.0], rtol=1e-6)
    assert sample["meta"]["axes"] == ["i", "j", "k"] and len(sample["meta"]["affine"]) == 4


def test_nifti_2d_and_singleton_third_axis(tmp_path):
    flat = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert read_image(write_nifti(tmp_path / "a.nii", flat, spacing=(0.5, 0.25)))["image"].shape == (1, 3, 4)
    sample = read_image(write_nifti(tmp_path / "b.nii", flat[..., None], spacing=(0.5, 0.25, 3.0)), spatial_dims=2)
    assert sample["image"].shape == (1, 3, 4)
    np.testing.assert_allclose(sample["spacing"].numpy(), [0.5, 0.25])


def test_png_gray_axis_order(tmp_path):
    array = (np.arange(7)[:, None] * 30 + np.arange(4)[None, :]).astype(np.uint8)  # 7 rows, 4 cols
    sample = read_png(write_png(tmp_path / "g.png", array))
    _check_contract(sample, 2)
    np.testing.assert_array_equal(sample["image"][0].numpy(), array)
    assert sample["spacing"].tolist() == [1.0, 1.0] and sample["meta"]["spacing_known"] is False


def test_png_rgb_becomes_luminance(tmp_path):
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 2] = (0, 0, 200)
    sample = read_image(write_png(tmp_path / "c.png", rgb))
    assert sample["image"].shape == (1, 2, 3) and sample["meta"]["color_to_gray"] is True
    assert sample["image"][0, 0, 0].item() == pytest.approx(0.299 * 255, rel=1e-5)
    assert sample["image"][0, 1, 2].item() == pytest.approx(0.114 * 200, rel=1e-5)


def test_png_16bit_keeps_range(tmp_path):
    array = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    sample = read_png(write_png(tmp_path / "w.png", array))
    np.testing.assert_array_equal(sample["image"][0].numpy(), array.astype(np.float32))


def test_jpeg_and_extensionless_dicom(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((5, 9), 128, np.uint8)).save(tmp_path / "x.jpg")
    assert read_image(tmp_path / "x.jpg")["image"].shape == (1, 5, 9)
    path = write_dicom(tmp_path / "IM0001.dcm", np.ones((3, 2), np.int16))
    path.rename(tmp_path / "IM0001")
    assert read_image(tmp_path / "IM0001")["meta"]["format"] == "dicom"


# Real files from $MEDREP_DATA (the real_data fixture; skipped when absent).


def test_real_siim_dicom_matches_pydicom(real_data):
    path = real_data.need("cxr_samples/siim_sample.dcm")
    ds = pydicom.dcmread(path)
    sample = read_image(path, spatial_dims=2)
    _check_contract(sample, 2)
    np.testing.assert_array_equal(sample["image"][0].numpy(), ds.pixel_array.astype(np.float32))
    np.testing.assert_allclose(sample["spacing"].numpy(), [float(v) for v in ds.PixelSpacing], rtol=1e-6)
    text = _all_text(sample["meta"])
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate"):
        value = str(ds.get(keyword, "") or "")
        if len(value) > 2:
            assert value not in text


def test_real_nih_pngs(real_data):
    for path in sorted(real_data.need("cxr_samples").glob("*.png")):
        sample = read_image(path)
        _check_contract(sample, 2)
        assert sample["image"].shape == (1, 512, 512)


def test_real_head_ct_spacing(real_data):
    sample = read_image(real_data.need("volumes/head_ct.nii.gz"), spatial_dims=3)
    _check_contract(sample, 3)
    assert sample["image"].shape == (1, 256, 256, 108)
    np.testing.assert_allclose(sample["spacing"].numpy(), [0.957, 0.957, 1.5], atol=1e-3)
    assert sample["image"].min().item() == -1024.0
