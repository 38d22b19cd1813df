"""Dense displacement fields in voxel units, and warping by them (COVER's free ground truth).

Convention used everywhere in medrep: a field ``flow`` has shape ``(B, n, *spatial)`` with
``n = spatial_dims``; channel ``k`` is the displacement along tensor spatial axis ``k`` (``(H, W)``
in 2D, ``(D, H, W)`` in 3D), in voxels of the grid it lives on. ``warp(x, flow)(p) = x(p + flow(p))``.

Sampling uses ``grid_sample(align_corners=True)``: index 0 and ``size - 1`` map to -1 and +1, so a
displacement of one voxel is exactly one grid step at every size, and fields can be rescaled between
pyramid levels by the ratio of ``size - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import RecipeError
from ._random import _bcast, _check_input, _check_spatial_dims, _pair, _rand, _uniform, _work_dtype
from .intensity import RandomCutout, RandomGaussianBlur, RandomGaussianNoise, RandomIntensity
from .spatial import _rotation_matrices


def identity_grid(spatial: tuple[int, ...] | list[int], device=None, dtype=torch.float32) -> Tensor:
    """Voxel coordinates ``(n, *spatial)``: channel ``k`` holds the index along axis ``k``."""
    axes = [torch.arange(int(s), device=device, dtype=dtype) for s in spatial]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _check_flow(x: Tensor, flow: Tensor) -> int:
    n = x.ndim - 2
    if n not in (2, 3):
        raise ValueError(f"expected a (B, C, H, W) or (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
    if flow.ndim != x.ndim or flow.shape[1] != n or flow.shape[2:] != x.shape[2:] or flow.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"flow must be (B, {n}, *{tuple(x.shape[2:])}) for x of shape {tuple(x.shape)}, got {tuple(flow.shape)}")
    return n


def sample_grid(flow: Tensor) -> Tensor:
    """The normalised ``grid_sample`` grid (B, *spatial, n) that reads at ``p + flow(p)``."""
    n = flow.shape[1]
    spatial = flow.shape[2:]
    pos = identity_grid(spatial, flow.device, flow.dtype).unsqueeze(0) + flow
    norm = [2 * pos[:, k] / max(int(spatial[k]) - 1, 1) - 1 for k in range(n)]
    return torch.stack(norm[::-1], dim=-1)  # grid_sample wants (x=W, y=H[, z=D]) order


def warp(x: Tensor, flow: Tensor, mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """``x`` sampled at ``p + flow(p)`` (voxel units, ``align_corners=True``); same shape as ``x``."""
    _check_flow(x, flow)
    grid = sample_grid(flow.to(x.dtype))
    if grid.shape[0] != x.shape[0]:
        grid = grid.expand(x.shape[0], *grid.shape[1:])
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def inside_mask(flow: Tensor) -> Tensor:
    """``(B, 1, *spatial)`` bool: where ``p + flow(p)`` lies inside the grid (the validity mask)."""
    n = flow.shape[1]
    pos = identity_grid(flow.shape[2:], flow.device, flow.dtype).unsqueeze(0) + flow
    ok = torch.ones_like(pos[:, :1], dtype=torch.bool)
    for k in range(n):
        ok &= (pos[:, k : k + 1] >= 0) & (pos[:, k : k + 1] <= flow.shape[2 + k] - 1)
    return ok


# --------------------------------------------------------------------------------------------
# random affine fields (COVER's views)


def _sizes(spatial_shape: Sequence[int], device, dtype) -> Tensor:
    return torch.tensor([float(s) for s in spatial_shape], device=device, dtype=dtype)


def random_affine(
    batch: int,
    spatial_shape: Sequence[int],
    rotate_deg: float,
    scale: float | Sequence[float],
    translate: float,
    shear_deg: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    isotropic_scale: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-sample affine maps ``p -> A (p - c) + c + t`` in voxels, ``c`` the image centre.

    ``A = rotation @ shear @ scale`` (tensor-axis order), float32 ``(B, n, n)``; ``t`` ``(B, n)``.

    * rotation: ``U(-rotate_deg, rotate_deg)``; 2D one angle, 3D one about each axis (composed
      as in :func:`medrep.transforms.spatial._rotation_matrices`);
    * shear: a product of elementary shears ``I + tan(a_ij) e_i e_j^T``, one per ordered pair
      ``i != j`` (2 in 2D, 6 in 3D), ``a_ij ~ U(-shear_deg, shear_deg)``; a product keeps
      ``det = 1`` so ``A`` stays invertible at any angle below 90 degrees;
    * scale: ``U(scale)`` drawn per axis, as the official COVER code does (anisotropic), or
      one factor for all axes with ``isotropic_scale``; a number ``s`` means ``(s, s)``;
    * translation: ``U(-translate, translate) * size`` voxels per axis.

    ``A`` maps an output position to the position it reads, so the content turns and zooms the
    other way: factor ``s > 1`` shows more of the image (content shrinks by ``1/s``) and a
    2D angle of +90 degrees equals ``torch.rot90(x, k=-1, dims=(-2, -1))``.
    """
    n = len(spatial_shape)
    if n not in (2, 3):
        raise ValueError(f"spatial_shape must have 2 or 3 sizes, got {tuple(spatial_shape)}")
    device = torch.device("cpu") if device is None else torch.device(device)
    lo, hi = _pair(scale, "scale")
    if lo <= 0:
        raise ValueError(f"scale must be > 0, got {(lo, hi)}")
    if not 0 <= shear_deg < 90:
        raise ValueError(f"shear_deg must be in [0, 90), got {shear_deg}")
    deg = math.pi / 180.0
    angles = _uniform(-rotate_deg, rotate_deg, (batch, 1 if n == 2 else 3), device, generator) * deg
    rot = _rotation_matrices(angles[:, 0] if n == 2 else angles, n)
    shear = torch.eye(n, device=device).repeat(batch, 1, 1)
    for i in range(n):
        for j in range(n):
            if i != j:
                elementary = torch.eye(n, device=device).repeat(batch, 1, 1)
                elementary[:, i, j] = torch.tan(_uniform(-shear_deg, shear_deg, (batch,), device, generator) * deg)
                shear = shear @ elementary
    factors = _uniform(lo, hi, (batch, 1 if isotropic_scale else n), device, generator).expand(batch, n)
    t = _uniform(-translate, translate, (batch, n), device, generator) * _sizes(spatial_shape, device, torch.float32)
    return rot @ shear @ torch.diag_embed(factors), t


def affine_flow(A: Tensor, t: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """The field ``A (p - c) + c + t - p`` ``(B, n, *spatial)``, ``c = (size - 1) / 2``.

    With ``c`` at the middle voxel, as ``align_corners=True`` puts it, ``A = I, t = 0`` is exactly
    the zero field and a pure rotation by 90 degrees maps the voxel grid onto itself.
    """
    n = A.shape[-1]
    if A.ndim != 3 or A.shape[1] != n or t.shape != (A.shape[0], n) or len(spatial_shape) != n:
        raise ValueError(f"expected A (B, n, n), t (B, n) and n sizes, got {tuple(A.shape)}, {tuple(t.shape)}, {tuple(spatial_shape)}")
    grid = identity_grid(spatial_shape, A.device, A.dtype)
    c = (_sizes(spatial_shape, A.device, A.dtype) - 1) / 2
    rel = (grid - c.reshape(n, *([1] * n))).reshape(n, -1)
    moved = A @ rel + (c + t.to(A.dtype))[:, :, None]
    return moved.reshape(A.shape[0], n, *spatial_shape) - grid


def invert_affine(A: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(A^-1, -A^-1 t)``: the map that undoes ``p -> A (p - c) + c + t`` about the same centre, so
    ``warp(warp(x, affine_flow(A, t)), affine_flow(*invert_affine(A, t)))`` is ``x`` where defined."""
    a_inv = torch.linalg.inv(A)
    return a_inv, -(a_inv @ t[..., None]).squeeze(-1)


def noise_blocks(
    x: Tensor,
    max_blocks: int = 10,
    continue_prob: float = 0.95,
    size: float | Sequence[float] = (0.1, 0.133),
    fill: float | Sequence[float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Up to ``max_blocks`` boxes per sample filled with uniform noise ``U(fill)`` per voxel.

    As COVER's in-painting: each further block is added with probability ``continue_prob`` (so a
    sample gets ``k < max_blocks`` blocks with probability ``p^k (1 - p)``, the maximum otherwise);
    box sides are fractions ``U(size)`` of the image (see :class:`RandomCutout`). Unlike constant
    cutout, the network cannot tell a filled box from its value alone.
    """
    n = _check_spatial_dims(x.ndim - 2)
    _check_input(x, n)
    b = x.shape[0]
    if max_blocks < 1 or continue_prob <= 0:
        return x
    count = (_rand((b, max_blocks), x.device, generator) < continue_prob).cumprod(1).bool()
    cutout = RandomCutout(n, prob=1.0, n_holes=1, size=size)
    mask = torch.zeros((b, *x.shape[2:]), dtype=torch.bool, device=x.device)
    for k in range(max_blocks):
        mask |= cutout.sample_mask(x.shape, x.device, generator) & _bcast(count[:, k], n + 1)
    lo, hi = _pair(fill, "fill")
    dtype = _work_dtype(x)
    noise = _uniform(lo, hi, (b, 1, *x.shape[2:]), x.device, generator).to(dtype)
    return torch.where(mask[:, None], noise, x.to(dtype)).to(x.dtype)


SPATIAL_DEFAULTS = {
    2: dict(rotate_deg=30.0, scale=(0.25, 1.75), translate=0.3, shear_deg=8.4),
    3: dict(rotate_deg=15.0, scale=(0.75, 1.25), translate=0.1, shear_deg=10.0),
}
APPEARANCE_DEFAULTS = dict(
    noise_std=0.02, blur_sigma=(0.1, 1.0), blur_prob=0.5, contrast=0.5, brightness=0.2,
    blocks=10, block_prob=0.95, block_size=(0.1, 0.133), block_fill=(0.0, 1.0),
)


class CoverViews(nn.Module):
    """COVER's pair of views with free ground truth, for a batch ``x`` (B, C, *spatial).

    Returns ``view_a``: ``x`` with appearance changes only (noise, blur, contrast, brightness,
    noise-filled blocks, in that order, per sample); ``view_b``: ``warp(x, flow)``, the clean
    image under a random affine field (zeros outside); ``flow``: that field ``psi`` (B, n, *spatial)
    in voxels, so ``view_b(p) = x(p + psi(p))``; ``mask``: ``inside_mask(flow)`` (B, 1, *spatial),
    False where ``p + psi(p)`` leaves the grid (there ``view_b`` is padding, not image).

    Correspondence: the feature of view b at ``p`` belongs to the feature of view a at
    ``p + psi(p)``, i.e. ``f_b ≈ warp(f_a, psi)`` on the mask; a network that predicts where each
    pixel of b is found in a should output ``psi``. Both views share ``x``'s grid, so ``psi`` is
    also the field on every feature level after rescaling by the ratio of ``size - 1``.

    Spatial ranges (``None``: COVER's defaults for ``spatial_dims``, 2D rotation 30 deg, scale
    0.25-1.75, translation 0.3, shear 8.4 deg; 3D 15, 0.75-1.25, 0.1, 10) are as in
    :func:`random_affine`. ``appearance`` overrides keys of ``APPEARANCE_DEFAULTS``:
    ``noise_std`` (per-sample std ``U(0, noise_std)``, always applied), ``blur_sigma`` and
    ``blur_prob``, ``contrast`` (factor ``U(1 - c, 1 + c)``), ``brightness`` (shift
    ``U(-b, b)``), ``blocks`` (max count), ``block_prob``, ``block_size``, ``block_fill``
    (see :func:`noise_blocks`). A strength of 0 turns that part off.
    """

    def __init__(
        self,
        spatial_dims: int,
        rotate_deg: float | None = None,
        scale: float | Sequence[float] | None = None,
        translate: float | None = None,
        shear_deg: float | None = None,
        appearance: dict[str, Any] | None = None,
        isotropic_scale: bool = False,
    ):
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        given = dict(rotate_deg=rotate_deg, scale=scale, translate=translate, shear_deg=shear_deg)
        spatial = {k: SPATIAL_DEFAULTS[self.spatial_dims][k] if v is None else v for k, v in given.items()}
        for key in ("rotate_deg", "translate", "shear_deg"):
            if not spatial[key] >= 0:
                raise RecipeError(f"must be >= 0, got {spatial[key]!r}", key)
        if spatial["shear_deg"] >= 90:
            raise RecipeError(f"must be below 90, got {spatial['shear_deg']!r}", "shear_deg")
        self.rotate_deg, self.translate, self.shear_deg = (float(spatial[k]) for k in ("rotate_deg", "translate", "shear_deg"))
        self.scale = _pair(spatial["scale"], "scale")
        if self.scale[0] <= 0:
            raise RecipeError(f"must be > 0, got {spatial['scale']!r}", "scale")
        self.isotropic_scale = bool(isotropic_scale)
        unknown = set(appearance or {}) - set(APPEARANCE_DEFAULTS)
        if unknown:
            raise RecipeError(f"unknown keys {sorted(unknown)}; known: {', '.join(APPEARANCE_DEFAULTS)}", "appearance")
        self.appearance = {**APPEARANCE_DEFAULTS, **(appearance or {})}
        app = self.appearance
        sd = self.spatial_dims
        try:
            self.noise = RandomGaussianNoise(sd, std=app["noise_std"], prob=1.0)
            self.blur = RandomGaussianBlur(sd, sigma=app["blur_sigma"], prob=app["blur_prob"])
            self.intensity = RandomIntensity(sd, brightness=app["brightness"], contrast=app["contrast"], gamma=0.0)
            _pair(app["block_size"], "block_size")
            _pair(app["block_fill"], "block_fill")
        except (TypeError, ValueError) as exc:
            raise RecipeError(str(exc), "appearance") from exc

    def appearance_augment(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """View a: COVER's appearance transform (noise, blur, contrast, brightness, blocks)."""
        app = self.appearance
        x = self.noise(x, generator)
        x = self.blur(x, generator)
        x = self.intensity(x, generator)
        return noise_blocks(x, int(app["blocks"]), float(app["block_prob"]), app["block_size"], app["block_fill"], generator)

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        _check_input(x, self.spatial_dims)
        spatial = tuple(x.shape[2:])
        A, t = random_affine(
            x.shape[0], spatial, self.rotate_deg, self.scale, self.translate, self.shear_deg,
            generator=generator, device=x.device, isotropic_scale=self.isotropic_scale,
        )
        flow = affine_flow(A.to(_work_dtype(x)), t.to(_work_dtype(x)), spatial)
        return dict(view_a=self.appearance_augment(x, generator), view_b=warp(x, flow), flow=flow, mask=inside_mask(flow))
