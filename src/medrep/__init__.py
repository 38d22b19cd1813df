"""medrep: learn visual representations of medical images, 2D and 3D, and measure them."""

__version__ = "0.1.0"


def load_encoder(path, weights: bool = True, map_location="cpu"):
    """Rebuild an exported encoder (directory, ``encoder.json`` or ``.safetensors``) as an ``nn.Module``."""
    from .engine.export import load_encoder as _load

    return _load(path, weights=weights, map_location=map_location)


__all__ = ["__version__", "load_encoder"]
