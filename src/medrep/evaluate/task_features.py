"""Embeddings of task samples (TaCo): how an encoder reads an ``(input, target)`` pair, and the samples
``medrep evaluate taskmap`` encodes (true pairs of held-out images, and strength sweeps).

Reading modes. ``pair``: an encoder of :data:`~medrep.tasks.pairs.PAIR_CHANNELS` input channels (TaCo)
reads the stacked pair, ``e([x, y])``. Any other medrep encoder is a baseline that reads each half on its
own: ``concat`` gives ``[e(x), e(y)]``, ``diff`` gives ``e(y) - e(x)`` (what the task changed). A half is
3 channels (:func:`~medrep.tasks.pairs.stack_pair`); a 1-channel encoder reads their mean.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import MedrepError
from ..tasks.base import FAMILIES, Task
from ..tasks.pairs import PAIR_CHANNELS, SliceLike, stack_pair

Read = Literal["pair", "concat", "diff"]
READS: tuple[str, ...] = ("pair", "concat", "diff")
HALF = PAIR_CHANNELS // 2


def encoder_channels(encoder: torch.nn.Module) -> int:
    """The input channels a medrep backbone was built with (its ``config``)."""
    channels = (getattr(encoder, "config", None) or {}).get("in_channels", getattr(encoder, "in_channels", None))
    if not isinstance(channels, int):
        raise MedrepError("cannot tell how many input channels the encoder reads (no config['in_channels'])", "encoder")
    return channels


def default_read(channels: int) -> str:
    return "pair" if channels == PAIR_CHANNELS else "concat"


def check_read(read: str | None, channels: int) -> str:
    """The reading mode (default from the channels), refused where the encoder cannot read that way."""
    read = default_read(channels) if read is None else read
    if read not in READS:
        raise MedrepError(f"must be one of {', '.join(READS)}, got {read!r}", "read")
    if read == "pair" and channels != PAIR_CHANNELS:
        raise MedrepError(f"pair reads a stacked (input, target) pair of {PAIR_CHANNELS} channels, and this encoder reads {channels}; "
                          "use concat or diff (a baseline reading each half)", "read")
    if read != "pair" and channels not in (1, HALF):
        raise MedrepError(f"{read} feeds each half of a pair to the encoder, which must read 1 or {HALF} channels, not {channels}"
                          + ("; a TaCo encoder reads the pair: use read pair" if channels == PAIR_CHANNELS else ""), "read")
    return read


class PairReader(torch.nn.Module):
    """``(B, 6, H, W)`` stacked pairs -> ``(B, F)`` features under one reading mode."""

    def __init__(self, encoder: torch.nn.Module, read: str):
        super().__init__()
        self.encoder, self.read = encoder, check_read(read, encoder_channels(encoder))
        self.gray = encoder_channels(encoder) == 1

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        if self.read == "pair":
            return self.encoder(pairs).flatten(1)
        halves = torch.cat([pairs[:, :HALF], pairs[:, HALF:]])  # one pass over inputs and targets
        if self.gray:
            halves = halves.mean(dim=1, keepdim=True)
        x, y = self.encoder(halves).flatten(1).chunk(2)
        return torch.cat([x, y], dim=1) if self.read == "concat" else y - x


def embed_pairs(reader: torch.nn.Module, dataset: Dataset, keys: Sequence, batch_size: int = 128, device: torch.device | str = "cpu",
                progress: bool = True, desc: str = "pairs") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features ``(N, F)`` of ``dataset[key]`` for each key, in order, and every other key of the samples
    stacked (``task``, ``dataset``, ``strength`` ...). The reader runs in eval mode under inference
    mode; each submodule's training flag is restored afterwards."""
    loader = DataLoader(dataset, batch_size=batch_size, sampler=list(keys), pin_memory=torch.device(device).type == "cuda")
    modes = [(m, m.training) for m in reader.modules()]
    feats: list[np.ndarray] = []
    meta: dict[str, list[np.ndarray]] = {}
    reader.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress):
                feats.append(reader(batch.pop("image").to(device).float()).float().cpu().numpy())
                for key, value in batch.items():
                    meta.setdefault(key, []).append(np.asarray(value))
    finally:
        for module, mode in modes:
            module.training = mode
    if not feats:
        raise MedrepError("no task samples to embed", "samples")
    return np.concatenate(feats), {k: np.concatenate(v) for k, v in meta.items()}


class SweepPairs(Dataset):
    """True pairs of ``task`` on ``images`` at each of ``strengths``: key ``(image, step)``. An image
    draws the same random choices (direction, noise field ...) at every strength, so only the
    strength changes along its trajectory."""

    def __init__(self, task: Task, images: Sequence[SliceLike], strengths: Sequence[float], seed: int = 0):
        self.task, self.images, self.strengths, self.seed = task, list(images), [float(s) for s in strengths], seed
        self.salt = zlib.crc32(task.name.encode())  # seeds differ by task, whatever the order tasks are named in

    def __len__(self) -> int:
        return len(self.images) * len(self.strengths)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        i, step = key
        s = self.images[i]
        rng = np.random.default_rng([self.seed, self.salt, i])
        inp, tgt = self.task(s.image, s.mask if self.task.needs_mask else None, rng, self.strengths[step])
        return {"image": torch.from_numpy(stack_pair(inp, tgt)), "step": torch.tensor(step),
                "family": torch.tensor(FAMILIES.index(self.task.family))}

    def keys(self) -> list[tuple[int, int]]:
        return [(i, step) for i in range(len(self.images)) for step in range(len(self.strengths))]
