"""Dense evaluation: image/mask folders and their errors, the Colin27 hemisphere split, Dice against a
naive reference, patches and label fractions, fine-tuning (full and frozen encoder), and the CLI."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import square_items

from medrep.checkpoint import export_encoder
from medrep.cli import main
from medrep.data.datasets.segmentation import SegItem, find_pairs, load_segmentation_folder
from medrep.data.sources.colin27_lobes import (
    check_halves_disjoint,
    colin27_example,
    colin27_lobes,
    hemisphere_ranges,
    midline_index,
)
from medrep.data.synthetic import write_nifti, write_png
from medrep.errors import DataError, MedrepError
from medrep.evaluate.dice import dice_per_class, summarise_cases
from medrep.evaluate.patches import PatchSampler, resolve_patch
from medrep.evaluate.segment import SegNet, fine_tune, segment_eval
from medrep.models import build_backbone

TINY_UNET = {"name": "unet", "spatial_dims": 2, "in_channels": 1, "channels": [4, 8, 8, 16, 16], "groups": 4}


def blob_case(shape, seed):
    """A noisy image with a bright ball (label 1) and a dimmer box (label 2)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    centre = np.array(shape) // 2 + rng.integers(-2, 3, len(shape))
    mask = np.zeros(shape, np.uint8)
    mask[((grid - centre.reshape(-1, *[1] * len(shape))) ** 2).sum(0) < 16] = 1
    mask[(slice(1, 4),) * len(shape)] = 2
    image = 50 + 100 * (mask == 1) + 40 * (mask == 2) + rng.normal(0, 5, shape)
    return image.astype(np.float32), mask


def msd_folder(root, n=3, shape=(20, 18, 16)):
    for i in range(n):
        image, mask = blob_case(shape, i)
        write_nifti(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz", image, (1.0, 1.0, 2.0))
        write_nifti(root / "labelsTr" / f"case_{i:03d}.nii.gz", mask, (1.0, 1.0, 2.0))
    write_nifti(root / "imagesTs" / "case_900.nii.gz", blob_case(shape, 9)[0], (1.0, 1.0, 2.0))
    (root / "imagesTr" / "._case_000_0000.nii.gz").write_bytes(b"macOS resource fork")
    return root


def png_folder(root, names, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        image = rng.integers(0, 60, (size, size)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        r, c, s = (int(v) for v in (*rng.integers(2, size // 2, 2), rng.integers(size // 4, size // 2)))
        image[r : r + s, c : c + s] += 150
        mask[r : r + s, c : c + s] = 1
        write_png(root / "images" / f"{name}.png", image)
        write_png(root / "masks" / f"{name}.png", mask)
    return root


# ----------------------------------------------------------------------------------------------
# folders


def test_msd_folder_pairs_and_splits(tmp_path):
    root = msd_folder(tmp_path / "Task01")
    pairs = find_pairs(root)["all"]
    assert [(i.name, m.name) for i, m in pairs] == [(f"case_{k:03d}_0000.nii.gz", f"case_{k:03d}.nii.gz") for k in range(3)]
    task = load_segmentation_folder(root, num_classes=3)
    assert task.spatial_dims == 3 and len(task.train) == 2 and len(task.test) == 1
    assert {it.case for it in task.train}.isdisjoint({it.case for it in task.test})
    item = task.train[0]
    assert item.image.shape == item.mask.shape == (20, 18, 16) and item.mask.dtype == np.int64
    assert 0.0 <= item.image.min() and item.image.max() <= 1.0
    sliced = load_segmentation_folder(root, num_classes=3, spatial_dims=2, slice_axis=2)
    assert len(sliced.train) == 2 * 16 and sliced.train[0].image.shape == (20, 18)
    assert len({it.case for it in sliced.test}) == 1  # the slices of one volume stay one case


def test_png_folder_with_split_subfolders(tmp_path):
    png_folder(tmp_path / "train", ["a", "b", "c"])
    png_folder(tmp_path / "test", ["d", "e"], seed=1)
    task = load_segmentation_folder(tmp_path, num_classes=2)
    assert task.spatial_dims == 2 and len(task.train) == 3 and len(task.test) == 2
    assert task.info["layout"] == "split folders" and task.train[0].mask.max() == 1


def _bad_png(root):
    png_folder(root, ["a", "b"])
    return root


def _orphan_image(root):
    _bad_png(root)
    write_png(root / "images" / "lonely.png", np.zeros((32, 32), np.uint8))
    return root / "images" / "lonely.png", "no mask"


def _orphan_mask(root):
    _bad_png(root)
    write_png(root / "masks" / "ghost.png", np.zeros((32, 32), np.uint8))
    return root / "masks" / "ghost.png", "no image"


def _wrong_shape(root):
    _bad_png(root)
    write_png(root / "masks" / "b.png", np.zeros((30, 32), np.uint8))
    return root / "masks" / "b.png", "differs"


def _out_of_range(root):
    _bad_png(root)
    write_png(root / "masks" / "a.png", np.full((32, 32), 3, np.uint8))
    return root / "masks" / "a.png", "outside the 2 declared classes"


def _colour_mask(root):
    _bad_png(root)
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[4:8, 4:8] = (255, 0, 0)
    write_png(root / "masks" / "a.png", colour)
    return root / "masks" / "a.png", "colour mask"


def _binary_255(root):
    _bad_png(root)
    write_png(root / "masks" / "b.png", np.full((32, 32), 255, np.uint8))
    return root / "masks" / "b.png", "0/255"


def _nan_image(root):
    msd_folder(root, n=2)
    image = blob_case((20, 18, 16), 0)[0]
    image[3, 3, 3] = np.nan
    write_nifti(root / "imagesTr" / "case_001_0000.nii.gz", image)
    return root / "imagesTr" / "case_001_0000.nii.gz", "NaN"


def _fractional_mask(root):
    msd_folder(root, n=2)
    write_nifti(root / "labelsTr" / "case_000.nii.gz", np.full((20, 18, 16), 0.5, np.float32))
    return root / "labelsTr" / "case_000.nii.gz", "non-integer"


def _corrupt_file(root):
    msd_folder(root, n=2)
    (root / "labelsTr" / "case_001.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return root / "labelsTr" / "case_001.nii.gz", "cannot read"


@pytest.mark.parametrize("make", [_orphan_image, _orphan_mask, _wrong_shape, _out_of_range, _colour_mask, _binary_255,
                                  _nan_image, _fractional_mask, _corrupt_file])
def test_bad_pairs_raise_data_error_naming_the_file(tmp_path, make):
    bad, needle = make(tmp_path / "data")
    with pytest.raises(DataError, match=needle) as exc:
        num_classes = 2 if (tmp_path / "data" / "images").is_dir() else 3
        load_segmentation_folder(tmp_path / "data", num_classes=num_classes)
    assert exc.value.where == str(bad)


def test_palette_png_mask_keeps_its_indices(tmp_path):
    from PIL import Image

    png_folder(tmp_path / "p", ["a", "b"])
    labels = np.zeros((32, 32), np.uint8)
    labels[10:20, 5:9] = 2
    img = Image.fromarray(labels, mode="P")
    img.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * 759)
    img.save(tmp_path / "p" / "masks" / "a.png")
    task = load_segmentation_folder(tmp_path / "p", num_classes=3, test_fraction=0.5)
    item = next(it for it in (*task.train, *task.test) if it.name.endswith("a.png"))
    assert np.array_equal(item.mask, labels)


def test_folder_layout_errors(tmp_path):
    (tmp_path / "a" / "imagesTr").mkdir(parents=True)
    with pytest.raises(DataError, match="no labelsTr"):
        find_pairs(tmp_path / "a")
    (tmp_path / "b" / "random").mkdir(parents=True)
    with pytest.raises(DataError, match="not a segmentation folder"):
        find_pairs(tmp_path / "b")
    png_folder(tmp_path / "c" / "train", ["a"])
    with pytest.raises(DataError, match="no test/"):
        find_pairs(tmp_path / "c")
    png_folder(tmp_path / "d", ["only"])
    with pytest.raises(DataError, match="cannot be split"):
        load_segmentation_folder(tmp_path / "d", num_classes=2)
    with pytest.raises(DataError, match="--num-classes"):
        load_segmentation_folder(tmp_path / "d", num_classes=1)


# ----------------------------------------------------------------------------------------------
# Dice


def naive_dice(pred, truth, k):
    out = []
    for c in range(k):
        p, t = pred == c, truth == c
        out.append(math.nan if p.sum() + t.sum() == 0 else 2 * (p & t).sum() / (p.sum() + t.sum()))
    return np.array(out)


def test_dice_matches_naive_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 6))
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 9)), 5)
        pred, truth = rng.integers(0, k, shape), rng.integers(0, k - 1, shape)  # the last class is never true
        np.testing.assert_allclose(dice_per_class(pred, truth, k), naive_dice(pred, truth, k), equal_nan=True)
    assert dice_per_class(np.zeros(4), np.zeros(4), 3).tolist()[0] == 1.0
    assert np.isnan(dice_per_class(np.zeros(4), np.zeros(4), 3)[1:]).all()


def test_summary_skips_classes_absent_from_prediction_and_truth():
    a = np.array([1.0, 0.5, np.nan, 0.0])   # class 2 in neither; class 3 missed or predicted wrongly
    b = np.array([1.0, 0.7, np.nan, np.nan])
    s = summarise_cases([a, b], ["bg", "x", "y", "z"])
    assert s["per_class"] == {"bg": 1.0, "x": pytest.approx(0.6), "z": 0.0}
    assert s["undefined_classes"] == ["y"] and s["mean_dice"] == pytest.approx(0.3)


# ----------------------------------------------------------------------------------------------
# patches and label fractions


def _items(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [SegItem(rng.random(shape).astype(np.float32), (rng.random(shape) > 0.5).astype(np.int64), f"item{i}") for i in range(n)]


def test_patch_rule_and_label_fractions():
    items = _items(10, (40, 24))
    assert resolve_patch(None, items, 2) == (48, 32)  # whole (padded) images
    assert resolve_patch(32, items, 2) == (32, 32)
    with pytest.raises(MedrepError, match="larger than every training item") as exc:
        resolve_patch(64, items, 2)
    assert exc.value.where == "item0"
    with pytest.raises(MedrepError, match="multiple of 16"):
        resolve_patch(20, items, 2)
    small = PatchSampler(items, (48, 32), 0.3, seed=0, unit="items")
    large = PatchSampler(items, (48, 32), 1.0, seed=0, unit="items")
    assert small.n_train == 3 and large.n_train == 10 and set(small.kept) <= set(large.kept)
    x, y = small.draw(5)
    assert x.shape == y.shape == (5, 1, 48, 32)
    assert {int(i) for i in np.unique(y)} <= {0, 1}
    pooled = PatchSampler(_items(1, (20, 20, 20)), (16, 16, 16), 0.25, seed=1, unit="patches", pool=40)
    again = PatchSampler(_items(1, (20, 20, 20)), (16, 16, 16), 1.0, seed=1, unit="patches", pool=40)
    assert pooled.n_train == 10 and pooled.positions == again.positions[:10]


# ----------------------------------------------------------------------------------------------
# fine-tuning




def test_fine_tune_beats_untrained_random_init():
    torch.manual_seed(0)
    enc = build_backbone(TINY_UNET)
    train, test = square_items(12, 0), square_items(6, 1)
    kw = dict(fractions=(1.0,), seeds=(0,), batch_size=4, lr=1e-2, random_init=True, progress=False, device="cpu")
    untrained = segment_eval(enc, train, test, 2, steps=0, **kw)["results"]["1"]["mean_dice"]["mean"]
    result = segment_eval(enc, train, test, 2, steps=30, **kw)
    trained = result["results"]["1"]
    assert trained["mean_dice"]["mean"] > max(0.8, untrained + 0.4), (untrained, trained["mean_dice"])
    assert trained["n_train"] == 12 and trained["steps"] == 30 and result["options"]["patch"] == [32, 32]
    assert "random-init" in result["table"] and "class_1" in result["class_table"]


def test_frozen_encoder_trains_decoder_only():
    torch.manual_seed(0)
    model = SegNet(build_backbone(TINY_UNET), 2)
    enc0 = {k: v.clone() for k, v in model.backbone.encoder.state_dict().items()}
    dec0 = {k: v.clone() for k, v in model.backbone.decoder.state_dict().items()}
    sampler = PatchSampler(square_items(4, 0), (32, 32), 1.0, seed=0, unit="items")
    fine_tune(model, sampler, steps=3, batch_size=2, lr=1e-2, frozen_encoder=True, device=torch.device("cpu"), progress=False)
    assert all(torch.equal(v, model.backbone.encoder.state_dict()[k]) for k, v in enc0.items())
    assert any(not torch.equal(v, model.backbone.decoder.state_dict()[k]) for k, v in dec0.items())


def test_encoder_without_multi_scale_features_is_refused(monkeypatch):
    """ResNets, DenseNet-121 and ViTs get a decoder (tests/evaluate/test_segment_any_encoder.py); a
    registered backbone that declares no stage features is refused, naming it and --encoder."""
    from medrep.models import BACKBONES, Backbone

    def toy(*, spatial_dims: int = 2) -> Backbone:
        return Backbone(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), 4,
                        {"name": "toy", "spatial_dims": spatial_dims})

    monkeypatch.setitem(BACKBONES, "toy", toy)
    with pytest.raises(MedrepError, match="toy encoder has no multi-scale features") as exc:
        segment_eval(toy(), square_items(2, 0), square_items(1, 1), 2, steps=1, progress=False)
    assert exc.value.where == "--encoder"


# ----------------------------------------------------------------------------------------------
# colin27-lobes


def test_hemisphere_split_rules():
    assert midline_index(np.diag([1.0, 1, 1, 1]) + np.c_[np.zeros((4, 3)), [-90, 0, 0, 0]], (181, 10, 10)) == (90.0, 1)
    las = np.diag([-1.0, 1, 1, 1])
    las[0, 3] = 90
    assert midline_index(las, (181, 10, 10)) == (90.0, -1)
    with pytest.raises(DataError, match="left-right"):
        midline_index(np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), (10, 10, 10))
    ranges = hemisphere_ranges(9, 171, 90.0, 1, 4)
    assert ranges == {"train": (9, 88), "test": (93, 171)}
    assert hemisphere_ranges(9, 171, 90.0, -1, 4) == {"train": (93, 171), "test": (9, 88)}
    check_halves_disjoint(ranges, 90.0, 4)
    with pytest.raises(MedrepError, match="apart"):
        check_halves_disjoint({"train": (9, 90), "test": (91, 171)}, 90.0, 4)


def test_colin27_lobes_split_is_disjoint(real_data):
    real_data.need("volumes/colin27_aal.nii.gz")
    check_colin27_split(real_data / "volumes")


def test_colin27_lobes_split_on_the_example_tree(tmp_path):
    """The same rules on the source's example tree (a 25x20x18 grid), so they are checked without the real data."""
    colin27_example(tmp_path)
    check_colin27_split(tmp_path)


def check_colin27_split(folder):
    task = colin27_lobes(folder, spatial_dims=3)
    assert task.num_classes == 8 and task.class_names[1:] == ["frontal", "parietal", "temporal", "occipital", "limbic",
                                                             "subcortical", "cerebellum"]
    split = task.info["split"]
    (a0, a1), (b0, b1) = split["train_axis0"], split["test_axis0"]
    assert a1 <= split["midline_index"] - split["gap"] / 2 and b0 > split["midline_index"] + split["gap"] / 2
    assert b0 - (a1 - 1) > split["gap"] and set(range(a0, a1)).isdisjoint(range(b0, b1))
    assert task.train[0].image.shape[0] == a1 - a0 and task.test[0].image.shape[0] == b1 - b0
    affine = nib.load(folder / "colin27_t1.nii.gz").affine
    assert affine[0, 0] * (a1 - 1) + affine[0, 3] < 0 < affine[0, 0] * b0 + affine[0, 3]  # left trains, right tests
    for item in (*task.train, *task.test):  # the test half is mirrored: the midline is at the end in both
        assert (item.mask[0] > 0).sum() < (item.mask[-1] > 0).sum()
        assert item.image.shape[1] % 16 == 0 and item.image.shape[2] % 16 == 0
        assert set(np.unique(item.mask).tolist()) == set(range(8))  # every region in both hemispheres


# ----------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("segcli")
    png_folder(root / "data", [f"img{i}" for i in range(5)])
    torch.manual_seed(0)
    export_encoder(build_backbone(TINY_UNET), root / "enc", {"method": {"name": "none"}, "data": {"spatial_dims": 2}})
    export_encoder(build_backbone({"name": "resnet10", "spatial_dims": 2}), root / "unknown", {"method": {"name": "none"},
                                                                                                "data": {"spatial_dims": 2}})
    info = json.loads((root / "unknown" / "encoder.json").read_text())
    info["backbone"]["name"] = "resnet9000"  # an encoder of a backbone this medrep does not know
    (root / "unknown" / "encoder.json").write_text(json.dumps(info))
    return root


def test_cli_segment_folder(cli_setup, capsys):
    out = cli_setup / "seg.json"
    argv = ["evaluate", "segment", "--encoder", str(cli_setup / "enc"), "--data", str(cli_setup / "data"), "--num-classes", "2",
            "--fractions", "0.5", "1.0", "--steps", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv + ["--frozen-encoder"]) == 0
    text = capsys.readouterr().out
    assert "pretrained" in text and "class_1" in text and "written" in text
    saved = json.loads(out.read_text())
    assert saved["options"]["frozen_encoder"] is True and saved["data"]["source"] == "folder"
    assert [r["n_train"] for r in saved["results"].values()] == [2, 4]
    assert main(argv + ["--random-init"]) == 0 and "random-init" in capsys.readouterr().out


@pytest.mark.parametrize("extra, needle", [
    (["--encoder", "{root}/unknown", "--num-classes", "2"], "--encoder: {root}/unknown is an encoder of backbone 'resnet9000'"),
    (["--encoder", "{root}/enc"], "--num-classes"),
    (["--encoder", "{root}/enc", "--num-classes", "2", "--spatial-dims", "3"], "--spatial-dims"),
    (["--encoder", "{root}/enc", "--num-classes", "2", "--patch", "64"], "larger than every training item"),
])
def test_cli_segment_errors_exit_2(cli_setup, capsys, extra, needle):
    argv = ["evaluate", "segment", "--data", str(cli_setup / "data"), "--steps", "1", "--device", "cpu"]
    assert main(argv + [e.format(root=cli_setup) for e in extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medrep: error:") and needle.format(root=cli_setup) in err


def test_cli_segment_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "segment", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "colin27-lobes" in text and "imagesTr" in text and "--frozen-encoder" in text
