"""Tables and JSON output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medrep.errors import MedrepError
from medrep.evaluate import format_table, probe_rows, summarise, write_json


def test_format_table_plain_and_markdown():
    rows = [{"name": "linear", "n": 10, "auroc": {"mean": 0.91234, "std": 0.01}}, {"name": "knn (k=20)", "n": 2000, "auroc": 0.5}]
    text = format_table(rows, ["name", "n", "auroc", "missing"])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "n", "auroc", "missing"]
    assert "0.9123 ± 0.0100" in lines[2] and lines[3].startswith("knn (k=20)")
    assert lines[2].index("10") + 2 == lines[3].index("2000") + 4  # numbers right-aligned
    md = format_table(rows, ["name", "auroc.mean"], markdown=True).splitlines()
    assert md[0].startswith("| name") and md[1].endswith(":|") and "0.9123" in md[2]
    assert len({len(line) for line in md}) == 1
    with pytest.raises(MedrepError):
        format_table(rows, [])


def test_write_json_converts_numpy_and_sorts(tmp_path):
    obj = {"z": np.float32(0.5), "a": np.arange(3), "n": np.int64(4), 1: float("nan"), "b": (True,)}
    path = write_json(tmp_path / "a" / "b" / "r.json", obj)
    text = path.read_text()
    data = json.loads(text)
    assert data == {"z": 0.5, "a": [0, 1, 2], "n": 4, "1": None, "b": [True]}
    assert list(data) == sorted(data) and text.endswith("\n")


def test_summarise_and_probe_rows():
    assert summarise([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    assert summarise([0.7]) == {"mean": 0.7, "std": 0.0}
    with pytest.raises(MedrepError):
        summarise([])
    rows = probe_rows({"probe": "knn", "k": 20, "n_train": 5, "auroc": 0.9, "accuracy": 0.8})
    assert rows[0]["probe"] == "knn (k=20)"
    with pytest.raises(MedrepError):
        probe_rows({})
