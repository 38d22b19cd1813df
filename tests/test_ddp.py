"""A real 2-process CPU (gloo) DDP pretraining run through the CLI, launched by Lightning."""

import os
import subprocess
import sys

import torch
from conftest import make_npz


def test_two_process_ddp_pretrain_on_cpu(tmp_path):
    npz = make_npz(tmp_path / "tiny.npz", n=64)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "medrep", "pretrain", "--recipe", "simclr_pneumoniamnist", "--data", str(npz),
           f"trainer.output_dir={run}", "trainer.max_steps=2", "trainer.progress_bar=false", "data.batch_size=8",
           "model.name=resnet10", "method.proj_hidden_dim=32", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp", "trainer.checkpoint_every_n_steps=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout  # Lightning really started two ranks
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert (run / "encoder" / "encoder.safetensors").is_file()
