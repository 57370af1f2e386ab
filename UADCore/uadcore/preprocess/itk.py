"""Arrays on a UAD `Grid` (RAS, indexed [i, j, k]) to and from SimpleITK images
(LPS, indexed [k, j, i]), for the steps that ITK does: N4 and registration."""

from __future__ import annotations

import numpy as np

from uadcore.io.grid import Grid

# RAS 4x4 affine <-> LPS 4x4 affine: F @ A @ F, F its own inverse
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_sitk(array: np.ndarray, grid: Grid, dtype=np.float32):
    """A SimpleITK image of ``array`` (shape grid.shape) placed where ``grid`` says."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype).T))
    origin, spacing, direction = grid.lps_parts()
    image.SetOrigin(origin.tolist())
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    return image


def from_sitk(image) -> np.ndarray:
    """The voxels of a SimpleITK image as a float32 array indexed [i, j, k]."""
    import SimpleITK as sitk

    return np.ascontiguousarray(sitk.GetArrayFromImage(image).T, dtype=np.float32)


def grid_of(image) -> Grid:
    """The `Grid` of a 3D SimpleITK image."""
    return Grid.from_lps(image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def affine_to_ras(transform) -> np.ndarray:
    """A SimpleITK affine-like transform (LPS points -> LPS points) as a 4x4 RAS
    matrix acting on RAS points."""
    matrix = np.asarray(transform.GetMatrix(), float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), float)
    translation = np.asarray(transform.GetTranslation(), float)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + centre - matrix @ centre
    return _FLIP @ lps @ _FLIP


def ras_to_affine(matrix_ras: np.ndarray):
    """A 4x4 RAS matrix as a SimpleITK AffineTransform on LPS points."""
    import SimpleITK as sitk

    lps = _FLIP @ np.asarray(matrix_ras, float) @ _FLIP
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(lps[:3, :3].ravel().tolist())
    transform.SetTranslation(lps[:3, 3].tolist())
    return transform


__all__ = ["affine_to_ras", "from_sitk", "grid_of", "ras_to_affine", "to_sitk"]
