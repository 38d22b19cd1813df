"""Training only: the Lightning module and the pretraining loop. Exporting and loading what a run
leaves behind is the library's (:mod:`medrep.checkpoint`), so that evaluation never imports Lightning."""

from .module import MethodModule
from .train import build_loader, build_trainer, pretrain

__all__ = ["MethodModule", "build_loader", "build_trainer", "pretrain"]
