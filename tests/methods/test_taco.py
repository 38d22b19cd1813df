"""The taco method: class labels under its switches, the encoder check, and that it learns to tell tasks apart."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers import phantom

from medrep.errors import RecipeError
from medrep.methods.taco import TaCo, task_classes
from medrep.models import build_backbone
from medrep.tasks import get_task
from medrep.tasks.pairs import TaskPairs


def encoder(in_channels=6):
    torch.manual_seed(0)
    return build_backbone({"name": "resnet10", "spatial_dims": 2, "in_channels": in_channels, "widen_factor": 0.25})


def test_task_classes_under_the_switches():
    batch = {"task": torch.tensor([0, 0, 1, 1]), "dataset": torch.tensor([0, 1, 0, 1]),
             "failure": torch.tensor([False, True, False, False])}
    labels, neg = task_classes(batch, "task", "negative", 4)
    assert labels.tolist() == [0, 0, 1, 1] and neg.tolist() == [False, True, False, False]
    labels, _ = task_classes(batch, "task_dataset", "negative", 4)
    assert labels.tolist() == [0, 1, 4, 5]
    labels, neg = task_classes(batch, "task", "class", 4)
    assert labels.tolist() == [0, 1, 2, 2] and not neg.any()


def test_encoder_must_read_six_channels():
    with pytest.raises(RecipeError, match="model.in_channels"):
        TaCo(encoder(1))


def test_a_batch_without_task_keys_is_a_named_error():
    with pytest.raises(RecipeError, match="data.source"):
        TaCo(encoder(), proj_hidden_dim=32, proj_dim=16).training_step({"image": torch.zeros(4, 6, 32, 32)})


@dataclass
class Slice:
    image: np.ndarray
    mask: np.ndarray | None
    source: str
    id: str


@pytest.mark.slow
def test_learns_to_separate_two_tasks():
    """Denoising vs rotation pairs on one phantom's rotations: the loss falls on a fixed batch."""
    image, _ = phantom(32)
    slices = [Slice(np.rot90(image, k).copy(), None, "p", str(k)) for k in range(4)]
    ds = TaskPairs(slices, [get_task("denoise_gaussian"), get_task("rotate")], failure_rate=0.0)
    batch = {k: torch.stack([ds[(t, d)][k] for t in (0, 1) for d in range(6)]) for k in ("image", "task", "dataset", "failure")}
    model = TaCo(encoder(), proj_hidden_dim=32, proj_dim=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = model.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses
