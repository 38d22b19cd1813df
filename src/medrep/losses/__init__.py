"""Losses: pure functions from tensors to a scalar, safe under DDP (gathering with gradients)."""

from medrep.losses.distributed import gather, is_distributed, rank, rank_offset, world_size
from medrep.losses.ntxent import info_nce, nt_xent

__all__ = ["nt_xent", "info_nce", "gather", "is_distributed", "rank", "rank_offset", "world_size"]
