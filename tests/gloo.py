"""Run a test file's worker in real processes joined over gloo (CPU), for losses that gather.

The workers are the test file itself run as a script (``python test_x.py --worker RANK INIT
OUT``), so they do not depend on how pytest imports test modules. A worker returns a dict,
written as JSON; a worker that fails or hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

WORLD = 2


def run_workers(test_file: str, tmp: Path, world: int = WORLD, timeout: float = 90) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(test_file).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [
        subprocess.Popen([sys.executable, str(Path(test_file).resolve()), "--worker", str(r), str(tmp / "init"),
                          str(tmp / f"out{r}.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            try:
                logs.append(p.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                pytest.fail("gloo worker timed out")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"worker {r} failed (rc={p.returncode}):\n{log}"
    return [json.loads((tmp / f"out{r}.json").read_text()) for r in range(world)]


def worker_main(worker: Callable[[int], dict], world: int = WORLD) -> None:
    """Under ``if __name__ == "__main__"``: join the group, run ``worker(rank)``, write its dict."""
    if len(sys.argv) != 5 or sys.argv[1] != "--worker":
        return
    import torch.distributed as dist

    from medrep.losses.distributed import gloo_threads, shutdown_process_group

    rank, init_file, out_file = int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        result = json.dumps(worker(rank))
    finally:
        shutdown_process_group()  # the gloo threads must be joined before the interpreter exits (see its docstring)
    if gloo_threads():
        raise RuntimeError(f"{gloo_threads()} gloo work threads outlive the process group; something still holds it")
    Path(out_file).write_text(result)
