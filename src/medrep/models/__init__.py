from . import unet, unified_vit  # noqa: F401  (register "unet", "vit2d3d")
from .backbones import BACKBONES, Backbone, build_backbone, register_backbone
from .heads import DINOHead, MLPHead
from .text import TextEncoder as TextEncoder  # re-export; imports transformers only when built

__all__ = ["BACKBONES", "Backbone", "DINOHead", "MLPHead", "build_backbone", "register_backbone"]
