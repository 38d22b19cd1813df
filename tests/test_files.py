"""Atomic writes: a writer that dies midway leaves the old file whole and no temporary behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medrep.checkpoint import export_encoder
from medrep.files import remove_stray_temporaries, temporary_name, write_atomic, write_bytes_atomic
from medrep.models import build_backbone
from medrep.results import write_json


def _crash_after_half(data: bytes):
    def write(fh):
        fh.write(data[: len(data) // 2])
        fh.flush()  # the half is really in the temporary file when the writer dies
        raise KeyboardInterrupt("killed mid-write")

    return write


def test_a_crash_mid_write_leaves_the_old_file_whole(tmp_path):
    path = write_bytes_atomic(tmp_path / "a.bin", b"old contents")
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, _crash_after_half(b"new contents that never land" * 100))
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_process_killed_mid_write_leaves_the_old_file_and_a_stray_temporary(tmp_path):
    # os._exit runs no cleanup, as SIGKILL: only the write order protects the old file
    path = write_bytes_atomic(tmp_path / "last.ckpt", b"old contents")
    code = ("import os, sys; from medrep.files import write_atomic\n"
            "write_atomic(sys.argv[1], lambda fh: (fh.write(b'new, half'), fh.flush(), os._exit(9)))")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    assert path.read_bytes() == b"old contents"
    stray = [p for p in tmp_path.iterdir() if p != path]
    assert [p.read_bytes() for p in stray] == [b"new, half"] and not stray[0].name.endswith(".ckpt")
    assert remove_stray_temporaries(tmp_path) == stray and list(tmp_path.iterdir()) == [path]


def test_a_crash_on_the_first_write_leaves_no_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "sub" / "a.bin", _crash_after_half(b"x" * 1000))
    assert list((tmp_path / "sub").iterdir()) == []


def test_write_replaces_and_creates_folders(tmp_path):
    path = write_bytes_atomic(tmp_path / "a" / "b.bin", b"1")
    write_bytes_atomic(path, b"22")
    assert path.read_bytes() == b"22" and sorted(p.name for p in path.parent.iterdir()) == ["b.bin"]


def test_stray_temporaries_are_removed_and_nothing_else(tmp_path):
    keep = [write_bytes_atomic(tmp_path / n, b"x") for n in ("last.ckpt", "step5.ckpt", ".hidden", "notes.tmp-1")]
    stray = [tmp_path / ".last.ckpt.tmp-4242", temporary_name(tmp_path / "step5.ckpt")]
    for p in stray:
        p.write_bytes(b"half")
    assert sorted(remove_stray_temporaries(tmp_path)) == sorted(stray)
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_stray_temporaries(tmp_path / "missing") == []


def test_exported_encoder_survives_a_crash_while_writing_the_next_one(tmp_path, monkeypatch):
    encoder = build_backbone({"name": "resnet10", "spatial_dims": 2, "in_channels": 1})
    export_encoder(encoder, tmp_path)
    before = load_file(str(tmp_path / "encoder.safetensors"))
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)

    def dying(path, data):
        write_atomic(path, _crash_after_half(data))

    monkeypatch.setattr("medrep.checkpoint.write_bytes_atomic", dying)
    with pytest.raises(KeyboardInterrupt):
        export_encoder(encoder, tmp_path)
    after = load_file(str(tmp_path / "encoder.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((tmp_path / "encoder.json").read_text())["format"] == "medrep-encoder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.json", "encoder.safetensors"]


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = write_json(tmp_path / "r.json", {"a": 1})
    monkeypatch.setattr("medrep.results.write_bytes_atomic", lambda p, data: write_atomic(p, _crash_after_half(data)))
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"a": 2, "b": list(range(100))})
    assert json.loads(path.read_text()) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
