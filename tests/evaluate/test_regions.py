"""Region probe: AAL grouping, the slab split (train and test crops never overlap), and the probe
end to end on a synthetic labelled volume whose regions differ in intensity."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medrep.checkpoint import export_encoder
from medrep.cli import main
from medrep.errors import MedrepError
from medrep.evaluate.crops import CentredCrops, crop_shape_for
from medrep.evaluate.regions import (
    GROUPS,
    check_disjoint,
    group_labels,
    group_of,
    read_label_names,
    region_probe,
    slab_centres,
)
from medrep.models import build_backbone

AAL_SAMPLE = ["Precentral_L", "Temporal_Pole_Mid_R", "Cingulum_Post_L", "Thalamus_R", "Vermis_4_5", "Cerebelum_Crus1_L",
              "Calcarine_R", "Angular_L", "Fusiform_R", "Paracentral_Lobule_L", "Insula_R", "Olfactory_L"]


def test_grouping_of_sample_names(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes(("".join(f"{i + 1} {n} {2000 + i}\r\n" for i, n in enumerate(AAL_SAMPLE)) + "\r\n").encode())
    names = read_label_names(path)
    assert list(names) == list(range(1, len(AAL_SAMPLE) + 1))
    groups = group_labels(names)
    assert [groups[i] for i in sorted(groups)] == ["frontal", "temporal", "limbic", "subcortical", "cerebellum", "cerebellum",
                                                   "occipital", "parietal", "temporal", "frontal", "limbic", "frontal"]
    with pytest.raises(MedrepError, match="Brainstem"):
        group_of("Brainstem")


def test_label_names_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 Precentral_L\nnot a line\n")
    with pytest.raises(MedrepError, match="line 2"):
        read_label_names(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("1 A\n1 B\n")
    with pytest.raises(MedrepError, match="twice"):
        read_label_names(dup)


def test_grouping_covers_all_116_real_aal_labels(real_data):
    names = read_label_names(real_data / "volumes" / "colin27_aal_labels.txt")
    assert sorted(names) == list(range(1, 117))
    groups = group_labels(names)
    assert set(groups.values()) == set(GROUPS)
    counts = {g: sum(v == g for v in groups.values()) for g in GROUPS}
    assert counts == {"frontal": 30, "parietal": 12, "temporal": 14, "occipital": 12, "limbic": 14, "subcortical": 8, "cerebellum": 26}


@pytest.mark.parametrize("crop,stride,gap,width", [(8, 4, 0, None), (8, 3, 2, None), (6, 5, 1, 20), (5, 2, 0, 11)])
def test_slab_split_is_disjoint(crop, stride, gap, width):
    rng = np.random.default_rng(crop + stride)
    mask = np.zeros((40, 36, 60), bool)
    mask[3:37, 2:30, 4:58] = rng.random((34, 28, 54)) > 0.3
    shape = (crop,) * 3
    train, test, info = slab_centres(mask, shape, stride, slab_axis=2, slab_width=width, gap=gap)
    assert len(train) and len(test) and info["n_slabs"] >= 2
    check_disjoint(train, test, shape, slab_axis=2, gap=gap)  # the code's own assertion
    # independently: the z-intervals of train and test crops are at least `gap` apart
    half = crop // 2
    tr = {(z - half, z - half + crop) for z in train[:, 2]}
    te = {(z - half, z - half + crop) for z in test[:, 2]}
    for a0, a1 in tr:
        for b0, b1 in te:
            assert b0 >= a1 + gap or a0 >= b1 + gap
    # slabs alternate: train slabs are even, test slabs odd, and both sides have several
    assert [s["split"] for s in info["slabs"]][:2] == ["train", "test"]


def test_check_disjoint_catches_overlap():
    with pytest.raises(MedrepError, match="overlaps"):
        check_disjoint(np.array([[10, 10, 10]]), np.array([[12, 5, 17]]), (8, 8, 8))
    with pytest.raises(MedrepError, match="closer"):
        check_disjoint(np.array([[10, 10, 10]]), np.array([[40, 40, 19]]), (8, 8, 8), slab_axis=2, gap=2)
    check_disjoint(np.array([[10, 10, 10]]), np.array([[12, 5, 18]]), (8, 8, 8))  # touching is fine


def test_crop_dataset_cuts_around_centre_and_pads():
    vol = np.arange(10 * 10 * 10, dtype=np.float32).reshape(10, 10, 10)
    ds = CentredCrops(vol, np.array([[5, 5, 5], [0, 9, 4]]), (3, 4, 1), squeeze=True, pad_value=-1)
    a = ds[0]["image"]
    assert a.shape == (1, 3, 4)
    assert torch.equal(a[0], torch.from_numpy(vol[4:7, 3:7, 5]))
    b = ds[1]["image"][0]
    assert b[0, 0] == -1 and b[1, 2] == vol[0, 9, 4]  # padded outside the volume
    assert crop_shape_for(3, 2, 8, slice_axis=0) == (1, 8, 8)
    with pytest.raises(MedrepError):
        crop_shape_for(2, 3, 8)


def synthetic_labelled_volume(folder, size=48):
    """Three regions side by side along axis 0 (each spans every z, so each slab holds all three),
    of clearly different intensity plus noise; background (label 0) at the margins and in a corridor."""
    rng = np.random.default_rng(0)
    labels = np.zeros((size,) * 3, np.uint8)
    third = size // 3
    for i in range(3):
        labels[i * third : (i + 1) * third, 4:-4, :] = i + 1
    labels[:, 20:26, :] = 0  # a background corridor inside the bounding box
    image = np.where(labels > 0, labels * 60.0, 10.0) + rng.normal(0, 8, labels.shape)
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), folder / "vol.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), folder / "lab.nii.gz")
    (folder / "names.txt").write_text("1 Frontal_Sup_L\n2 Temporal_Mid_L\n3 Cerebelum_6_L\n")
    return folder / "vol.nii.gz", folder / "lab.nii.gz", folder / "names.txt"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regions")
    torch.manual_seed(0)
    enc = build_backbone({"name": "resnet10", "spatial_dims": 3})
    export_encoder(enc, folder / "enc3d", {"method": {"name": "none"}, "data": {"intensity": "minmax", "spatial_dims": 3}})
    return folder, synthetic_labelled_volume(folder)


def test_region_probe_beats_chance_on_intensity_regions(labelled):
    folder, (vol, lab, names) = labelled
    res = region_probe(folder / "enc3d", vol, lab, names, crop=8, stride=6, fractions=(1.0,), seeds=(0,), k=10,
                       progress=False, out=folder / "r.json")
    assert res["classes"] == list(GROUPS)
    assert set(res["class_counts"]) == {"frontal", "temporal", "cerebellum"}
    assert all(c["train"] > 10 and c["test"] > 10 for c in res["class_counts"].values())
    assert res["counts"]["background_skipped"] > 0  # centres in the corridor 20 <= y < 26
    assert res["chance_accuracy"] < 0.5
    lin = res["results"]["linear"]["fractions"]["1"]["accuracy"]["mean"]
    knn = res["results"]["knn"]["accuracy"]
    assert lin > 0.8 and knn > 0.8, (lin, knn)
    saved = json.loads((folder / "r.json").read_text())
    assert saved["split"]["n_slabs"] == 48 // 8 and saved["preprocess"]["intensity"] == "minmax"


def test_region_probe_fine_labels_and_2d_encoder(labelled):
    folder, (vol, lab, names) = labelled
    enc2d = build_backbone({"name": "resnet10", "spatial_dims": 2, "conv1_t_size": 3, "conv1_t_stride": 1})
    enc2d.preprocess = {"intensity": "percentile"}
    res = region_probe(enc2d, vol, lab, names, crop=8, stride=8, fine=True, fractions=(1.0,), seeds=(0,), k=5, progress=False)
    assert res["crop_shape"] == [8, 8, 1] and res["spatial_dims"] == 2
    assert res["classes"] == ["Frontal_Sup_L", "Temporal_Mid_L", "Cerebelum_6_L"]
    assert res["results"]["linear"]["fractions"]["1"]["accuracy"]["mean"] > 0.6


def test_region_split_crops_carry_the_label_under_their_centre(labelled):
    from medrep.data import read_image
    from medrep.evaluate.regions import region_split

    _, (vol, lab, names) = labelled
    split = region_split(vol, lab, names, crop=8, stride=6)
    label_map = read_image(lab)["image"][0].numpy().astype(int)
    lut = {1: "frontal", 2: "temporal", 3: "cerebellum"}
    for part in ("train", "test"):
        crops = split.crops(part)
        assert len(crops) == len(split.centres[part]) > 10
        for i in (0, len(crops) // 2, len(crops) - 1):
            item, centre = crops[i], split.centres[part][i]
            assert item["image"].shape == (1, 8, 8, 8)
            assert split.class_names[int(item["label"])] == lut[label_map[tuple(centre)]]
            assert torch.equal(item["image"][0, 4, 4, 4], split.image[0][tuple(centre)])  # the centre voxel, unscaled
    # the slabs along axis 2 never let a train crop reach into a test slab
    assert np.abs(split.centres["train"][:, 2][:, None] - split.centres["test"][:, 2][None]).min() >= 8


def test_region_probe_refuses_mismatched_grid(labelled, tmp_path):
    folder, (vol, lab, names) = labelled
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), tmp_path / "small.nii.gz")
    with pytest.raises(MedrepError, match="grid"):
        region_probe(folder / "enc3d", vol, tmp_path / "small.nii.gz", names, crop=8, progress=False)


def test_cli_regions(labelled, capsys):
    folder, (vol, lab, names) = labelled
    out = folder / "cli_regions.json"
    rc = main(["evaluate", "regions", "--encoder", str(folder / "enc3d"), "--volume", str(vol), "--labels", str(lab),
               "--label-names", str(names), "--crop", "8", "--stride", "12", "--fractions", "1.0", "--seeds", "0",
               "--k", "5", "--random-init", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "background centres skipped" in text and "random-init" in text and "knn (k=5)" in text
    assert json.loads(out.read_text())["random_init"] is True
    rc = main(["evaluate", "regions", "--encoder", str(folder / "enc3d"), "--volume", str(vol), "--labels", str(lab),
               "--label-names", str(names), "--crop", "40"])
    assert rc == 2 and "too short" in capsys.readouterr().err


def test_cli_regions_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "regions", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--slab-axis" in text and "MEDREP_DATA" in text and "cerebellum" in text


def test_real_colin27_slab_split(real_data):
    labels = np.asarray(nib.load(real_data / "volumes" / "colin27_aal.nii.gz").dataobj)
    train, test, info = slab_centres(labels > 0, (32, 32, 32), 16, slab_axis=2)
    check_disjoint(train, test, (32, 32, 32), slab_axis=2)
    assert info["n_slabs"] == 4 and len(train) == len(test) > 100
