"""`brain2d-slices`: axial slices of the brain for 2D models.

Version 2 runs the brain preparation first (`uadcore.preprocess.brain`) and
centres the grid on the MNI152 template's brain; version 1 (older checkpoints)
centres it on the scan's nonzero voxels and scales by the 99.5th percentile.

The model grid is RAS-aligned and centred on the brain: ``size`` x ``size`` pixels
over a square in-plane field of view (``field_of_view_mm``, 192 mm by default, so
3 mm pixels at 64x64 as for the VAE of Zimmerer et al., 0.86 mm at 224x224 for the
MAE), and axial slices ``slice_spacing_mm`` apart (default: the pixel size) over
``slab_mm`` in the S-I direction. Slices whose brain covers less than
``min_brain_fraction`` of the image are not given to the model; which slices were
kept is recorded in `Prepared.units`.

Model input: (K, 1, size, size), K kept slices, each slice's axes (R, A).
"""

from __future__ import annotations

import numpy as np

from uadcore.io.grid import Grid
from uadcore.io.scans import Scan
from uadcore.preprocess.preset import Prepared, Preset


class Brain2DSlices(Preset):
    name = "brain2d-slices"
    version = 2
    brain_from_version = 2
    unit = "slice"  # what one model input is
    defaults = {
        "size": 64,
        "field_of_view_mm": 192.0,
        "slice_spacing_mm": None,
        "slab_mm": 166.0,
        "min_brain_fraction": 0.05,
        "skull_strip": "auto",  # auto | yes | no (see uadcore.preprocess.skullstrip)
        "registration": "affine",  # affine | deformable (see uadcore.preprocess.brain)
        "upper_percentile": 99.5,  # version 1 only
    }

    def model_grid(self, scan: Scan, region: np.ndarray) -> Grid:
        size = int(self.params["size"])
        pixel = float(self.params["field_of_view_mm"]) / size
        slice_spacing = float(self.params["slice_spacing_mm"] or pixel)
        n_slices = max(1, int(round(float(self.params["slab_mm"]) / slice_spacing)))
        spacing = (pixel, pixel, slice_spacing)
        return Grid.centred(self.centre(scan, region), spacing, (size, size, n_slices))

    def select_units(self, prepared: Prepared) -> np.ndarray:
        """Indices of the kept axial slices, shape (K,)."""
        brain_fraction = prepared.region.mean(axis=(0, 1))
        return np.flatnonzero(brain_fraction >= self.params["min_brain_fraction"])

    def inputs(self, prepared: Prepared, volume: np.ndarray) -> np.ndarray:
        """(K, 1, size, size)."""
        return np.ascontiguousarray(np.moveaxis(volume[:, :, prepared.units], 2, 0)[:, None])

    def assemble(self, prepared: Prepared, outputs: np.ndarray) -> np.ndarray:
        """(K, 1, size, size) or (K, size, size) -> volume; slices not kept are 0."""
        size = prepared.grid.shape[0]
        volume = np.zeros(prepared.grid.shape, np.float32)
        volume[:, :, prepared.units] = np.moveaxis(outputs.reshape(-1, size, size), 0, 2)
        return volume
