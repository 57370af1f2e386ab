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
    # target index -> world -> source index, as one affine map
    target_to_source = np.linalg.inv(source.affine) @ target.affine
    separable = order == 1 and _axis_aligned(target_to_source[:3, :3])
    sigma = antialias_sigma(source, target) if antialias and order > 0 else None
    # the blur's reach: scipy's kernel radius (truncate 4) and one voxel
    spread = np.zeros(3, int) if sigma is None else np.ceil(4.0 * sigma).astype(int) + 1
    low, high = np.zeros(3, int), np.array(array.shape)
    if sigma is not None:
        # blur only the source voxels the target can reach (a brain's box in a scan
        # with air around it), with room for the blur to read
        reach_low, reach_high = footprint(np.linalg.inv(target_to_source), target.shape, source.shape)
        low, high = np.maximum(reach_low - spread, low), np.minimum(reach_high + spread, high)
    if fill == 0.0:
        # only the nonzero voxels (a brain in air, a map that is 0 outside the brain) and
        # what the blur spreads them to can give a nonzero value; beyond, the cropped
        # source reads as 0 (its edge repeated by the blur, `fill` when sampling), as
        # the whole one does
        box = nonzero_box(array)
        if box is None:
            return np.zeros(target.shape, np.float32)
        low, high = np.maximum(box[0] - spread, low), np.minimum(box[1] + spread, high)
    if np.any(high <= low):
        return np.full(target.shape, fill, np.float32)
    if np.any(low > 0) or np.any(high < array.shape):
        array, target_to_source = array[_box(low, high)], translation(-low) @ target_to_source
    if sigma is not None and not separable:  # the separable path blurs axis by axis while sampling, on ever smaller arrays
        array, sigma = ndimage.gaussian_filter(array, sigma, mode="nearest"), None

    low, high = footprint(target_to_source, array.shape, target.shape)
    if np.any(high <= low):
        return np.full(target.shape, fill, np.float32)
    if np.any(low > 0) or np.any(high < target.shape):
        # only the target voxels near the source can differ from `fill` (e.g. a map on
        # a brain's box, brought back onto a scan with much air around the brain)
        out = np.full(target.shape, fill, np.float32)
        out[_box(low, high)] = _sample(array, target_to_source @ translation(low), tuple(high - low), order, fill, separable, sigma)
        return out
    return _sample(array, target_to_source, target.shape, order, fill, separable, sigma)


def antialias_sigma(source: Grid, target: Grid) -> np.ndarray | None:
    """Per source axis, the sigma (voxels) of the antialiasing blur: (factor - 1) / 2
    where the target is coarser by ``factor``; None when no axis needs one."""
    factor = target.spacing.min() / source.spacing
    sigma = np.where(factor > 1.0, (factor - 1.0) / 2.0, 0.0)
    sigma[np.asarray(source.shape) == 1] = 0.0
    return sigma if sigma.any() else None


def nonzero_box(array: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The index box [low, high) around the nonzero voxels of a 3D ``array``; None
    when it has none."""
    nonzero = array != 0
    columns = nonzero.any(axis=2)  # (I, J): one pass for the first two axes
    present = [np.flatnonzero(columns.any(axis=1)), np.flatnonzero(columns.any(axis=0)), np.flatnonzero(nonzero.any(axis=(0, 1)))]
    if present[0].size == 0:
        return None
    return np.array([p[0] for p in present]), np.array([p[-1] + 1 for p in present])


def _box(low, high) -> tuple:
    return tuple(slice(a, b) for a, b in zip(low, high))


def translation(offset) -> np.ndarray:
    """4x4 affine moving indices by ``offset``."""
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def footprint(target_to_source: np.ndarray, source_shape, target_shape) -> tuple[np.ndarray, np.ndarray]:
    """The index box [low, high) of the target voxels that lie within one voxel of
    the source volume; outside it, sampling (order 0 or 1) gives only ``fill``."""
    source_to_target = np.linalg.inv(target_to_source)
    corners = np.array(np.meshgrid(*[(-1.0, n) for n in source_shape], indexing="ij")).reshape(3, -1)
    in_target = source_to_target[:3, :3] @ corners + source_to_target[:3, 3:]
    low = np.clip(np.floor(in_target.min(axis=1)).astype(int), 0, target_shape)
    high = np.clip(np.ceil(in_target.max(axis=1)).astype(int) + 1, 0, target_shape)
    return low, high


def _sample(array: np.ndarray, target_to_source: np.ndarray, shape, order: int, fill: float, separable: bool, blur=None) -> np.ndarray:
    """``array`` sampled at the target indices of ``shape`` mapped by ``target_to_source``
    (``separable``: axis-aligned and trilinear; ``blur``: its per-axis antialiasing)."""
    if separable:
        return _separable_linear(array, target_to_source, shape, fill, blur)
    if order == 1:
        return _itk_linear(array, target_to_source, shape, fill)
    out = ndimage.affine_transform(
        array,
        target_to_source[:3, :3],
        offset=target_to_source[:3, 3],
        output_shape=shape,
        order=order,
        # outside the source, interpolate towards `fill` over half a voxel, so a
        # one-slice source still yields its values on its own plane
        mode="grid-constant",
        cval=fill,
        prefilter=False,
    )
    return out.astype(np.float32, copy=False)


def _itk_linear(array: np.ndarray, target_to_source: np.ndarray, shape, fill: float) -> np.ndarray:
    """Trilinear sampling for any affine map with ITK's multi-threaded resampler
    (several times faster than scipy's on rotated grids), giving the values of
    ``ndimage.affine_transform(order=1, mode="grid-constant")``: the source is
    padded with one voxel of ``fill``, so a neighbour outside it counts as ``fill``
    where ITK would repeat the edge voxel."""
    import SimpleITK as sitk

    # ITK indexes a numpy array's axes in reverse order, (k, j, i): rather than copy
    # the arrays into that order and back, reverse the map's axes instead
    source = sitk.GetImageFromArray(np.pad(array, 1, constant_values=np.float32(fill)))
    transform = sitk.AffineTransform(3)  # target index -> padded source index, both reversed
    transform.SetMatrix(target_to_source[2::-1, 2::-1].ravel().tolist())
    transform.SetTranslation((target_to_source[2::-1, 3] + 1.0).tolist())
    resampler = sitk.ResampleImageFilter()  # output grid: origin 0, spacing 1, so a physical point is an index
    resampler.SetSize([int(n) for n in reversed(shape)])
    resampler.SetTransform(transform)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(float(fill))
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(source))


def _axis_aligned(linear: np.ndarray) -> bool:
    """True when each target axis runs along one source axis (permuted, flipped or
    scaled, not rotated): then trilinear sampling is three 1D interpolations."""
    significant = np.abs(linear) > 1e-6 * np.abs(linear).max()
    return bool((significant.sum(axis=0) == 1).all() and (significant.sum(axis=1) == 1).all())


def _separable_linear(array: np.ndarray, target_to_source: np.ndarray, shape, fill: float, blur=None) -> np.ndarray:
    """Trilinear sampling for axis-aligned maps, one source axis at a time: the same
    values as ``ndimage.affine_transform(order=1, mode="grid-constant")`` (a
    neighbour outside the source counts as ``fill``), several times faster.

    blur: per source axis, the sigma of a Gaussian (mode "nearest") applied along
    that axis just before sampling it: the same values as ``ndimage.gaussian_filter``
    on the whole array first (the two act on different axes and commute), on arrays
    that the axes sampled before have already shrunk.
    """
    linear, offset = target_to_source[:3, :3], target_to_source[:3, 3]
    target_axis_of = [int(np.argmax(np.abs(linear[p]))) for p in range(3)]
    out = array
    for p, q in enumerate(target_axis_of):
        if blur is not None and blur[p] > 0:
            out = ndimage.gaussian_filter1d(out, blur[p], axis=p, mode="nearest")
        coordinates = linear[p, q] * np.arange(shape[q], dtype=np.float64) + offset[p]
        out = _interpolate_axis(out, p, coordinates, fill)
    return np.ascontiguousarray(np.transpose(out, [target_axis_of.index(q) for q in range(3)]), dtype=np.float32)


def _interpolate_axis(array: np.ndarray, axis: int, coordinates: np.ndarray, fill: float) -> np.ndarray:
    """Linear interpolation of ``array`` along ``axis`` at ``coordinates`` (voxel units)."""
    size = array.shape[axis]
    low = np.floor(coordinates).astype(np.int64)
    weight = (coordinates - low).astype(np.float32)
    along = [1] * array.ndim
    along[axis] = -1

    def take(index):  # the values at ``index`` along the axis (a new array), ``fill`` outside
        values = np.take(array, np.clip(index, 0, size - 1), axis=axis)
        outside = (index < 0) | (index >= size)
        if outside.any():
            values[(slice(None),) * axis + (outside,)] = fill
        return values

    # in place, on the arrays `take` made: the same products and sum, fewer new arrays
    result = take(low)
    result *= (1.0 - weight).reshape(along)
    upper = take(low + 1)
    upper *= weight.reshape(along)
    result += upper
    return result


def region_bounds(grid: Grid, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World box (RAS mm, lowest and highest corner) around ``region``'s voxels."""
    low, high = nonzero_box(region)
    high = high - 1  # the last voxel inside
    corners = grid.index_to_world(
        [[i, j, k] for i in (low[0], high[0]) for j in (low[1], high[1]) for k in (low[2], high[2])]
    )
    return corners.min(axis=0), corners.max(axis=0)


def region_centre(grid: Grid, region: np.ndarray) -> np.ndarray:
    """World centre (RAS mm) of the box around ``region``'s voxels."""
    low, high = region_bounds(grid, region)
    return (low + high) / 2.0
