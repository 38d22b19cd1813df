"""A real 2-process CPU (gloo) DDP pretraining run through the CLI, launched by Lightning.

The CLI runs under a small wrapper that reports, at interpreter exit, how many gloo work threads
are still alive: they must be 0 on both ranks, since a live one can abort the process (rc -6)
while the interpreter finalises (see medrep.losses.distributed.shutdown_process_group)."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import make_npz

PROBE = """import atexit, sys
from medrep.losses.distributed import gloo_threads
atexit.register(lambda: print("gloo threads at exit:", gloo_threads(), file=sys.stderr))
from medrep.cli import main
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_process_ddp_pretrain_on_cpu(tmp_path):
    npz = make_npz(tmp_path / "tiny.npz", n=64)
    run = tmp_path / "run"
    probe = tmp_path / "medrep_probe.py"  # Lightning relaunches this same script for rank 1
    probe.write_text(PROBE)
    cmd = [sys.executable, str(probe), "pretrain", "--recipe", "simclr_pneumoniamnist", "--data", str(npz),
           f"trainer.output_dir={run}", "trainer.max_steps=2", "trainer.progress_bar=false", "data.batch_size=8",
           "model.name=resnet10", "method.proj_hidden_dim=32", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp", "trainer.checkpoint_every_n_steps=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout  # Lightning really started two ranks
    assert proc.stderr.count("gloo threads at exit: 0") == 2, proc.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert (run / "encoder" / "encoder.safetensors").is_file()


@pytest.mark.slow
def test_two_process_ddp_taco_with_its_batch_sampler(tmp_path):
    """TaCo's P x K batch sampler under Lightning's DDP: Lightning rebuilds it over a DistributedSampler."""
    import numpy as np
    from helpers import phantom

    from medrep.data.synthetic import write_png

    image, _ = phantom(40)
    for k in range(4):
        write_png(tmp_path / "pngs" / f"img{k}.png", (255 * np.rot90(image, k)).astype(np.uint8))
    run = tmp_path / "run"
    probe = tmp_path / "medrep_probe.py"
    probe.write_text(PROBE)
    cmd = [sys.executable, str(probe), "pretrain", "--recipe", "taco_medical", "--data", str(tmp_path / "pngs"),
           f"trainer.output_dir={run}", "trainer.max_steps=2", "trainer.progress_bar=false", "data.sets=[]", "data.size=32",
           "data.crop=null", "data.batch_size=4", "data.tasks_per_batch=2", "data.families=[generative]", "model.name=resnet10",
           "model.widen_factor=0.25", "method.proj_hidden_dim=16", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp", "trainer.checkpoint_every_n_steps=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_two_process_ddp_unimedi_on_mixed_2d_and_3d_parts(tmp_path):
    """UniMedI's mixed batches under Lightning's DDP: the part sampler rebuilt over a DistributedSampler,
    CLIP gathered and DINO centres reduced across ranks, and no unused parameter (no find_unused_parameters)."""
    import yaml
    from helpers import require_text_model

    from medrep.data.sources.mixed import mixed_example

    require_text_model()
    recipe = {
        "method": {"name": "unimedi", "dino_out": 16, "dino_hidden_dim": 16, "dino_bottleneck_dim": 8, "embed_dim": 16,
                   "proj_hidden_dim": 16, "max_length": 32},
        "model": {"name": "vit2d3d", "img_size": 32, "depth": 8, "patch_size": 8, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1,
                  "num_heads": 2, "select_k": 2},
        "data": mixed_example(tmp_path / "data") | {"batch_size": 4},
    }
    (tmp_path / "unimedi.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    probe = tmp_path / "medrep_probe.py"
    probe.write_text(PROBE)
    cmd = [sys.executable, str(probe), "pretrain", "--recipe", str(tmp_path / "unimedi.yaml"), f"trainer.output_dir={run}",
           "trainer.max_steps=2", "trainer.progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
           "trainer.checkpoint_every_n_steps=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2 and state["state_dict"]["method.cls_center"].abs().sum() > 0
