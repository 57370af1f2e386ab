"""A smooth deformation of template space, on top of the affine registration, and
resampling through it: the deformable option of the brain preparation.

The registration places a scan in template space with a 4x4 affine; a `Warp` then
says, for each template point x, where in that affinely placed scan the same
anatomy lies: at x + displacement(x). A scan comes onto a model grid by pulling
its values from those points; a map goes back onto the scan's grid through the
inverse warp (its displacement computed once, by fixed-point iteration), so both
directions are one trilinear sampling of the source.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from uadcore.io.grid import Grid
from uadcore.preprocess.resample import antialias_sigma, footprint, nonzero_box, resample, translation

INVERSE_ITERATIONS = 30  # at most; the registration's warps settle to INVERSE_TOLERANCE_MM in 14-17 (real scans)
INVERSE_TOLERANCE_MM = 1e-3  # the iteration stops when no point moves more than this


@dataclass(frozen=True, eq=False)
class Warp:
    """grid: where the displacement is sampled (template world, RAS mm).
    displacement: float32 (3, I, J, K) on ``grid``, RAS mm: the template point x
        shows what the affinely placed scan shows at x + displacement(x); beyond
        the grid the displacement of its nearest edge voxel holds."""

    grid: Grid
    displacement: np.ndarray

    def __post_init__(self):
        displacement = np.ascontiguousarray(self.displacement, dtype=np.float32)
        if displacement.shape != (3,) + self.grid.shape:
            raise ValueError(f"a warp's displacement is (3,) + {self.grid.shape}, got {displacement.shape}")
        object.__setattr__(self, "displacement", displacement)

    def at(self, points: np.ndarray) -> np.ndarray:
        """The displacement (N, 3) at world ``points`` (N, 3), trilinear."""
        index = self.grid.world_to_index(points).T
        return np.stack([ndimage.map_coordinates(component, index, order=1, mode="nearest", prefilter=False)
                         for component in self.displacement], axis=1)

    @property
    def largest_mm(self) -> float:
        """The length of the largest displacement (mm)."""
        return float(np.sqrt((self.displacement.astype(np.float64) ** 2).sum(axis=0)).max())

    @functools.cached_property
    def inverse(self) -> "Warp":
        """The warp that undoes this one, on the same grid: its displacement e solves
        e(y) = -d(y + e(y)), found by fixed-point iteration (it converges for a
        smooth warp that does not fold, which is what the registration yields) until
        no point moves by more than `INVERSE_TOLERANCE_MM`."""
        points = self.grid.index_to_world(np.indices(self.grid.shape).reshape(3, -1).T)
        inverse = -self.displacement.reshape(3, -1).T.astype(np.float64)
        for _ in range(INVERSE_ITERATIONS):
            previous, inverse = inverse, -self.at(points + inverse)
            if np.abs(inverse - previous).max() < INVERSE_TOLERANCE_MM:
                break
        return Warp(self.grid, inverse.T.reshape((3,) + self.grid.shape))


def resample_warped(array: np.ndarray, source: Grid, target: Grid, warp: Warp | None, order: int = 1) -> np.ndarray:
    """Values of ``array`` (on ``source``, 0 outside it) at the voxel centres x of
    ``target`` moved by ``warp``: at x + displacement(x) (no warp: plain
    `resample.resample`). Both grids in the warp's world. Antialiased as
    `resample.resample` is when ``target`` is coarser.

    array: shape source.shape. Returns float32 of shape target.shape.
    order: 0 nearest (labels), 1 trilinear (images, maps).
    """
    if warp is None:
        return resample(array, source, target, order=order)
    if array.shape != source.shape:
        raise ValueError(f"array shape {array.shape} is not the source grid shape {source.shape}")
    out = np.zeros(target.shape, np.float32)
    box = nonzero_box(np.asarray(array))
    if box is None:
        return out
    # only the nonzero box, with room for the blur to read (beyond it the source is 0)
    sigma = antialias_sigma(source, target) if order > 0 else None
    reach = 1 + (np.ceil(4.0 * sigma).astype(int) if sigma is not None else 0)
    low, high = np.maximum(box[0] - reach, 0), np.minimum(box[1] + reach, source.shape)
    array = np.asarray(array, np.float32)[tuple(slice(a, b) for a, b in zip(low, high))]
    if sigma is not None:
        array = ndimage.gaussian_filter(array, sigma, mode="nearest")
    target_to_source = translation(-low) @ np.linalg.inv(source.affine) @ target.affine
    # the target voxels near that box, and as far again as the warp moves any point
    near_low, near_high = footprint(target_to_source, array.shape, target.shape)
    grow = np.ceil((warp.largest_mm + 1e-3) / target.spacing).astype(int)
    near_low, near_high = np.maximum(near_low - grow, 0), np.minimum(near_high + grow, target.shape)
    if np.any(near_high <= near_low):
        return out
    indices = np.indices(tuple(near_high - near_low)).reshape(3, -1).T + near_low
    points = target.index_to_world(indices)
    points = points + warp.at(points)
    within = source.world_to_index(points).T - low[:, None]  # indices into the cropped source
    values = ndimage.map_coordinates(array, within, order=order, mode="grid-constant", cval=0.0, prefilter=False)
    out[tuple(slice(a, b) for a, b in zip(near_low, near_high))] = values.reshape(tuple(near_high - near_low))
    return out
