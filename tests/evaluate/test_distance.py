"""ISImed distance diagnostic: correlations match scipy, an embedding that *is* the crop position
gives rho = 1 (through the file's affine, in mm), a random embedding gives rho near 0."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from medrep.checkpoint import export_encoder
from medrep.cli import main
from medrep.errors import MedrepError
from medrep.evaluate.distance import distance_correlation, distance_eval, sample_centres
from medrep.models import build_backbone

SHAPE = (20, 24, 18)
SPACING = (1.0, 2.0, 3.0)


class CentreCoordinates(torch.nn.Module):
    """Toy encoder: reads the centre voxel of a crop from a volume whose value encodes its index
    (v = 10000 i + 100 j + k) and returns that index in mm: its embedding IS the crop position."""

    spatial_dims = 3
    preprocess = {"intensity": "none"}

    def forward(self, x):
        c = [s // 2 for s in x.shape[2:]]
        v = x[:, 0, c[0], c[1], c[2]].round().long()
        idx = torch.stack([v // 10000, (v // 100) % 100, v % 100], dim=1).float()
        return idx * torch.tensor(SPACING)


class RandomEmbedding(torch.nn.Module):
    spatial_dims = 3
    preprocess = {"intensity": "none"}

    def __init__(self):
        super().__init__()
        self.gen = torch.Generator().manual_seed(1)

    def forward(self, x):
        return torch.randn(x.shape[0], 16, generator=self.gen)


@pytest.fixture(scope="module")
def coded_volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distance")
    i, j, k = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    vol = (10000 * i + 100 * j + k).astype(np.float32)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    nib.save(nib.Nifti1Image(vol, affine), folder / "coded.nii.gz")
    return folder


def test_correlation_matches_scipy_and_is_one_for_positions():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 100, size=(40, 3))
    emb = pos * 2.0 + 5.0  # a scaled, shifted copy of the positions
    stats = distance_correlation(emb, pos)
    assert stats["spearman_rho"] == pytest.approx(1.0) and stats["pearson_r"] == pytest.approx(1.0)
    noisy = pos + rng.normal(0, 20, size=pos.shape)
    stats = distance_correlation(noisy, pos)
    i, j = np.triu_indices(40, 1)
    d_mm = np.linalg.norm(pos[i] - pos[j], axis=1)
    d_emb = np.linalg.norm(noisy[i] - noisy[j], axis=1)
    assert stats["spearman_rho"] == pytest.approx(spearmanr(d_mm, d_emb)[0], abs=1e-12)
    assert stats["pearson_r"] == pytest.approx(pearsonr(d_mm, d_emb)[0], abs=1e-12)
    assert stats["n_pairs"] == 40 * 39 // 2 and 0.3 < stats["spearman_rho"] < 0.99
    with pytest.raises(MedrepError):
        distance_correlation(emb[:2], pos[:2])


def test_embedding_equal_to_position_gives_rho_one(coded_volume):
    res = distance_eval(CentreCoordinates(), coded_volume / "coded.nii.gz", crops=60, crop=5, min_intensity=-1,
                        progress=False, out=coded_volume / "pos.json")
    assert res["positions"] == "affine"
    assert res["spearman_rho"] > 0.9999 and res["pearson_r"] > 0.9999
    assert (coded_volume / "pos.png").stat().st_size > 1000
    saved = json.loads((coded_volume / "pos.json").read_text())
    assert saved["spearman_rho"] == pytest.approx(res["spearman_rho"]) and saved["plot"].endswith("pos.png")


def test_voxel_distances_would_not_give_one(coded_volume):
    """Anisotropic spacing matters: the same embedding against voxel (not mm) distances ranks differently."""
    rng_centres = sample_centres(np.ones(SHAPE, bool), (5, 5, 5), 60, seed=0)
    mm = rng_centres * np.asarray(SPACING)
    stats = distance_correlation(mm, rng_centres.astype(float))
    assert stats["spearman_rho"] < 0.99


def test_random_embedding_gives_small_rho(coded_volume):
    res = distance_eval(RandomEmbedding(), coded_volume / "coded.nii.gz", crops=60, crop=5, min_intensity=-1, progress=False)
    assert abs(res["spearman_rho"]) < 0.1


def test_sample_centres_seeded_and_inside():
    mask = np.zeros((30, 30, 30), bool)
    mask[5:25, 5:25, 5:25] = True
    a = sample_centres(mask, (8, 8, 8), 50, seed=3)
    b = sample_centres(mask, (8, 8, 8), 50, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a, axis=0)) == 50
    assert mask[tuple(a.T)].all() and a.min() >= 4 and a.max() <= 30 - 4
    with pytest.raises(MedrepError, match="valid crop centres"):
        sample_centres(mask, (8, 8, 8), 10**5)


def test_cli_distance_resnet_and_help(tmp_path, capsys):
    torch.manual_seed(0)
    export_encoder(build_backbone({"name": "resnet10", "spatial_dims": 3}), tmp_path / "enc",
                   {"method": {"name": "none"}, "data": {"intensity": "percentile", "spatial_dims": 3}})
    rng = np.random.default_rng(0)
    ct = (rng.normal(0, 30, (24, 24, 16)) + np.linspace(-500, 500, 24)[:, None, None]).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, np.diag([0.9, 0.9, 1.5, 1.0])), tmp_path / "ct.nii.gz")
    out = tmp_path / "d" / "ct.json"
    rc = main(["evaluate", "distance", "--encoder", str(tmp_path / "enc"), "--volume", str(tmp_path / "ct.nii.gz"),
               "--crops", "24", "--crop", "8", "--window", "-100", "200", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "spearman_rho" in text
    res = json.loads(out.read_text())
    assert res["preprocess"] == {"intensity": "ct_window", "window": [-100.0, 200.0], "size": res["preprocess"]["size"]}
    assert (tmp_path / "d" / "ct.png").is_file() and res["n_pairs"] == 24 * 23 // 2
    with pytest.raises(SystemExit):
        main(["evaluate", "distance", "--help"])
    assert "--crops" in capsys.readouterr().out
