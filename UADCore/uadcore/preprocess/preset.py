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

from typing import ClassVar

import numpy as np

from uadcore.errors import ScanError, UADError
from uadcore.io.grid import Grid
from uadcore.io.scans import Scan, refuse_a_mask
from uadcore.preprocess.brain import REGISTRATION_CHOICES, prepare_brain
from uadcore.preprocess.prepared import Prepared
from uadcore.preprocess.resample import region_centre, resample
from uadcore.preprocess.skullstrip import SKULL_STRIP_CHOICES
from uadcore.preprocess.warp import resample_warped


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
        if self.params.get("registration", "affine") not in REGISTRATION_CHOICES:
            raise UADError(f"preset {self.name}: registration must be one of {', '.join(REGISTRATION_CHOICES)}")

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
        prepared_brain = prepare_brain(scan, brain, self.params["skull_strip"], self.params["registration"])
        grid = self.model_grid(scan, prepared_brain.brain)
        placed, warp = prepared_brain.grid_in_template(scan.grid), prepared_brain.warp
        image = resample_warped(prepared_brain.image, placed, grid, warp)
        on_grid = resample_warped(prepared_brain.brain.astype(np.float32), placed, grid, warp) > 0.5
        if not on_grid.any():
            raise ScanError(f"{scan.path}: its brain falls outside the {self.name} grid after registration")
        image[~on_grid] = 0.0
        prepared = Prepared(image, on_grid, grid, scan.grid, self, to_template=prepared_brain.to_template,
                            quality=prepared_brain.quality, warp=warp)
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


def _json_values(value):
    """Params as JSON-friendly values (tuples -> lists, numpy -> Python)."""
    if isinstance(value, dict):
        return {k: _json_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_values(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
