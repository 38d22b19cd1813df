"""Loss functions: pure (tensors in, scalar out); those that need the global batch gather it
across processes with gradients (see :mod:`medrep.losses.distributed`)."""

from medrep.losses.barlow import barlow_twins_loss
from medrep.losses.byol import byol_loss
from medrep.losses.cover import consistency_loss, cover_loss, vector_loss
from medrep.losses.distributed import gather, is_distributed, rank, rank_offset, world_size
from medrep.losses.isimed import isimed_loss
from medrep.losses.ntxent import info_nce, nt_xent
from medrep.losses.place import cce_loss, match_observations, patch_correlation, pcma_loss
from medrep.losses.supcon import supcon
from medrep.losses.vicreg import vicreg_loss
from medrep.losses.vlp_global import clip_loss, mgca_prototype_loss, sinkhorn_knopp
from medrep.losses.vlp_local import gloria_local_loss, gloria_word_attention, mgca_token_loss, mgca_token_weights

__all__ = [
    "supcon",
    "barlow_twins_loss", "byol_loss", "cce_loss", "clip_loss", "consistency_loss", "cover_loss", "gather", "gloria_local_loss",
    "gloria_word_attention", "info_nce", "is_distributed", "isimed_loss", "match_observations", "mgca_prototype_loss", "mgca_token_loss",
    "mgca_token_weights", "nt_xent", "patch_correlation", "pcma_loss", "rank", "rank_offset", "sinkhorn_knopp", "vector_loss",
    "vicreg_loss", "world_size",
]
