"""Checkpoints a long run can live with: a bounded number on disk, never a truncated one, and a
run killed with SIGKILL at any moment resumes to the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_recipe

import medrep
from medrep.engine import pretrain
from medrep.engine.train import AtomicCheckpointIO
from medrep.recipe import load_recipe

SRC = Path(__file__).resolve().parents[2] / "src"


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(("keep", "left"), [(2, ["last.ckpt", "step4.ckpt", "step6.ckpt"]), (0, ["last.ckpt"]),
                                            (None, ["last.ckpt", "step2.ckpt", "step4.ckpt", "step6.ckpt"])])
def test_keep_checkpoints_keeps_the_newest_step_files_besides_last(tiny_npz, tmp_path, keep, left):
    trainer = {"max_steps": 6, "checkpoint_every_n_steps": 2, "keep_checkpoints": keep}
    run = pretrain(load_recipe(tiny_recipe(tiny_npz, tmp_path / "run", trainer=trainer)))
    assert _names(run) == left
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


@pytest.mark.slow
def test_a_resumed_run_goes_on_removing_the_oldest(tiny_npz, tmp_path):
    def trainer(steps):
        return {"max_steps": steps, "checkpoint_every_n_steps": 2, "keep_checkpoints": 2}

    run = pretrain(load_recipe(tiny_recipe(tiny_npz, tmp_path / "run", trainer=trainer(4))))
    pretrain(load_recipe(tiny_recipe(tiny_npz, run, trainer=trainer(8))), resume=True)
    assert _names(run) == ["last.ckpt", "step6.ckpt", "step8.ckpt"]


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.zeros(1000)}}, path)
    real_save = torch.save

    def dies_halfway(obj, fh):
        real_save(obj, fh)
        fh.truncate(fh.tell() // 2)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.ones(1000)}}, path)
    back = torch.load(path, weights_only=True)
    assert back["global_step"] == 1 and torch.equal(back["state_dict"]["w"], torch.zeros(1000))
    assert _names(tmp_path) == ["last.ckpt"]


def _start(recipe_file: Path, log: Path, resume: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "medrep", "pretrain", "--recipe", str(recipe_file), *(["--resume"] if resume else [])]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_end(tiny_npz, tmp_path):
    """Whenever the kill lands (mid-step, mid-save, or after the run ended), every checkpoint left
    loads and --resume finishes; a checkpoint every step makes a kill during a save likely."""
    run, steps, keep = tmp_path / "run", 12, 2
    trainer = {"max_steps": steps, "checkpoint_every_n_steps": 1, "keep_checkpoints": keep}
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(tiny_recipe(tiny_npz, run, trainer=trainer)))
    last = run / "checkpoints" / "last.ckpt"
    proc = _start(recipe_file, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.exists() or proc.poll() == 0, (tmp_path / "first.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # a no-op on a process that already ended
    finally:
        proc.kill()
        proc.wait()
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        assert torch.load(ckpt, weights_only=True)["global_step"] >= 1, ckpt
    # what a kill during a save leaves, planted so that every pass sees one
    (run / "checkpoints" / ".last.ckpt.tmp-999999").write_bytes(b"half a checkpoint")

    second = _start(recipe_file, tmp_path / "second.log", resume=True)
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == steps
    assert _names(run) == ["last.ckpt", f"step{steps - 1}.ckpt", f"step{steps}.ckpt"]
    assert medrep.load_encoder(run).out_dim > 0
