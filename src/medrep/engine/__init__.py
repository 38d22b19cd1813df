from .export import export_encoder, load_encoder, read_encoder_info
from .module import MethodModule
from .train import build_loader, build_trainer, pretrain

__all__ = ["MethodModule", "build_loader", "build_trainer", "export_encoder", "load_encoder", "pretrain", "read_encoder_info"]
