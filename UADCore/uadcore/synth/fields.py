"""Smooth random fields: the source of every deformation, bias field and texture in
the synthetic cohort."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_random_field(rng: np.random.Generator, shape, control_points=(4, 4, 4)) -> np.ndarray:
    """A smooth random field of ``shape`` (float32), standard deviation about 0.7.

    Gaussian noise on a coarse lattice of ``control_points`` is interpolated with
    cubic splines up to an intermediate lattice and linearly to ``shape``: smooth at
    the scale of the control spacing and cheap for large volumes.
    """
    coarse = rng.standard_normal(tuple(max(2, int(c)) for c in control_points)).astype(np.float32)
    middle_shape = [min(int(n), 4 * c) for n, c in zip(shape, coarse.shape)]
    middle = ndimage.zoom(coarse, [m / c for m, c in zip(middle_shape, coarse.shape)], order=3, mode="nearest", grid_mode=True)
    return linear_resize(middle.astype(np.float32), shape)


def linear_resize(array: np.ndarray, shape) -> np.ndarray:
    """Separable linear interpolation of ``array`` to ``shape``, voxel centres
    aligned (as ``ndimage.zoom(..., order=1, grid_mode=True)``, several times faster
    for the large outputs here)."""
    for axis, size in enumerate(shape):
        old = array.shape[axis]
        position = np.clip((np.arange(size) + 0.5) * old / size - 0.5, 0, old - 1)
        below = np.floor(position).astype(np.intp)
        above = np.minimum(below + 1, old - 1)
        weight = (position - below).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
        array = np.take(array, below, axis=axis) * (1 - weight) + np.take(array, above, axis=axis) * weight
    return array
