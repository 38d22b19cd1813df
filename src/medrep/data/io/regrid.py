"""Bring a volume and its label map onto a RAS grid of a chosen spacing, the affine respected.

Reorientation is exact (nibabel's permutation and flips, no interpolation); resampling is MONAI's
``Spacing`` (voxel 0 stays where it is; only new voxels whose centres lie inside the old extent
are kept, so no value is made up beyond the border). The image is blurred before it shrinks
(Gaussian, sigma ``(factor - 1) / 2`` voxels, as scikit-image's anti-aliasing) and interpolated
trilinearly; labels are taken nearest-neighbour so that they stay labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError


def to_ras(array: np.ndarray, affine: np.ndarray, where: Path) -> tuple[np.ndarray, np.ndarray]:
    """``array`` permuted and flipped to RAS, and its affine; a volume whose axes are not near the world
    axes (oblique by more than about 25 degrees) is refused, naming ``where``."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    change = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    out = nib.orientations.apply_orientation(array, change)
    ras = affine @ nib.orientations.inv_ornt_aff(change, array.shape)
    columns = np.abs(ras[:3, :3])
    if (np.diag(columns) < 0.9 * np.linalg.norm(columns, axis=0)).any():
        raise DataError(f"oblique axes (affine {ras[:3, :3].round(3).tolist()}): resample it to the world axes first", where)
    return np.ascontiguousarray(out), ras


def resample_pair(image: np.ndarray, labels: np.ndarray, affine: np.ndarray,
                  spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (anti-aliased, trilinear) and labels (nearest) on the ``spacing`` mm grid, and that grid's affine."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import GaussianSmooth, Spacing

    old = np.linalg.norm(affine[:3, :3], axis=0)
    shape = [int(np.floor((n - 1) * o / s + 1e-6)) + 1 for n, o, s in zip(image.shape, old, spacing)]
    sigma = [max(0.0, (s / o - 1) / 2) for o, s in zip(old, spacing)]
    img = torch.from_numpy(image.astype(np.float32))[None]
    if max(sigma) > 0:
        img = GaussianSmooth(sigma=sigma)(img)
        img = img.as_tensor() if isinstance(img, MetaTensor) else img  # the grid's affine is set below, once
    lab = torch.from_numpy(labels.astype(np.float32))[None]
    new_img, new_lab = (Spacing(pixdim=spacing, mode=mode, padding_mode="border")(
        MetaTensor(x, affine=torch.as_tensor(affine)), output_spatial_shape=shape) for x, mode in ((img, "bilinear"), (lab, "nearest")))
    return (new_img[0].numpy().astype(np.float32), np.rint(new_lab[0].numpy()).astype(np.int64),
            new_img.affine.numpy().astype(np.float64))
