"""What every preprocessing preset is: a named, versioned recipe that resamples a
scan onto a model grid in physical space, cuts it into model inputs, and puts
model outputs back together and back onto the scan's own grid.

A preset is stored in every checkpoint as ``{"name", "version", "params"}`` so a
trained model always sees scans prepared the way it was trained. Brain presets
from version 2 on run the brain preparation first (`uadcore.preprocess.brain`:
skull stripping, N4, affine registration to MNI152, white-matter intensities) and
sample a fixed grid in MNI space; version 1 (a grid centred on the scan's nonzero
voxels, percentile scaling) stays available for the checkpoints trained with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from uadcore.errors import ScanError, UADError
from uadcore.io.grid import Grid
from uadcore.io.scans import Scan, refuse_a_mask
from uadcore.preprocess.resample import nonzero_box, resample
from uadcore.preprocess.skullstrip import SKULL_STRIP_CHOICES


@dataclass(eq=False)  # compared and hashed by identity: a scan in use, not a value
class Prepared:
    """A scan brought onto a preset's model grid.

    image: float32, shape grid.shape, intensities scaled to [0, 1].
    region: bool, shape grid.shape; the brain (or foreground) on the model grid.
    grid: the model grid (RAS mm; in MNI space for a registered scan).
    scan_grid: the scan's own grid, where maps go back to (and are written with).
    to_template: 4x4, the scan's world -> the model grid's world (the
        registration; identity for presets that do not register).
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
        return resample(volume, self.grid, self.scan_grid_in_model_space(), order=order)

    def scan_grid_in_model_space(self) -> Grid:
        """The scan's voxels placed in the model grid's world (through the registration)."""
        return Grid(self.scan_grid.shape, np.asarray(self.to_template) @ self.scan_grid.affine)


class Preset:
    """Base of all presets. Subclasses set `name`, `version` (the newest),
    `defaults` and implement `model_grid`, `inputs` and `assemble`; brain presets
    set `brain_from_version`."""

    name: ClassVar[str]
    version: ClassVar[int]  # an instance may be an older version (a stored checkpoint's)
    defaults: ClassVar[dict]
    brain_from_version: ClassVar[int | None] = None  # the version that added the brain preparation
    unit: ClassVar[str | None] = None  # what one model input is, when not the whole volume: "slice", "patch"
    needs_3d: ClassVar[bool] = True
    zero_outside_region: ClassVar[bool] = True

    def __init__(self, version: int | None = None, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise UADError(
                f"preset {self.name}: unknown option(s) {', '.join(unknown)}; "
                f"options are {', '.join(sorted(self.defaults))}"
            )
        version = type(self).version if version is None else int(version)
        if not 1 <= version <= type(self).version:
            raise UADError(f"preset {self.name} version {version} is not one this UAD implements (1 to {type(self).version})")
        self.version = version
        self.params = {**self.defaults, **params}
        if self.params.get("skull_strip", "auto") not in SKULL_STRIP_CHOICES:
            raise UADError(f"preset {self.name}: skull_strip must be one of {', '.join(SKULL_STRIP_CHOICES)}")

    @property
    def prepares_brain(self) -> bool:
        """True when this preset runs the brain preparation and samples MNI space."""
        return self.brain_from_version is not None and self.version >= self.brain_from_version

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "params": _json_values(self.params)}

    def centre(self, scan: Scan, region: np.ndarray) -> np.ndarray:
        """Where the model grid is centred (RAS mm): the template's brain in MNI space,
        or (version 1) the box around the scan's region."""
        if self.prepares_brain:
            from uadcore.preprocess.template import load_template

            low, high = load_template().brain_bounds
            return (low + high) / 2.0
        return region_centre(scan.grid, region)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    # ---- the recipe ---------------------------------------------------------
    def prepare(self, scan: Scan, region: np.ndarray | None = None) -> Prepared:
        """Resample ``scan`` onto the model grid and scale its intensities.

        region: optional bool mask on the scan's grid (e.g. a brain mask); by
            default the nonzero voxels, which is the brain of a skull-stripped scan.
        """
        if self.needs_3d and scan.is_2d:
            raise ScanError(f"{scan.path}: is 2D ({scan.grid.describe()}); preset {self.name} needs a 3D volume")
        refuse_a_mask(scan)
        if self.prepares_brain and not scan.is_2d:
            return self._prepare_brain(scan, region)
        region = scan.array != 0 if region is None else np.asarray(region, bool)
        if not region.any():
            raise ScanError(f"{scan.path}: has no nonzero voxels (an empty image or an empty mask)")
        grid = self.model_grid(scan, region)
        image = resample(np.where(region, scan.array, 0.0), scan.grid, grid)
        on_grid = resample(region.astype(np.float32), scan.grid, grid) > 0.5
        if not on_grid.any():
            raise ScanError(f"{scan.path}: its nonzero region falls outside the {self.name} grid")
        image = scale_intensity(image, on_grid, self.params.get("upper_percentile", 99.5))
        if self.zero_outside_region:
            image[~on_grid] = 0.0
        prepared = Prepared(image, on_grid, grid, scan.grid, self)
        prepared.units = self.select_units(prepared)
        return prepared

    def _prepare_brain(self, scan: Scan, brain: np.ndarray | None) -> Prepared:
        """The brain preparation, then one resampling through the registration onto
        the model grid in MNI space."""
        from uadcore.preprocess.brain import prepare_brain

        prepared_brain = prepare_brain(scan, brain, self.params["skull_strip"])
        grid = self.model_grid(scan, prepared_brain.brain)
        placed = prepared_brain.grid_in_template(scan.grid)
        image = resample(prepared_brain.image, placed, grid)
        on_grid = resample(prepared_brain.brain.astype(np.float32), placed, grid) > 0.5
        if not on_grid.any():
            raise ScanError(f"{scan.path}: its brain falls outside the {self.name} grid after registration")
        image[~on_grid] = 0.0
        prepared = Prepared(image, on_grid, grid, scan.grid, self, to_template=prepared_brain.to_template,
                            quality=prepared_brain.quality)
        prepared.units = self.select_units(prepared)
        return prepared

    def model_grid(self, scan: Scan, region: np.ndarray) -> Grid:
        raise NotImplementedError

    def select_units(self, prepared: Prepared) -> np.ndarray:
        return np.zeros((0,), np.int64)

    def inputs(self, prepared: Prepared, volume: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def assemble(self, prepared: Prepared, outputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def scale_intensity(image: np.ndarray, region: np.ndarray, upper_percentile: float) -> np.ndarray:
    """Clip at the ``upper_percentile`` of the values inside ``region`` and scale to
    [0, 1]; the low end is 0, or the mirrored percentile when the scan has negative
    values (e.g. CT). Returns a new float32 array."""
    values = image[region]
    high = float(np.percentile(values, upper_percentile))
    low = min(0.0, float(np.percentile(values, 100.0 - upper_percentile)))
    if high <= low:
        high = low + 1.0  # a constant image scales to 0
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


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


def _json_values(value):
    """Params as JSON-friendly values (tuples -> lists, numpy -> Python)."""
    if isinstance(value, dict):
        return {k: _json_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_values(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
