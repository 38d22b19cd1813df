import csv
import subprocess
import sys

import numpy as np
import pytest

from medrep.errors import MedrepError
from medrep.evaluate.embedding_map import (
    LEGEND_CLASSES,
    l2_normalise,
    map_labels,
    plot_map,
    project,
    silhouettes,
    write_map_csv,
)


def _clusters(n_per: int = 20, f: int = 8, k: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight clusters around orthogonal directions, so cosine geometry separates them."""
    rng = np.random.default_rng(seed)
    centres = np.eye(f)[:k] * 5
    x = np.concatenate([c + 0.1 * rng.normal(size=(n_per, f)) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_l2_normalise_gives_unit_rows_and_keeps_a_zero_row():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(x), [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])


def test_pca_equals_the_sklearn_reference_on_normalised_features():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(1).normal(size=(30, 6))
    ref = PCA(n_components=2, random_state=3).fit_transform(x / np.linalg.norm(x, axis=1, keepdims=True))
    got = project(x, method="pca", seed=3)
    assert got.shape == (30, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(project(7.0 * x, method="pca", seed=3), got, rtol=1e-5, atol=1e-6)  # lengths do not matter


@pytest.mark.slow  # the first UMAP call compiles numba code (seconds)
def test_umap_is_deterministic_with_a_seed():
    x, y = _clusters(15, k=3)
    a = project(x, method="umap", seed=0, n_neighbors=5)
    b = project(x, method="umap", seed=0, n_neighbors=5)
    assert a.shape == (45, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, project(x, method="umap", seed=1, n_neighbors=5))
    assert silhouettes(x, a, y)["map"] > 0.5  # three separate clusters stay separate


@pytest.mark.parametrize(
    "kwargs, where",
    [
        (dict(method="tsne"), "method"),
        (dict(n_neighbors=1), "n_neighbors"),
        (dict(n_neighbors=12), "n_neighbors"),  # not fewer than the 12 points
        (dict(min_dist=1.5), "min_dist"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_options_name_the_option(kwargs, where):
    x = np.random.default_rng(0).normal(size=(12, 4))
    with pytest.raises(MedrepError) as err:
        project(x, **kwargs)
    assert err.value.where == where


def test_bad_features_are_refused_before_projection():
    with pytest.raises(MedrepError, match="at least 2 dimensions"):
        project(np.ones((10, 1)), method="pca")
    with pytest.raises(MedrepError, match="at least 4 points"):
        project(np.eye(3), method="umap", n_neighbors=2)
    with pytest.raises(MedrepError, match="NaN"):
        project(np.array([[1.0, np.nan], [0.0, 1.0]]), method="pca")


def test_missing_umap_learn_tells_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError
    with pytest.raises(MedrepError, match="pip install umap-learn") as err:
        project(np.random.default_rng(0).normal(size=(12, 4)), method="umap", n_neighbors=5)
    assert "pca" in str(err.value)


def test_labels_are_integer_classes_or_names():
    y, names = map_labels([1, 0, 1], 3, ["normal", "pneumonia"])
    assert y.tolist() == [1, 0, 1] and names.tolist() == ["pneumonia", "normal", "pneumonia"]
    assert map_labels(np.array([[2.0], [0.0]]), 2)[1].tolist() == ["2", "0"]
    y, names = map_labels(["chest", "brain"], 2)
    assert y.tolist() == names.tolist() == ["chest", "brain"]
    with pytest.raises(MedrepError, match="cover classes \\[2\\]"):
        map_labels([0, 2], 2, ["a", "b"])
    with pytest.raises(MedrepError, match="names already"):
        map_labels(["a", "b"], 2, ["x", "y"])
    with pytest.raises(MedrepError, match="integer classes or names"):
        map_labels([0.5, 1.0], 2)
    with pytest.raises(MedrepError, match="one label per point"):
        map_labels([0, 1], 3)


def test_silhouettes_are_high_for_separate_clusters_and_undefined_for_one_class():
    x, y = _clusters()
    coords = project(x, method="pca")
    scores = silhouettes(x, coords, y)
    assert scores["features"] > 0.9 and scores["map"] > 0.9
    assert silhouettes(x, coords, np.zeros(len(y), dtype=int)) == {"features": None, "map": None}


def test_csv_has_one_row_per_point_with_names_and_ids(tmp_path):
    coords = np.arange(8, dtype=np.float32).reshape(4, 2)
    y, names = map_labels([0, 1, 1, 0], 4, ["a", "b"])
    path = write_map_csv(tmp_path / "m.csv", coords, y, names, index=[3, 5, 7, 9], ids=["p3", "p5", "p7", "p9"], id_column="path")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4 and list(rows[0]) == ["index", "x", "y", "label", "label_name", "path"]
    assert rows[1] == {"index": "5", "x": "2", "y": "3", "label": "1", "label_name": "b", "path": "p5"}
    plain = list(csv.DictReader(write_map_csv(tmp_path / "p.csv", coords, ["t1", "t2", "t1", "t3"]).open()))
    assert list(plain[0]) == ["index", "x", "y", "label"] and plain[3]["label"] == "t3"
    with pytest.raises(MedrepError, match="3 values for 4 points"):
        write_map_csv(tmp_path / "bad.csv", coords, y, ids=["a", "b", "c"])


def test_plot_writes_a_png_for_few_and_many_classes(tmp_path):
    x, y = _clusters(5, f=4, k=3)
    coords = project(x, method="pca")
    png = plot_map(tmp_path / "few.png", coords, y, map_labels(y, len(y), ["a", "b", "c"])[1], title="enc, test, PCA", axis="PCA")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tasks = np.array([f"task{i}" for i in range(LEGEND_CLASSES + 5)]).repeat(2)
    many = plot_map(tmp_path / "many.png", np.random.default_rng(0).normal(size=(len(tasks), 2)), tasks)
    assert many.stat().st_size > 0


@pytest.mark.slow
def test_importing_the_map_code_does_not_import_umap():
    code = ("import sys\nimport medrep.evaluate.split_map, medrep.cli\n"
            "print(sorted(m for m in ('umap', 'numba') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
