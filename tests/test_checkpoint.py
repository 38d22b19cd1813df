"""The library apart from the trainer: an exported encoder and a run's whole method load, and every
evaluation module imports, in a fresh interpreter without Lightning or medrep.engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe

import medrep
from medrep.checkpoint import export_encoder, load_encoder, load_method
from medrep.engine import pretrain
from medrep.models import build_backbone
from medrep.recipe import load_recipe

TRAINER_MODULES = ("lightning", "pytorch_lightning", "medrep.engine")


def run_fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter importing this checkout's medrep; return the JSON it prints last."""
    src = str(Path(medrep.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_top_level_names_are_the_library_loaders():
    assert medrep.load_encoder is load_encoder and medrep.load_method is load_method
    assert {"load_encoder", "load_method"} <= set(dir(medrep))
    with pytest.raises(AttributeError):
        medrep.no_such_name  # noqa: B018


@pytest.mark.slow
def test_encoder_and_method_load_without_the_trainer(tiny_npz, tmp_path):
    run = pretrain(load_recipe(tiny_recipe(tiny_npz, tmp_path / "run")))
    export_encoder(build_backbone({"name": "resnet10", "spatial_dims": 2}), tmp_path / "enc")
    x = torch.linspace(0, 1, 256).reshape(1, 1, 16, 16)
    with torch.no_grad():
        want = {"encoder": float(load_encoder(tmp_path / "enc")(x).sum()), "method": float(load_method(run).encoder(x).sum())}
    got = run_fresh(f"""
import json, sys
import medrep
light = "torch" not in sys.modules
import torch
x = torch.linspace(0, 1, 256).reshape(1, 1, 16, 16)
encoder = medrep.load_encoder({str(tmp_path / "enc")!r})
method = medrep.load_method({str(run)!r})
with torch.no_grad():
    out = {{"encoder": float(encoder(x).sum()), "method": float(method.encoder(x).sum())}}
print(json.dumps({{"light": light, "eval": not encoder.training and not method.training, "out": out,
                  "trainer": [m for m in {TRAINER_MODULES!r} if m in sys.modules]}}))
""")
    assert got["light"], "import medrep alone should not import torch"
    assert got["eval"] and got["trainer"] == []
    assert got["out"] == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_evaluation_modules_import_without_the_trainer():
    got = run_fresh(f"""
import importlib, json, pkgutil, sys
import medrep.checkpoint, medrep.evaluate
names = [m.name for m in pkgutil.iter_modules(medrep.evaluate.__path__, "medrep.evaluate.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({{"modules": names, "trainer": [m for m in {TRAINER_MODULES!r} if m in sys.modules]}}))
""")
    assert {"medrep.evaluate.frozen", "medrep.evaluate.encoder", "medrep.evaluate.crops", "medrep.evaluate.segment"} <= set(got["modules"])
    assert got["trainer"] == []
