"""Fine-tuning evaluation: an encoder and a linear head trained on 1 %, 10 % and 100 % of a
labelled split, the model chosen on a validation split, scored once on the test split.

The question it answers is the one frozen probes cannot: does pretraining beat a random network
of the same architecture *once both are trained on the labels*? Protocol, per (fraction, seed):

* labelled examples: :func:`~medrep.evaluate.subsample.nested_subsamples` (stratified, one
  subset per seed, smaller fractions nested in larger ones); validation and test splits whole;
* model: the encoder (pretrained weights, or ``random_init``: the same architecture freshly
  initialised with the run's seed) and one linear layer on its pooled features;
* training: defaults follow MGCA's classification fine-tuner (Wang et al. 2022, the reference
  code of medical image-report pretraining): AdamW, weight decay 1e-6, head learning rate 5e-4,
  batch 48, at most 50 epochs (an epoch is a pass over the labelled subset, repeated until it
  holds at least ``min_batches_per_epoch`` = 10 batches: 1 % of PneumoniaMNIST is 47 images, one
  batch, and 50 one-step epochs would hardly train anything), early stopping when the validation loss has not improved for 10
  epochs, test with the best-validation weights. MGCA trains the head only; end to end, the
  encoder gets its own learning rate (``encoder_lr``, default 1e-4, a fifth of the head's, so the
  pretrained features are adjusted rather than overwritten). Constant learning rates, as MGCA;
* ``frozen``: the head alone on the encoder in eval mode: the linear probe as a trained layer, so
  probe and fine-tuning share one loop. Without augmentation the frozen encoder's features are
  computed once (the same numbers, far faster);
* augmentation (``light``): a random resized crop of 70-100 % of the area, rotation up to 10
  degrees and mild brightness/contrast, no flips (anatomy has a side); ``none`` trains on the
  images as preprocessed;
* scores: AUROC and accuracy. One class id per image: softmax and cross-entropy, binary AUROC on
  the second class, multiclass macro one-vs-rest (:mod:`~medrep.evaluate.metrics`). 0/1 label
  vectors (multi-label): sigmoid and binary cross-entropy, macro AUROC over the labels with both
  values in the test split, accuracy the mean per-label accuracy at 0.5.

Splits are held in memory as tensors (decoded once), which suits evaluation sets of 2D images and
small 3D volumes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import MedrepError
from ..options import NonNegativeFloat, PositiveFloat, PositiveInt, check_value, options_of
from .metrics import accuracy, auroc
from .report import summarise
from .subsample import check_fraction, nested_subsamples

#: ViewAugment settings of ``augment="light"`` (see the module docstring).
LIGHT_AUGMENT = dict(crop_scale=(0.7, 1.0), rotate_deg=10.0, flip=False, brightness=0.1, contrast=0.1, gamma=0.0,
                     noise_std=0.0, blur_prob=0.0, cutout_prob=0.0)
EVAL_BATCH = 256


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions:
    """The protocol's settings; each is checked when built, errors naming the option."""

    fractions: Sequence[float] = (0.01, 0.1, 1.0)
    seeds: Sequence[int] = (0, 1, 2)
    epochs: PositiveInt = 50
    patience: PositiveInt = 10
    batch_size: PositiveInt = 48
    min_batches_per_epoch: PositiveInt = 10
    lr: PositiveFloat = 5e-4
    encoder_lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 1e-6
    optimizer: Literal["adamw", "sgd"] = "adamw"
    augment: Literal["light", "none"] = "light"
    frozen: bool = False
    select: Literal["loss", "auroc"] = "loss"
    progress: bool = field(default=True, compare=False)

    def __post_init__(self):
        for name, option in options_of(FinetuneOptions).items():
            check_value(getattr(self, name), option.annotation, name)
        if not self.fractions:
            raise MedrepError("give at least one label fraction", "fractions")
        for f in self.fractions:
            check_fraction(f)
        if not self.seeds:
            raise MedrepError("give at least one seed", "seeds")


@dataclass
class Split:
    """One split in memory: images ``(N, C, *spatial)`` float32, targets ``(N,)`` or ``(N, K)``."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def materialise(dataset, collate: Callable | None = None, name: str = "split", progress: bool = True) -> Split:
    """Decode every sample of ``dataset`` once into one :class:`Split` (images must share a shape:
    set ``--size`` otherwise; every sample needs a label)."""
    from torch.utils.data import DataLoader

    from ..data.datasets.collate import collate as default_collate

    images, targets = [], []
    loader = DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False, collate_fn=collate or default_collate)
    for batch in tqdm(loader, desc=f"load {name}", unit="batch", disable=not progress, leave=False):
        if batch.get("label") is None or not isinstance(batch["label"], torch.Tensor):
            raise MedrepError(f"the {name} split has images without a label (class subfolders, a manifest 'label' column "
                              "or MedMNIST labels are needed)", "label")
        images.append(batch["image"].float())
        targets.append(batch["label"])
    if not images:
        raise MedrepError(f"the {name} split is empty", "data")
    split = Split(torch.cat(images), torch.cat(targets))
    if not torch.isfinite(split.images).all():
        raise MedrepError(f"the {name} split has images with NaN or inf values", "data")
    return split


class _Task:
    """What the head predicts and how it is scored: class ids (``multilabel`` False) or 0/1 vectors."""

    def __init__(self, train: Split, others: dict[str, Split]):
        y = train.targets
        self.multilabel = y.ndim == 2
        if self.multilabel:
            self.n_out = y.shape[1]
            for name, split in others.items():
                if split.targets.ndim != 2 or split.targets.shape[1] != self.n_out:
                    raise MedrepError(f"{name} targets have shape {tuple(split.targets.shape)}, train has (N, {self.n_out})", name)
            self.classes = np.arange(self.n_out)
            return
        self.classes = np.unique(y.numpy())
        if self.classes.size < 2:
            raise MedrepError(f"need at least 2 classes in the train split, found {self.classes.tolist()}", "train")
        for name, split in others.items():
            unseen = np.setdiff1d(np.unique(split.targets.numpy()), self.classes)
            if split.targets.ndim != 1 or unseen.size:
                raise MedrepError(f"{name} split has classes {unseen.tolist()} absent from the train split", name)
        self.n_out = self.classes.size
        self._index = {int(c): i for i, c in enumerate(self.classes)}

    @property
    def kind(self) -> str:
        return "multilabel" if self.multilabel else ("binary" if self.n_out == 2 else "multiclass")

    def encode(self, targets: torch.Tensor) -> torch.Tensor:
        """Loss targets: class indices 0..n-1, or float 0/1 vectors."""
        if self.multilabel:
            return targets.float()
        return torch.tensor([self._index[int(t)] for t in targets], dtype=torch.int64)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target)

    def scores(self, logits: torch.Tensor) -> np.ndarray:
        return (torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)).numpy()

    def metrics(self, targets: torch.Tensor, scores: np.ndarray) -> dict[str, float]:
        y = targets.numpy()
        if not self.multilabel:
            return {"auroc": auroc(y, scores, self.classes), "accuracy": accuracy(y, scores, self.classes)}
        from sklearn.metrics import roc_auc_score

        present = [k for k in range(self.n_out) if 0 < y[:, k].sum() < y.shape[0]]
        if not present:
            raise MedrepError("no label has both positive and negative examples in the test split", "test")
        return {"auroc": float(np.mean([roc_auc_score(y[:, k], scores[:, k]) for k in present])),
                "accuracy": float(np.mean((scores >= 0.5) == (y > 0)))}


class Classifier(nn.Module):
    """Encoder (or, for cached frozen features, nothing) and one linear layer on its pooled output."""

    def __init__(self, encoder: nn.Module | None, in_dim: int, n_out: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(in_dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x if self.encoder is None else self.encoder(x).flatten(1))


def _batches(n: int, batch_size: int, generator: torch.Generator, min_batches: int = 1) -> list[torch.Tensor]:
    """Shuffled index batches of one epoch: passes over ``n`` examples (each a fresh shuffle) until
    there are ``min_batches`` full batches' worth; a last batch of one joins the one before (batch
    norm needs two)."""
    passes = max(1, math.ceil(min_batches * batch_size / n))
    chunks = list(torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)]).split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


@torch.no_grad()
def _predict(model: Classifier, split: Split, device: torch.device) -> torch.Tensor:
    model.eval()
    out = [model(split.images[i : i + EVAL_BATCH].to(device)).float().cpu() for i in range(0, len(split), EVAL_BATCH)]
    return torch.cat(out)


def _optimizer(model: Classifier, opts: FinetuneOptions) -> torch.optim.Optimizer:
    groups = [{"params": list(model.head.parameters()), "lr": opts.lr}]
    if model.encoder is not None and not opts.frozen:
        groups.append({"params": list(model.encoder.parameters()), "lr": opts.encoder_lr})
    if opts.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=opts.lr, momentum=0.9, weight_decay=opts.weight_decay)
    return torch.optim.AdamW(groups, lr=opts.lr, weight_decay=opts.weight_decay)


def train_once(
    model: Classifier, task: _Task, train: Split, val: Split, test: Split, opts: FinetuneOptions, seed: int,
    device: torch.device, augment: nn.Module | None = None, bar: tqdm | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``train`` with early stopping on ``val``; score ``test`` with the best weights."""
    generator = torch.Generator().manual_seed(seed)
    model = model.to(device)
    if opts.frozen and model.encoder is not None:
        model.encoder.requires_grad_(False)
    optimizer = _optimizer(model, opts)
    y_train, y_val = task.encode(train.targets), task.encode(val.targets)
    best, best_state, best_epoch, waited, history = math.inf, None, 0, 0, []
    for epoch in range(1, opts.epochs + 1):
        model.train()
        if opts.frozen and model.encoder is not None:
            model.encoder.eval()  # a frozen encoder keeps its batch-norm statistics
        for idx in _batches(len(train), opts.batch_size, generator, opts.min_batches_per_epoch):
            x = train.images[idx]
            if augment is not None:
                x = augment(x, generator=generator)
            loss = task.loss(model(x.to(device)), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        logits = _predict(model, val, device)
        val_loss = float(task.loss(logits, y_val))
        val_auroc = task.metrics(val.targets, task.scores(logits))["auroc"] if opts.select == "auroc" else None
        history.append({"epoch": epoch, "val_loss": val_loss, **({"val_auroc": val_auroc} if val_auroc is not None else {})})
        score = val_loss if opts.select == "loss" else -val_auroc
        if bar is not None:
            bar.set_postfix(epoch=epoch, val_loss=f"{val_loss:.3f}")
        if score < best:
            best, best_epoch, waited = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= opts.patience:
                break
    model.load_state_dict(best_state)
    logits = _predict(model, test, device)
    return {**task.metrics(test.targets, task.scores(logits)), "best_epoch": best_epoch, "epochs": len(history),
            "history": history}


def _features(encoder: nn.Module, split: Split, device: torch.device) -> Split:
    with torch.no_grad():
        encoder = encoder.to(device).eval()
        feats = [encoder(split.images[i : i + EVAL_BATCH].to(device)).flatten(1).float().cpu()
                 for i in range(0, len(split), EVAL_BATCH)]
    return Split(torch.cat(feats), split.targets)


def finetune(
    make_encoder: Callable[[int], nn.Module], splits: dict[str, Split], options: FinetuneOptions | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Run the protocol (module docstring) over ``options.fractions`` x ``options.seeds``.

    ``make_encoder(seed)`` returns a fresh encoder for one run (a copy of the pretrained weights,
    or a random initialisation drawn with ``seed``); ``splits`` holds ``train``, ``val`` and
    ``test``. Returns ``{"probe", "task", "classes", "n_val", "n_test", "options", "fractions":
    {"0.01": {"fraction", "n_train", "auroc": {"mean", "std"}, "accuracy": {...}, "per_seed": [...]}}}``.
    """
    opts = options or FinetuneOptions()
    device = torch.device(device)
    train, val, test = (splits[k] for k in ("train", "val", "test"))
    task = _Task(train, {"val": val, "test": test})
    subsets = {seed: nested_subsamples(train.targets.numpy(), opts.fractions, seed) for seed in opts.seeds}
    cached = opts.frozen and opts.augment == "none"
    if cached:  # the frozen encoder maps each image to the same features every epoch: compute them once
        encoder = make_encoder(opts.seeds[0])
        train, val, test = (_features(encoder, s, device) for s in (train, val, test))
    augment = None
    if opts.augment == "light":
        from ..transforms import ViewAugment

        augment = ViewAugment(train.images.ndim - 2, **LIGHT_AUGMENT)
    fracs = sorted({check_fraction(f) for f in opts.fractions})
    out: dict[str, Any] = {"probe": "frozen head" if opts.frozen else "finetune", "task": task.kind,
                           "classes": task.classes.tolist(), "n_val": len(val), "n_test": len(test),
                           "options": {k: v for k, v in asdict(opts).items() if k != "progress"}, "fractions": {}}
    with tqdm(total=len(fracs) * len(opts.seeds), desc="finetune", unit="run", disable=not opts.progress) as bar:
        for f in fracs:
            runs = []
            for seed in opts.seeds:
                idx = torch.from_numpy(subsets[seed][f])
                torch.manual_seed(seed)  # the head's (and a random encoder's) initialisation
                encoder = None if cached else make_encoder(seed)
                in_dim = train.images.shape[1] if cached else _out_dim(encoder, train, device)
                model = Classifier(encoder, in_dim, task.n_out)
                start = time.perf_counter()
                result = train_once(model, task, Split(train.images[idx], train.targets[idx]), val, test, opts, seed,
                                    device, augment, bar)
                runs.append({"seed": int(seed), "n_train": int(idx.numel()), **result,
                             "seconds": round(time.perf_counter() - start, 2)})
                bar.update(1)
            out["fractions"][f"{f:g}"] = {"fraction": f, "n_train": runs[0]["n_train"],
                                          "auroc": summarise(r["auroc"] for r in runs),
                                          "accuracy": summarise(r["accuracy"] for r in runs), "per_seed": runs}
    return out


def _out_dim(encoder: nn.Module, split: Split, device: torch.device) -> int:
    dim = getattr(encoder, "out_dim", None)
    if dim is None:  # a plain module from a notebook: ask it
        with torch.no_grad():
            dim = encoder.to(device).eval()(split.images[:2].to(device)).flatten(1).shape[1]
    return int(dim)


def holdout(split: Split, fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """``(rest, held out)``: a stratified ``fraction`` of ``split`` set aside as the validation split
    of a data set that has none (the same examples for every run, never trained on)."""
    held = torch.from_numpy(nested_subsamples(split.targets.numpy(), [fraction], seed)[fraction])
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[held] = False
    return Split(split.images[keep], split.targets[keep]), Split(split.images[held], split.targets[held])


def evaluate_finetune(
    encoder_path, data: dict, options: FinetuneOptions | None = None, random_init: bool = False,
    train_split: str = "train", val_split: str | None = "val", test_split: str = "test", device: str = "auto",
    out=None,
) -> dict[str, Any]:
    """:func:`finetune` of an exported encoder on ``data`` (a recipe ``data`` section, as from
    :func:`medrep.evaluate.frozen.data_config`). ``val_split=None`` holds out 10 % of the train split
    (stratified) for model selection. Writes the result JSON to ``out`` when given."""
    from ..checkpoint import load_encoder
    from ..data import build_dataset, get_source
    from .encoder import resolve_device
    from .frozen import table
    from .report import write_json

    opts = options or FinetuneOptions()
    collate = get_source(data["source"]).collate
    names = {"train": train_split, "val": val_split, "test": test_split}
    splits, skipped, classes = {}, {}, None
    for role, name in names.items():
        if name is None:
            continue
        try:
            dataset = build_dataset(data, split=name)
        except MedrepError as exc:
            if role != "val":
                raise
            raise MedrepError(f"{exc}; val_split=None (--val-split none) holds out 10 % of the train split instead", "val_split") from exc
        splits[role] = materialise(dataset, collate, name, opts.progress)
        skipped[name] = len(getattr(dataset, "skipped", []))
        classes = classes or getattr(dataset, "classes", None)
    if val_split is None:
        splits["train"], splits["val"] = holdout(splits["train"])
    if random_init:
        def make_encoder(seed: int) -> nn.Module:
            torch.manual_seed(seed)
            return load_encoder(encoder_path, weights=False)
    else:
        base = load_encoder(encoder_path)

        def make_encoder(seed: int) -> nn.Module:
            return copy.deepcopy(base)
    result = finetune(make_encoder, splits, opts, resolve_device(device))
    if classes and result["task"] != "multilabel":
        result["class_names"] = [classes[int(c)] for c in result["classes"]]
    label = "random-init" if random_init else "pretrained"
    result.update({"evaluation": "finetune", "encoder": str(encoder_path), "random_init": random_init, "data": data,
                   "splits": {**names, "val": val_split or f"10 % of {train_split}"}, "skipped": skipped,
                   "table": table({label: {"finetune": result}})})
    if out:
        write_json(out, result)
    return result
