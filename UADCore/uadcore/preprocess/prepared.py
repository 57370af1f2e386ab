"""A scan on a preset's model grid (`Prepared`): what the models see, the cache
stores and the maps go back from. It knows its preset only as the object that
cuts inputs and assembles outputs (`uadcore.preprocess.preset.Preset`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from uadcore.io.grid import Grid
from uadcore.preprocess.warp import Warp, resample_warped


@dataclass(eq=False)  # compared and hashed by identity: a scan in use, not a value
class Prepared:
    """A scan brought onto a preset's model grid.

    image: float32, shape grid.shape, intensities scaled to [0, 1].
    region: bool, shape grid.shape; the brain (or foreground) on the model grid.
    grid: the model grid (RAS mm; in MNI space for a registered scan).
    scan_grid: the scan's own grid, where maps go back to (and are written with).
    to_template: 4x4, the scan's world -> the model grid's world (the
        registration; identity for presets that do not register).
    warp: the deformable part of the registration, on top of ``to_template``
        (None: affine only).
    quality: what the preparation measured (brain volume, registration
        correlation, seconds per step), for reports and `uad check`.
    units: which parts of the model grid the model sees: kept slice indices (K,)
        for slice presets, patch corners (N, 3) as (i0, j0, k) for patch presets,
        empty for whole-volume presets.
    """

    image: np.ndarray
    region: np.ndarray
    grid: Grid
    scan_grid: Grid
    preset: "Preset"
    units: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    to_template: np.ndarray = field(default_factory=lambda: np.eye(4))
    quality: dict = field(default_factory=dict)
    warp: Warp | None = None

    def inputs(self, volume: np.ndarray | None = None) -> np.ndarray:
        """Model inputs as a float32 batch (shape set by the preset), cut from the
        image or from another ``volume`` on the model grid (e.g. the region)."""
        volume = self.image if volume is None else np.asarray(volume, dtype=np.float32)
        return self.preset.inputs(self, volume)

    def assemble(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs (one per input) -> float32 volume of shape grid.shape."""
        return self.preset.assemble(self, np.asarray(outputs, dtype=np.float32))

    def seen_region(self) -> np.ndarray:
        """bool, grid shape: the region's voxels that some model input covers (the
        kept slices or patches; the whole region for a whole-volume preset)."""
        return self.assemble(self.inputs(self.region)) > 0.5

    def paint(self, values: np.ndarray) -> np.ndarray:
        """One score per model input (N,) -> arrays shaped like the inputs, each
        filled with its input's score (for `assemble`)."""
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        shape = self.inputs(self.region).shape
        return np.broadcast_to(values.reshape((-1,) + (1,) * (len(shape) - 1)), shape)

    def to_scan(self, volume: np.ndarray, order: int = 1) -> np.ndarray:
        """A volume on the model grid -> float32 volume on the scan's own grid."""
        inverse = self.warp.inverse if self.warp is not None else None
        return resample_warped(volume, self.grid, self.scan_grid_in_model_space(), inverse, order=order)

    def from_scan(self, volume: np.ndarray, order: int = 1) -> np.ndarray:
        """A volume on the scan's own grid (e.g. a lesion mask) -> float32 volume on
        the model grid, through the registration as the image came."""
        return resample_warped(volume, self.scan_grid_in_model_space(), self.grid, self.warp, order=order)

    def to_scan_points(self, points: np.ndarray) -> np.ndarray:
        """Points in the model grid's world (N, 3) -> the same anatomy in the scan's
        own world (N, 3), RAS mm: through the warp, then back through the affine
        registration (a point, where `to_scan` resamples a whole volume)."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        if self.warp is not None:
            points = points + self.warp.at(points)
        back = np.linalg.inv(np.asarray(self.to_template, np.float64))
        return points @ back[:3, :3].T + back[:3, 3]

    def scan_ml_per_voxel(self) -> float:
        """The volume (ml) on the scan's own grid of one model-grid voxel, through
        the affine registration (the warp's local stretch not counted)."""
        scale = abs(float(np.linalg.det(np.asarray(self.to_template, np.float64)[:3, :3])))
        return float(np.prod(self.grid.spacing)) / scale / 1000.0

    def scan_grid_in_model_space(self) -> Grid:
        """The scan's voxels placed in the model grid's world (through the registration)."""
        return Grid(self.scan_grid.shape, np.asarray(self.to_template) @ self.scan_grid.affine)

