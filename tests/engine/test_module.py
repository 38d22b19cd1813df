"""MethodModule's per-step economies (log only on logging steps, loss read by the bar when it
refreshes, host-only batch entries not walked, plain per-step attributes, a profiler that builds
nothing) leave training and its logs as they were."""

import csv

import pytest
import torch
from helpers import tiny_recipe

import medrep
from medrep.engine import MethodModule, build_trainer, pretrain
from medrep.engine.module import HOST_KEYS, LOG_SAVE_SECONDS, PLAIN_ATTRIBUTES, write_logs
from medrep.engine.train import LossBar, QuietProfiler, StepCheckpoint
from medrep.methods import build_method
from medrep.recipe import load_recipe


def logged(run) -> dict[int, float]:
    rows = csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.mark.slow
def test_logging_every_second_step_logs_the_same_losses_and_trains_the_same(tiny_npz, tmp_path):
    runs = [pretrain(load_recipe(tiny_recipe(tiny_npz, tmp_path / f"every{n}", trainer={"max_steps": 4, "log_every_n_steps": n})))
            for n in (1, 2)]
    every, second = (logged(run) for run in runs)
    assert sorted(every) == [0, 1, 2, 3] and sorted(second) == [1, 3]
    assert second == {step: every[step] for step in (1, 3)}
    encs = [medrep.load_encoder(run) for run in runs]
    for a, b in zip(encs[0].state_dict().values(), encs[1].state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_accumulated_steps_log_once_per_optimiser_step_with_lightnings_columns(tiny_npz, tmp_path):
    recipe = tiny_recipe(tiny_npz, tmp_path / "run", trainer={"max_steps": 3, "log_every_n_steps": 1, "accumulate_grad_batches": 2})
    run = pretrain(load_recipe(recipe))
    rows = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]  # one row per optimiser step, not per micro-batch
    assert set(rows[0]) == {"step", "epoch", "train/loss"} and all(float(r["train/loss"]) > 0 for r in rows)


class RecordingLogger:
    def __init__(self):
        self.rows, self.saves = [], 0

    def log_metrics(self, metrics, step):
        self.rows.append((step, metrics))

    def save(self):
        self.saves += 1


def test_logs_are_written_every_time_and_saved_at_most_every_few_seconds():
    from types import SimpleNamespace
    logger = RecordingLogger()
    trainer = SimpleNamespace(loggers=[logger], is_global_zero=True, current_epoch=2,
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=7)))
    values = {"train/loss": torch.tensor(1.5), "train/align": torch.tensor(0.25, dtype=torch.bfloat16)}
    saved = write_logs(trainer, values, last_save=float("-inf"))  # never saved: saves now
    assert logger.rows == [(7, {"train/loss": 1.5, "train/align": 0.25, "epoch": 2})] and logger.saves == 1
    assert write_logs(trainer, values, last_save=saved) == saved  # saved just now: written, not saved
    assert len(logger.rows) == 2 and logger.saves == 1
    assert write_logs(trainer, values, last_save=saved - LOG_SAVE_SECONDS) > saved and logger.saves == 2
    other_rank = SimpleNamespace(**{**vars(trainer), "is_global_zero": False})
    assert write_logs(other_rank, values, last_save=saved) == saved and len(logger.rows) == 3  # rank 0 writes
    with pytest.raises(RuntimeError):  # a loss that is not a scalar cannot become a log value
        write_logs(trainer, {"train/loss": torch.ones(2)}, last_save=saved)


def test_progress_bar_refreshes_at_most_every_min_seconds_and_on_the_last_batch():
    bar = LossBar(refresh_rate=2, min_seconds=3600)
    assert [bar._should_update(n, 9) for n in range(1, 10)] == [False, True, False, False, False, False, False, False, True]
    quick = LossBar(refresh_rate=1, min_seconds=0.0)
    assert all(quick._should_update(n, None) for n in range(1, 5))


def test_batch_transfer_hands_host_entries_over_as_they_are():
    module = MethodModule(build_method(load_recipe({"method": {"name": "simclr"}, "model": {"name": "resnet10"}})), {})
    meta, text = [{"path": "a.png", "index": 0}], ["a report"]
    batch = {"image": torch.zeros(1, 1, 8, 8), "meta": meta, "label": torch.tensor([1]), "text": text}
    moved = module.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert list(moved) == list(batch)  # key order kept
    assert moved["meta"] is meta and moved["text"] is text
    assert torch.equal(moved["image"], batch["image"]) and torch.equal(moved["label"], batch["label"])
    assert {"meta", "text", "sentences", "study"} == HOST_KEYS
    plain = [torch.ones(2)]  # not a dict: Lightning's own transfer
    assert torch.equal(module.transfer_batch_to_device(plain, torch.device("cpu"), 0)[0], plain[0])


def test_progress_bar_shows_the_modules_last_loss(tiny_npz, tmp_path):
    recipe = load_recipe(tiny_recipe(tiny_npz, tmp_path / "run", trainer={"progress_bar": True}))
    trainer = build_trainer(recipe, tmp_path / "run")
    bar = next(cb for cb in trainer.callbacks if isinstance(cb, LossBar))
    module = MethodModule(build_method(recipe), recipe["optim"])
    assert "loss" not in bar.get_metrics(trainer, module)  # before the first step
    module.last_loss = torch.tensor(2.5)
    assert bar.get_metrics(trainer, module)["loss"] == 2.5


def test_per_step_attributes_are_plain_and_module_attributes_still_register():
    module = MethodModule(build_method(load_recipe({"method": {"name": "simclr"}, "model": {"name": "resnet10"}})), {})
    params = len(list(module.parameters()))
    module._current_fx_name = "training_step"
    module.last_loss = torch.tensor(1.5)
    assert module.__dict__["_current_fx_name"] == "training_step" and module.__dict__["last_loss"] == 1.5
    assert "last_loss" not in module.state_dict() and not any("last_loss" in k for k in dict(module.named_buffers()))
    module.extra = torch.nn.Parameter(torch.ones(2))  # any other name keeps nn.Module's registration
    module.head = torch.nn.Linear(2, 2)
    assert len(list(module.parameters())) == params + 3 and "extra" in module._parameters and "head" in module._modules
    assert PLAIN_ATTRIBUTES == {"_current_fx_name", "last_loss", "_logs_saved"}


def test_quiet_profiler_is_a_reusable_no_op_and_the_trainers_profiler(tiny_npz, tmp_path):
    profiler = QuietProfiler()
    with profiler.profile("outer") as a, profiler.profile("inner") as b:  # nested and reused, as Lightning does
        pass
    assert a is None and b is None and profiler.summary() == ""
    recipe = load_recipe(tiny_recipe(tiny_npz, tmp_path / "run"))
    assert isinstance(build_trainer(recipe, tmp_path / "run").profiler, QuietProfiler)


def test_training_steps_precomputed_signature_is_its_own():
    import inspect
    spec = inspect.getfullargspec(MethodModule.training_step)  # what Lightning asks to decide on batch_idx
    code = MethodModule.training_step.__code__  # the function's own arguments, whatever __signature__ says
    assert spec.args == list(code.co_varnames[:code.co_argcount]) == ["self", "batch", "batch_idx"]
    assert spec.varargs is None and spec.varkw is None


def test_checkpoint_callback_keeps_model_checkpoints_state_key(tiny_npz, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    settings = dict(dirpath=tmp_path, every_n_train_steps=5, save_top_k=3, monitor="step", mode="max")
    ours, theirs = StepCheckpoint(**settings), ModelCheckpoint(**settings)
    assert ours.state_key == theirs.state_key and ours.state_key.startswith("ModelCheckpoint{")
    assert StepCheckpoint(**{**settings, "every_n_train_steps": 7}).state_key != ours.state_key
    recipe = load_recipe(tiny_recipe(tiny_npz, tmp_path / "run"))
    assert any(isinstance(cb, StepCheckpoint) for cb in build_trainer(recipe, tmp_path / "run").callbacks)
