from . import unet  # noqa: F401  (registers "unet")
from .backbones import BACKBONES, Backbone, build_backbone, register_backbone
from .heads import MLPHead
from .text import TextEncoder as TextEncoder  # re-export; imports transformers only when built

__all__ = ["BACKBONES", "Backbone", "MLPHead", "build_backbone", "register_backbone"]
