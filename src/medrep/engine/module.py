"""The one LightningModule: it drives any registered method and owns the optimiser schedule."""

from __future__ import annotations

import inspect
import math
import time
from typing import Any

import lightning.pytorch as pl
import torch

from ..methods import Method


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (1-D parameters), as is standard."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


#: Batch entries that hold plain Python values by the data layer's contract (per-sample ``meta`` dicts,
#: report ``text``, ``sentences``, ``study`` ids; see :mod:`medrep.data`). Lightning's generic batch
#: transfer walks every element of them looking for tensors: 7 ms a step for 256 meta dicts, as long
#: as a whole GPU step. They are handed to the method as they are.
HOST_KEYS = frozenset({"meta", "text", "sentences", "study"})


def logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether the trainer writes to its loggers after this step: every ``log_every_n_steps`` optimiser
    steps (on the last micro-batch when gradients accumulate), as Lightning's connector decides. Any
    work for the logs on the other steps is wasted: Lightning writes only the last on-step value."""
    # The same private properties Lightning's own LearningRateMonitor and logger connector ask;
    # fast_dev_run logs every step.
    if trainer.fit_loop._should_accumulate():
        return False
    return trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)


#: Seconds between saves of the loggers (the CSV file appended, TensorBoard's events flushed). Lightning
#: saves every logger after every write; a run killed mid-way loses at most this much of its log.
LOG_SAVE_SECONDS = 5.0


def write_logs(trainer: pl.Trainer, values: dict[str, torch.Tensor], last_save: float) -> float:
    """Write this step's values to the trainer's loggers as Lightning's logger connector would (the same
    keys and step, an ``epoch`` column), without ``self.log``: its per-value bookkeeping costs ~1.2 ms a
    value on these CPUs, and a value logged from ``training_step`` only ever reaches the loggers and
    the progress bar, which reads the module's ``last_loss`` itself. So the training losses are not in
    ``trainer.callback_metrics``. Returns the time of the loggers' last save."""
    if not trainer.loggers or not trainer.is_global_zero:
        return last_save
    # one device sync for all values, where the connector pays one .item() each
    scalars = torch.stack([v.detach().float().reshape(()) for v in values.values()]).tolist()
    metrics = {**dict(zip(values, scalars)), "epoch": trainer.current_epoch}
    step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the connector's step: it counts optimiser steps
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)
    now = time.monotonic()
    if now - last_save < LOG_SAVE_SECONDS:
        return last_save
    for logger in trainer.loggers:  # Lightning's teardown saves them once more when training ends
        logger.save()
    return now


#: Attributes set on the module every step: Lightning sets and restores ``_current_fx_name`` around
#: each of the ~20 hooks it calls a step, and ``training_step`` keeps ``last_loss``. Neither can be a
#: parameter, buffer or submodule, for which ``nn.Module.__setattr__``'s checks exist, and those checks
#: cost ~0.25 ms a step on these CPUs (``benchmarks/engine_overhead.py``).
PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "last_loss", "_logs_saved"})


class MethodModule(pl.LightningModule):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __init__(self, method: Method, optim: dict):
        super().__init__()
        self.method = method  # its weights are saved as "method.*": medrep.checkpoint.load_method relies on the name
        self.optim = dict(optim)
        self.last_loss: torch.Tensor | None = None  # this step's loss, detached; shown by the progress bar
        self._logs_saved = time.monotonic()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.method.training_step(batch)
        if "loss" not in losses:
            raise KeyError(f"method {self.method.name!r} returned no 'loss' (got {sorted(losses)})")
        # the progress bar reads it when it refreshes: a reference costs nothing, a per-step .item() is a GPU sync
        self.last_loss = losses["loss"].detach()
        if logs_this_step(self.trainer):
            self._logs_saved = write_logs(self.trainer, {f"train/{k}": v for k, v in losses.items()}, self._logs_saved)
        return losses["loss"]

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and set(batch) == {"parts"}:  # a mixed source: each part as a batch of its own
            return {"parts": [self.transfer_batch_to_device(part, device, dataloader_idx) for part in batch["parts"]]}
        if not isinstance(batch, dict) or not HOST_KEYS.intersection(batch):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        moved = super().transfer_batch_to_device({k: v for k, v in batch.items() if k not in HOST_KEYS}, device, dataloader_idx)
        return {k: batch[k] if k in HOST_KEYS else moved[k] for k in batch}

    def on_train_start(self) -> None:
        # The trainer recomputes this from the loaders on every access: once is enough.
        self._total_steps = int(self.trainer.estimated_stepping_batches)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.method.on_train_batch_end(self.global_step, self._total_steps)

    def configure_optimizers(self):
        cfg = self.optim
        groups = param_groups(self.method, cfg["weight_decay"])
        if cfg["name"] == "sgd":
            opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"])
        elif cfg["name"] == "adam":
            opt = torch.optim.Adam(groups, lr=cfg["lr"])
        else:
            opt = torch.optim.AdamW(groups, lr=cfg["lr"])
        if cfg["schedule"] == "constant" and not cfg["warmup_steps"]:
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(cfg["warmup_steps"])
        cosine = cfg["schedule"] == "cosine"
        lam = (lambda s: warmup_cosine(s, warmup, total)) if cosine else (lambda s: min(1.0, (s + 1) / max(1, warmup)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# Lightning asks for training_step's signature on every step (whether to pass batch_idx), and
# inspect rebuilds it each time (~0.04 ms a step on these CPUs); a function's __signature__ is
# what inspect returns first.
MethodModule.training_step.__signature__ = inspect.signature(MethodModule.training_step)
