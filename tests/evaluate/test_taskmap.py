"""evaluate taskmap (TaCo): the metric functions on hand-made features, the reading modes, the sweeps,
the slices from image sources, the analysis end to end, and the CLI."""

import csv
import json

import numpy as np
import pytest
import torch
from helpers import make_npz, phantom

from medrep.checkpoint import export_encoder
from medrep.cli import main
from medrep.data.synthetic import write_example_image
from medrep.errors import MedrepError
from medrep.evaluate.task_features import PairReader, SweepPairs, check_read, embed_pairs
from medrep.evaluate.task_metrics import (
    cluster_scores,
    family_similarity,
    knn_task_accuracy,
    nearest_tasks,
    task_similarity,
    trajectory_scores,
)
from medrep.evaluate.task_slices import TaskSlice, load_task_slices, slice_splits
from medrep.evaluate.taskmap import choose_tasks, default_sweep, taskmap
from medrep.models import build_backbone
from medrep.tasks import get_task, task_names


def tiny_encoder(in_channels: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone({"name": "resnet10", "spatial_dims": 2, "in_channels": in_channels, "widen_factor": 0.25})


def slices(n: int = 8, size: int = 32, masks: bool = True) -> list[TaskSlice]:
    """Phantoms turned a quarter per image, of two data sets; the last half of them held out."""
    image, mask = phantom(size)
    return [TaskSlice(np.rot90(image, k % 4).copy(), np.rot90(mask, k % 4).copy() if masks else None, f"set{k % 2}", f"img{k}",
                      "test" if k >= n // 2 else "train") for k in range(n)]


def clusters(k: int, per: int = 10, f: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight clusters around orthogonal directions."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.eye(f)[c] * 5 + 0.05 * rng.normal(size=(per, f)) for c in range(k)])
    return x, np.repeat(np.arange(k), per)


# ---------------------------------------------------------------- metrics on constructed features


def test_similarity_is_symmetric_with_ones_on_the_diagonal_and_the_cosine_of_centroids():
    x = np.array([[1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 3, 0], [1, 1, 0], [2, 2, 0]], dtype=float)
    sim = task_similarity(x, np.array([0, 0, 1, 1, 2, 2]), 3)
    np.testing.assert_allclose(sim, sim.T)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(sim, [[1, 0, 2 ** -0.5], [0, 1, 2 ** -0.5], [2 ** -0.5, 2 ** -0.5, 1]], atol=1e-12)
    with pytest.raises(MedrepError, match=r"tasks \[3\] have no sample"):
        task_similarity(x, np.array([0, 0, 1, 1, 2, 2]), 4)


def test_nearest_tasks_and_family_similarity_read_the_matrix():
    sim = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.5], [0.1, 0.5, 1.0]])
    near = nearest_tasks(sim, ["a", "b", "c"], k=2)
    assert [n["task"] for n in near["a"]] == ["b", "c"] and [n["task"] for n in near["c"]] == ["b", "a"]
    assert near["b"][0] == {"task": "a", "similarity": 0.9}
    assert family_similarity(sim, ["f", "f", "g"]) == {"within_family": 0.9, "between_families": pytest.approx(0.3)}
    assert family_similarity(sim, ["f", "g", "h"])["within_family"] is None


def test_kmeans_of_separated_features_scores_one_and_of_one_class_nothing():
    x, y = clusters(3)
    scores = cluster_scores(x, y)
    assert scores["k"] == 3 and scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    assert cluster_scores(x, np.array(["same"] * len(x))) == {"k": 1, "nmi": None, "ari": None}
    shuffled = cluster_scores(x, np.random.default_rng(0).permutation(y))
    assert shuffled["ari"] < 0.2  # labels unrelated to the clusters


def test_knn_task_accuracy_is_one_on_separable_features_and_drops_unfitted_tasks():
    x, y = clusters(3, per=12)
    fit, test = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    out = knn_task_accuracy(x[fit], y[fit], x[test], y[test])
    assert out["accuracy"] == 1.0 and out["accuracy_k1"] == 1.0 and out["n_fit"] == 18 and out["n_test"] == 18 and out["dropped"] == 0
    out = knn_task_accuracy(x[fit & (y < 2)], y[fit & (y < 2)], x[test], y[test], k=3)
    assert out["dropped"] == 6 and out["n_test"] == 12 and out["accuracy"] == 1.0 and out["k"] == 3
    wrong = knn_task_accuracy(x[fit], (y[fit] + 1) % 3, x[test], y[test])
    assert wrong["accuracy"] == 0.0


def test_trajectory_spearman_is_one_when_monotone_and_undefined_when_flat_or_zero():
    s = np.linspace(0, 1, 11)
    angle = np.pi / 2 * s  # an embedding turning steadily away from its start
    away = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(s)], axis=1)
    turn = np.pi / 2 * np.sin(np.pi * s)  # out and back to the start: no steady trend
    back = np.stack([np.cos(turn), np.sin(turn), np.zeros_like(s)], axis=1)
    out = trajectory_scores(np.stack([away, away * 3.0]), s)
    assert out["spearman"] == {"mean": 1.0, "std": 0.0} and out["spearman_undefined"] == 0
    np.testing.assert_allclose(out["distance_mean"], 1 - np.cos(angle), atol=1e-12)
    assert abs(trajectory_scores(np.stack([back]), s)["spearman"]["mean"]) < 0.2
    flat = trajectory_scores(np.stack([away, np.ones_like(away)]), s)
    assert flat["spearman"]["mean"] == 1.0 and flat["spearman_undefined"] == 1 and flat["spearman_per_image"][1] is None
    zero_start = away * s[:, None]  # the diff reading of an identity pair at strength 0
    zero = trajectory_scores(np.stack([zero_start]), s)
    assert zero["spearman"]["mean"] is None and zero["distance_mean"][0] is None and zero["spearman_euclidean"]["mean"] == 1.0
    with pytest.raises(MedrepError, match="3 or more strengths"):
        trajectory_scores(np.zeros((1, 2, 3)), [0, 1])


# ---------------------------------------------------------------- reading modes, sweeps, slices


def test_reading_modes_concat_diff_and_gray_halves():
    enc = tiny_encoder(1).eval()
    pairs = torch.rand(2, 6, 32, 32)
    x, y = pairs[:, :3].mean(1, keepdim=True), pairs[:, 3:].mean(1, keepdim=True)
    with torch.no_grad():
        ex, ey = enc(x), enc(y)
        torch.testing.assert_close(PairReader(enc, "concat")(pairs), torch.cat([ex, ey], 1))
        torch.testing.assert_close(PairReader(enc, "diff")(pairs), ey - ex)
    assert check_read(None, 6) == "pair" and check_read(None, 1) == "concat" and check_read("diff", 3) == "diff"
    with pytest.raises(MedrepError, match="pair reads a stacked.*reads 1"):
        check_read("pair", 1)
    with pytest.raises(MedrepError, match="read pair"):
        check_read("concat", 6)


def test_a_sweep_keeps_each_images_random_choices_across_strengths():
    sweep = SweepPairs(get_task("rotate"), slices()[:2], np.linspace(0, 1, 5), seed=3)
    first = sweep[(0, 0)]["image"]
    torch.testing.assert_close(first[:3], first[3:])  # rotation by 0 degrees
    assert not torch.equal(sweep[(0, 4)]["image"][3:], first[3:])
    torch.testing.assert_close(sweep[(1, 2)]["image"], sweep[(1, 2)]["image"])
    # the same direction at every strength: the rotated halves turn one way
    x, meta = embed_pairs(torch.nn.Flatten(), sweep, sweep.keys(), batch_size=4, progress=False)
    assert x.shape == (10, 6 * 32 * 32) and meta["step"].tolist() == [0, 1, 2, 3, 4] * 2


def test_slices_from_an_npz_and_a_folder_without_splits(tmp_path):
    npz = make_npz(tmp_path / "tiny.npz", n=16, size=20)  # 16 train, 8 test images
    folder = tmp_path / "imgs"
    for i in range(8):
        write_example_image(folder / f"{i}.png", 40 + 20 * i, i)
    got = load_task_slices([npz, folder], size=24, max_images=5, seed=0, progress=False)
    by = {(s.source, s.split): [x for x in got if (x.source, x.split) == (s.source, s.split)] for s in got}
    assert {k: len(v) for k, v in by.items()} == {("tiny", "train"): 5, ("tiny", "test"): 5, ("imgs", "train"): 5, ("imgs", "test"): 2}
    assert all(s.image.shape == (24, 24) and s.image.dtype == np.float32 and 0 <= s.image.min() and s.image.max() <= 1 for s in got)
    assert slice_splits(got) == [s.split for s in got] and got[0].mask is None
    with pytest.raises(MedrepError, match="train or test"):
        slice_splits(got, ["val"] * len(got))


#: one task per family, one of them needing a mask: small enough for the end-to-end runs
THREE = ["segment_structure", "denoise_gaussian", "rotate"]


def test_tasks_chosen_by_family_leave_out_mask_tasks_when_no_slice_has_a_mask():
    tasks, skipped = choose_tasks(slices(masks=False))
    needing = [n for n in task_names() if get_task(n).needs_mask]
    assert skipped == needing and not set(needing) & {t.name for t in tasks}
    assert choose_tasks(slices())[1] == []
    assert {"rotate", "denoise_gaussian"} <= set(default_sweep())


# ---------------------------------------------------------------- end to end


def test_taskmap_computes_every_metric_and_writes_its_files(tmp_path):
    out = taskmap(tiny_encoder(6), slices(), tasks=THREE, samples_per_task=6, heldout_set="set1", sweep_images=2, method="pca",
                  out=tmp_path, progress=False)
    assert out["read"] == "pair" and out["samples"] == {"test": 18, "train": 18}
    sim = np.asarray(out["similarity"]["matrix"])
    assert sim.shape == (3, 3) and np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 1)
    assert all(len(v) == 2 for v in out["nearest_tasks"].values())
    for key in ("family", "task", "dataset"):
        c = out["clustering"][key]
        assert 0 <= c["nmi"] <= 1 and -1 <= c["ari"] <= 1 and -1 <= c["silhouette"]["features"] <= 1
    assert 0 <= out["knn"]["heldout_images"]["accuracy"] <= 1 and out["knn"]["heldout_set"]["set"] == "set1"
    assert out["knn"]["heldout_set"]["n_fit"] + out["knn"]["heldout_set"]["n_test"] < 36  # only the other set fits
    assert set(out["trajectories"]) == set(default_sweep()) and out["trajectories"]["rotate"]["images"] == 2
    assert all(-1 <= t["spearman"]["mean"] <= 1 for t in out["trajectories"].values())
    for name in ("similarity.png", "map_family.png", "map_task.png", "map_dataset.png", "trajectories.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(tmp_path / "map.csv")))
    assert len(rows) == 18 and {r["dataset"] for r in rows} <= {"set0", "set1"} and {r["family"] for r in rows} == {
        "semantic", "generative", "transformation"}
    saved = json.loads((tmp_path / "taskmap.json").read_text())
    assert saved["clustering"] == out["clustering"] and "kNN task accuracy, held-out set set1" in out["table"]
    again = taskmap(tiny_encoder(6), slices(), tasks=THREE, samples_per_task=6, heldout_set="set1", sweep_images=2, method="pca",
                    out=tmp_path / "again", progress=False)
    assert again["clustering"] == out["clustering"] and again["trajectories"] == out["trajectories"]  # seeded


def test_a_one_channel_encoder_reads_pairs_as_a_baseline_and_bad_input_is_named(tmp_path):
    out = taskmap(tiny_encoder(1), slices(masks=False), families=["generative"], read="diff", samples_per_task=4,
                  sweep=["denoise_gaussian"], sweep_images=1, method="pca", out=tmp_path, progress=False)
    assert out["read"] == "diff" and out["skipped_tasks"] == [] and len(out["tasks"]) == len(task_names("generative"))
    assert out["trajectories"]["denoise_gaussian"]["spearman"]["mean"] is None  # e(x) - e(x) = 0 at strength 0
    assert out["trajectories"]["denoise_gaussian"]["spearman_euclidean"]["mean"] is not None
    for kwargs, match in ((dict(read="pair"), "pair reads"), (dict(tasks=["rotat"]), "did you mean rotate"),
                          (dict(heldout_set="set9"), "no data set 'set9'"), (dict(sweep=["segment_structure"]), "needs a mask"),
                          (dict(families=["colour"]), "unknown family")):
        with pytest.raises(MedrepError, match=match):
            taskmap(tiny_encoder(1), slices(masks=False), out=tmp_path, progress=False, **kwargs)


@pytest.fixture
def exported(tmp_path):
    recipe = {"method": {"name": "taco"}, "data": {"intensity": "minmax", "spatial_dims": 2}}
    export_encoder(tiny_encoder(6), tmp_path / "taco" / "encoder", recipe)
    export_encoder(tiny_encoder(1), tmp_path / "simclr" / "encoder", {**recipe, "method": {"name": "simclr"}})
    return tmp_path


def test_cli_writes_the_analysis_and_refuses_bad_input(exported, capsys):
    a, b = make_npz(exported / "a.npz", n=8, size=32), make_npz(exported / "b.npz", n=8, size=32, seed=1)
    argv = ["evaluate", "taskmap", "--data", str(a), str(b), "--size", "32", "--samples-per-task", "4", "--sweep-images", "2",
            "--method", "pca", "--device", "cpu", "--families", "semantic"]
    assert main([*argv, "--encoder", str(exported / "taco"), "--heldout-set", "b", "--out", str(exported / "map")]) == 0
    printed = capsys.readouterr().out
    assert "kNN task accuracy, held-out set b" in printed and "Spearman(strength, cosine distance), rotate" in printed
    result = json.loads((exported / "map" / "taskmap.json").read_text())
    assert result["knn"]["heldout_set"]["set"] == "b" and set(result["datasets"]) == {"a", "b"}
    needing = [n for n in task_names("semantic") if get_task(n).needs_mask]
    assert result["skipped_tasks"] == needing and result["datasets"]["a"] == {"train": 8, "test": 4}
    for extra in (["--encoder", str(exported / "taco"), "--tasks", "rotat"], ["--encoder", str(exported / "taco"), "--families", "x"],
                  ["--encoder", str(exported / "simclr"), "--read", "pair"], ["--encoder", str(exported / "taco"), "--read", "concat"],
                  ["--encoder", str(exported / "taco"), "--heldout-set", "c"]):
        assert main([*argv, *extra]) == 2
        assert "medrep: error:" in capsys.readouterr().err
