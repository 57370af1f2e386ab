"""`patches2d`: square tiles for the patch autoencoder of Wei et al.

Works on 2D images (a mammogram or radiograph read as a one-slice volume) and on
the axial slices of 3D volumes:

- a 2D image keeps its own plane and orientation; only its pixel size changes when
  ``spacing_mm`` is set;
- a 3D volume is a brain scan (version 2, ``brain`` true): it goes through the
  brain preparation (`uadcore.preprocess.brain`) and is cut in axial slices of a
  RAS-aligned grid in MNI space of ``spacing_mm`` voxels (default 1 mm) around the
  template's brain;
- any other 3D volume (``brain`` false, or version 1) is resampled onto a
  RAS-aligned grid of ``spacing_mm`` voxels (default: its finest spacing) covering
  its nonzero region, cut in axial slices.

Each slice is padded to at least one patch and tiled by ``patch`` x ``patch``
tiles every ``stride`` pixels, the last tile flush with the edge, so every pixel is
covered. Tiles with less than ``min_foreground`` of their pixels in the foreground
(the brain, or the nonzero voxels) are not given to the model. Intensities are
those of the brain preparation, or scaled to [0, 1] with the 99.5th percentile of
the foreground.

Model input: (N, 1, patch, patch), N kept tiles; `Prepared.units` holds each tile's
corner (i0, j0, k) on the model grid.
"""

from __future__ import annotations

import numpy as np

from uadcore.io.grid import Grid
from uadcore.io.scans import Scan
from uadcore.preprocess.preset import Prepared, Preset
from uadcore.preprocess.resample import region_bounds


class Patches2D(Preset):
    name = "patches2d"
    version = 2
    brain_from_version = 2
    unit = "patch"  # what one model input is
    needs_3d = False
    zero_outside_region = False
    defaults = {
        "patch": 128,
        "stride": 64,
        "spacing_mm": None,
        "min_foreground": 0.05,
        "upper_percentile": 99.5,  # not for brain scans
        "brain": True,  # version 2: 3D volumes are brain scans (false: any other 3D image)
        "skull_strip": "auto",  # auto | yes | no, for brain scans (see uadcore.preprocess.skullstrip)
        "registration": "affine",  # affine | deformable (see uadcore.preprocess.brain)
    }

    @property
    def prepares_brain(self) -> bool:
        return super().prepares_brain and bool(self.params["brain"])

    def model_grid(self, scan: Scan, region: np.ndarray) -> Grid:
        patch = int(self.params["patch"])
        if scan.is_2d:
            plane = _plane_grid(scan.grid, self.params["spacing_mm"])
        elif self.prepares_brain:
            from uadcore.preprocess.template import load_template

            template = load_template()
            plane = _axial_grid(template.grid, template.brain, self.params["spacing_mm"] or 1.0)
        else:
            plane = _axial_grid(scan.grid, region, self.params["spacing_mm"])
        shape = (max(plane.shape[0], patch), max(plane.shape[1], patch), plane.shape[2])
        return Grid(shape, plane.affine)  # same origin: padding grows the far edges

    def select_units(self, prepared: Prepared) -> np.ndarray:
        """Corners (i0, j0, k) of the kept tiles, shape (N, 3)."""
        patch, stride = int(self.params["patch"]), int(self.params["stride"])
        size_i, size_j, n_slices = prepared.grid.shape
        corners = [
            (i0, j0, k)
            for k in range(n_slices)
            for i0 in tile_starts(size_i, patch, stride)
            for j0 in tile_starts(size_j, patch, stride)
        ]
        corners = np.asarray(corners, np.int64).reshape(-1, 3)
        foreground = np.array(
            [prepared.region[i0 : i0 + patch, j0 : j0 + patch, k].mean() for i0, j0, k in corners]
        )
        return corners[foreground >= self.params["min_foreground"]]

    def inputs(self, prepared: Prepared, volume: np.ndarray) -> np.ndarray:
        """(N, 1, patch, patch)."""
        patch = int(self.params["patch"])
        tiles = [volume[i0 : i0 + patch, j0 : j0 + patch, k] for i0, j0, k in prepared.units]
        return np.stack(tiles)[:, None].astype(np.float32) if tiles else np.zeros((0, 1, patch, patch), np.float32)

    def assemble(self, prepared: Prepared, outputs: np.ndarray) -> np.ndarray:
        """Per-tile maps (N, 1, patch, patch) -> volume (per-tile scores: through
        `Prepared.paint`). Overlapping tiles are averaged; pixels no kept tile covers are 0.
        """
        patch = int(self.params["patch"])
        outputs = outputs.reshape(len(prepared.units), patch, patch)
        total = np.zeros(prepared.grid.shape, np.float64)
        count = np.zeros(prepared.grid.shape, np.float64)
        for (i0, j0, k), tile in zip(prepared.units, outputs):
            total[i0 : i0 + patch, j0 : j0 + patch, k] += tile
            count[i0 : i0 + patch, j0 : j0 + patch, k] += 1.0
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0).astype(np.float32)


def tile_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of tiles covering ``size`` pixels (size >= patch)."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _plane_grid(grid: Grid, spacing_mm: float | None) -> Grid:
    """The grid of a one-slice image, its slice axis moved last, pixels resized."""
    flat = grid.shape.index(1)
    in_plane = [axis for axis in range(3) if axis != flat]
    columns = grid.affine[:3, :3][:, in_plane + [flat]]
    shape = [grid.shape[axis] for axis in in_plane] + [1]
    if spacing_mm:
        old = grid.spacing[in_plane]
        shape[:2] = [int(np.floor((n - 1) * s / spacing_mm)) + 1 for n, s in zip(shape[:2], old)]
        columns = columns.copy()
        columns[:, :2] *= spacing_mm / old
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = grid.origin
    return Grid(tuple(shape), affine)


def _axial_grid(grid: Grid, region: np.ndarray, spacing_mm: float | None) -> Grid:
    """RAS-aligned grid of isotropic voxels covering the bounding box of ``region``."""
    spacing = float(spacing_mm or grid.spacing.min())
    low, high = region_bounds(grid, region)
    shape = tuple(int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(low, high))
    return Grid.from_parts(shape, low, (spacing,) * 3)
