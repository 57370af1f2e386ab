"""Resampling an array from one physical grid onto another: the one implementation
used to bring scans onto a model grid and to bring maps back onto a scan's grid."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from uadcore.io.grid import Grid


def resample(
    array: np.ndarray,
    source: Grid,
    target: Grid,
    order: int = 1,
    fill: float = 0.0,
    antialias: bool = True,
) -> np.ndarray:
    """Values of ``array`` (on ``source``) at the voxel centres of ``target``.

    array: shape source.shape. Returns float32 of shape target.shape.
    order: 0 nearest (labels), 1 trilinear (images, maps).
    fill: value where a target voxel lies outside the source volume.
    antialias: before sampling a coarser target, blur the source with a Gaussian of
        sigma (factor - 1) / 2 voxels per axis, where factor is the target's finest
        spacing over the source spacing, so downsampling does not alias.
    """
    if array.shape != source.shape:
        raise ValueError(f"array shape {array.shape} is not the source grid shape {source.shape}")
    array = np.asarray(array, dtype=np.float32)
    if antialias and order > 0:
        factor = target.spacing.min() / source.spacing
        sigma = np.where(factor > 1.0, (factor - 1.0) / 2.0, 0.0)
        sigma[np.asarray(source.shape) == 1] = 0.0
        if sigma.any():
            array = ndimage.gaussian_filter(array, sigma, mode="nearest")

    # target index -> world -> source index, as one affine map
    target_to_source = np.linalg.inv(source.affine) @ target.affine
    out = ndimage.affine_transform(
        array,
        target_to_source[:3, :3],
        offset=target_to_source[:3, 3],
        output_shape=target.shape,
        order=order,
        # outside the source, interpolate towards `fill` over half a voxel, so a
        # one-slice source still yields its values on its own plane
        mode="grid-constant",
        cval=fill,
        prefilter=False,
    )
    return out.astype(np.float32, copy=False)
