"""Pretraining: recipe in, run folder out (checkpoints, logs, resolved recipe, exported encoder).

Scale-out is Lightning's: ``trainer.devices``, ``trainer.num_nodes`` and ``trainer.strategy=ddp``
work under ``torchrun`` or Lightning's own launcher; nothing here spawns processes itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.profilers import PassThroughProfiler
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from ..checkpoint import export_encoder, last_checkpoint
from ..data import build_dataset, get_source, source_names
from ..errors import RecipeError
from ..files import remove_stray_temporaries, write_atomic
from ..losses.distributed import is_distributed, shutdown_process_group
from ..methods import build_method, get_method
from ..recipe import dump_recipe
from .module import MethodModule

log = logging.getLogger(__name__)
# Lightning 2.6 on torch 2.13 warns on every step about its own use of a deprecated pytree API.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=Warning)


def build_loader(recipe: dict, split: str | None = None, shuffle: bool = True, drop_last: bool = True) -> DataLoader:
    data = recipe["data"]
    dataset = build_dataset(data, split=split)
    if len(dataset) < data["batch_size"] and drop_last:
        raise RecipeError(f"is larger than the data set ({len(dataset)} samples)", "data.batch_size")
    workers = data["num_workers"]
    batches = getattr(dataset, "batch_sampler_class", None)
    # a data set over several sources batches each part with that source's collate
    collate = getattr(dataset, "collate_fn", None) or get_source(data["source"]).collate
    if batches is not None:
        # a data set that owns its batching (TaCo's P tasks x K draws); the class keeps BatchSampler's
        # signature, so under DDP Lightning rebuilds it over a DistributedSampler
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, batch_sampler=batches(sampler, data["batch_size"], drop_last), num_workers=workers,
                          collate_fn=collate, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available())
    # the source's batching: image-report batches keep their texts as strings, the method tokenises them
    return DataLoader(
        dataset, batch_size=data["batch_size"], shuffle=shuffle, drop_last=drop_last, num_workers=workers,
        collate_fn=collate, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
    )


def _precision(recipe: dict) -> str:
    precision = recipe["trainer"]["precision"]
    accelerator = recipe["trainer"]["accelerator"]
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and precision == "16-mixed":
        raise RecipeError("16-mixed needs a GPU; on CPU use bf16-mixed or 32", "trainer.precision")
    return precision


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint Lightning writes (step files, ``last.ckpt``, ``trainer.save_checkpoint``)
    goes through :func:`medrep.files.write_atomic`, so a kill never leaves a truncated one.

    Lightning's own save buffers the whole checkpoint in memory and moves it from the system
    temporary folder: a copy, not a rename, when that is another file system than the run's, and
    nothing is synced; ``torch.save`` here streams into a file beside the target instead.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_atomic(path, lambda fh: torch.save(checkpoint, fh))


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint with its ``state_key`` made once: Lightning formats the key for each
    of the six hooks it calls on a callback every step, and ModelCheckpoint's is the repr of a dict of
    its settings (~0.04 ms a step on these CPUs), settings fixed once it is built. The key is spelled
    as ModelCheckpoint's, so a run saved before this class resumes with its checkpoint records."""

    @functools.cached_property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)


def _checkpoint_callback(t: dict, folder: Path) -> ModelCheckpoint:
    """Step checkpoints every ``checkpoint_every_n_steps`` and ``last.ckpt`` beside them.

    ``keep_checkpoints`` is Lightning's top-k with the step as the score, so the newest k stay and
    the record of which exist travels in the checkpoint (a resumed run goes on removing the oldest).
    No version counter: a name already there is the same step written again after a resume, and
    the newer file replaces it rather than becoming ``stepN-v1.ckpt`` that nothing would remove.
    """
    keep = t["keep_checkpoints"]
    return StepCheckpoint(
        dirpath=folder, filename="step{step}", auto_insert_metric_name=False,
        every_n_train_steps=t["checkpoint_every_n_steps"], save_last=True, enable_version_counter=False,
        save_top_k=-1 if keep is None else keep, monitor=None if keep is None else "step", mode="max",
    )


class QuietProfiler(PassThroughProfiler):
    """Lightning's default no-op profiler, without its cost: the base class's ``profile`` is a
    ``@contextmanager`` generator, built and stepped ~36 times a training step (every hook is wrapped)
    to do nothing; one shared ``nullcontext`` does the same nothing (0.15 ms a step on these CPUs,
    ~1 % of a GPU-sized step; ``benchmarks/engine_overhead.py``)."""

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return self._nothing


class LossBar(TQDMProgressBar):
    """Lightning's bar with the module's ``last_loss``, read only when the bar refreshes: a
    ``self.log(..., prog_bar=True)`` value costs a ``.item()`` (a GPU sync) on every step. It refreshes
    every ``refresh_rate`` steps but at most every ``min_seconds``: a refresh (the loss read, the line
    formatted and written) costs ~0.7 ms on these CPUs, and at a GPU's 10-50 ms a step, every 10 steps
    would be a few refreshes a second that nobody reads."""

    def __init__(self, refresh_rate: int = 1, min_seconds: float = 0.5):
        super().__init__(refresh_rate=refresh_rate)
        self.min_seconds = min_seconds
        self._refreshed = -math.inf

    def _should_update(self, current: int, total: int) -> bool:
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current != total and now - self._refreshed < self.min_seconds:
            return False
        self._refreshed = now
        return True

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "last_loss", None)
        if loss is not None:
            items["loss"] = loss.item()
        return items


def build_trainer(recipe: dict, run_dir: Path, extra_callbacks: list | None = None) -> pl.Trainer:
    t = recipe["trainer"]
    checkpoint = _checkpoint_callback(t, run_dir / "checkpoints")
    # One log version per start, so a resumed run never overwrites the metrics logged before it.
    loggers = [CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")]
    return pl.Trainer(
        accelerator=t["accelerator"], devices=t["devices"], num_nodes=t["num_nodes"], strategy=t["strategy"],
        precision=_precision(recipe), accumulate_grad_batches=t["accumulate_grad_batches"],
        gradient_clip_val=t["gradient_clip_val"], max_steps=t["max_steps"] or -1, max_epochs=t["max_epochs"],
        log_every_n_steps=t["log_every_n_steps"], enable_progress_bar=t["progress_bar"], deterministic=t["deterministic"],
        callbacks=[checkpoint, *([LossBar(refresh_rate=t["log_every_n_steps"])] if t["progress_bar"] else []),
                   *(extra_callbacks or [])],
        logger=loggers, default_root_dir=run_dir, plugins=[AtomicCheckpointIO()], profiler=QuietProfiler(),
        enable_model_summary=False, num_sanity_val_steps=0,
    )


def _write_skipped(dataset, run_dir: Path) -> None:
    """``skipped.txt``: unreadable image files (``path<TAB>why``) or, for an image-report reader,
    one line per reason (``reason<TAB>count<TAB>example ids``), since readers count bad studies
    and keep a few examples rather than listing them all."""
    skipped = getattr(dataset, "skipped", [])
    if skipped:
        log.warning("skipped %d unreadable files (data.skip_bad=true); see %s", len(skipped), run_dir / "skipped.txt")
        (run_dir / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))
    report = getattr(dataset, "reader_report", None) or {}
    counts, examples = report.get("skipped", {}), report.get("examples", {})
    if counts:
        log.warning("skipped %d studies (data.skip_bad=true): %s; see %s", sum(counts.values()),
                    ", ".join(f"{n} {why}" for why, n in counts.items()), run_dir / "skipped.txt")
        (run_dir / "skipped.txt").write_text("".join(f"{why}\t{n}\t{', '.join(examples.get(why, []))}\n" for why, n in counts.items()))


def pretrain(recipe: dict, resume: bool = False, extra_callbacks: list | None = None) -> Path:
    """Train ``recipe``'s method; return the run folder. ``resume`` continues from its last checkpoint."""
    t = recipe["trainer"]
    run_dir = Path(t["output_dir"])
    ckpt = last_checkpoint(run_dir) if resume else None
    ours = not is_distributed()  # a group that exists already is the caller's (their own torchrun script) to keep
    pl.seed_everything(t["seed"], workers=True, verbose=False)
    name = recipe["method"]["name"]
    if get_method(name).needs_text and get_source(recipe["data"]["source"]).kind not in ("image_text", "mixed"):
        raise RecipeError(f"method {name!r} trains on image-report pairs: use one of {', '.join(source_names('image_text'))}, "
                          f"not {recipe['data']['source']!r}", "data.source")
    kind = get_source(recipe["data"]["source"]).kind
    if get_method(name).needs_tasks != (kind == "tasks"):
        wanted = "task samples: use data.source: tasks" if get_method(name).needs_tasks else "images, not task samples"
        raise RecipeError(f"method {name!r} trains on {wanted} (got {recipe['data']['source']!r})", "data.source")
    method = build_method(recipe)
    loader = build_loader(recipe)
    trainer = build_trainer(recipe, run_dir, extra_callbacks)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_recipe(recipe, run_dir / "recipe.yaml")
        _write_skipped(loader.dataset, run_dir)
        for folder in (run_dir / "checkpoints", run_dir / "encoder"):  # what a killed start left half-written
            remove_stray_temporaries(folder)
    module = MethodModule(method, recipe["optim"])
    # Our own checkpoints hold only tensors and plain containers, so they load without unpickling code.
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt, weights_only=True)
    if not trainer.interrupted:
        # ModelCheckpoint refreshes last.ckpt only with a step checkpoint, so when max_steps is not a
        # multiple of checkpoint_every_n_steps it would lag the exported encoder, and load_method
        # (the whole model, e.g. ConVIRT's text tower) or --resume would get older weights.
        # every rank: the strategy decides who writes; optimiser state kept (weights_only=False) so resume works
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    if trainer.is_global_zero:
        export_encoder(method.encoder, run_dir / "encoder", recipe)
    if ours:
        shutdown_process_group()  # Lightning leaves a gloo group to interpreter exit, where its threads abort the process
    return run_dir
