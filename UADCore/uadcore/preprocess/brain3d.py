"""`brain3d-behrendt`: the whole-volume protocol of Behrendt et al.

The paper: skull-strip (HD-BET), N4, register affinely to an atlas at 1 mm, crop to
the brain, zero-pad to 160x192x166, downsample by 0.4 to 64x77x66. Here (version 2)
that is the brain preparation (`uadcore.preprocess.brain`: deepbet, N4, affine to
MNI152 2009a, white-matter intensities) and one resampling onto a RAS-aligned grid
in MNI space of 2.5 mm voxels (1 mm / 0.4) and 64x77x66 voxels (160x192x166 mm,
the padded field of view, times 0.4), centred on the template's brain. Voxels
outside the brain are 0.

Version 1 (older checkpoints): no brain steps, the grid centred on the box around
the scan's nonzero voxels, intensities clipped at the 99.5th percentile.

Model input: (1, 1, 64, 77, 66) per scan, axes (R, A, S) of the model grid.
"""

from __future__ import annotations

import numpy as np

from uadcore.io.grid import Grid
from uadcore.io.scans import Scan
from uadcore.preprocess.preset import Prepared, Preset


class Brain3DBehrendt(Preset):
    name = "brain3d-behrendt"
    version = 2
    brain_from_version = 2
    defaults = {
        "field_of_view_mm": (160.0, 192.0, 166.0),  # R-L, A-P, S-I after cropping
        "downsample": 0.4,
        "skull_strip": "auto",  # auto | yes | no (see uadcore.preprocess.skullstrip)
        "registration": "affine",  # affine | deformable (see uadcore.preprocess.brain)
        "upper_percentile": 99.5,  # version 1 only
    }

    def model_grid(self, scan: Scan, region: np.ndarray) -> Grid:
        field_of_view = np.asarray(self.params["field_of_view_mm"], float)
        shape = tuple(int(n) for n in np.round(field_of_view * self.params["downsample"]))
        spacing = np.full(3, 1.0 / self.params["downsample"])
        return Grid.centred(self.centre(scan, region), spacing, shape)

    def inputs(self, prepared: Prepared, volume: np.ndarray) -> np.ndarray:
        """(1, 1, I, J, K): one volume, one channel."""
        return volume[None, None]

    def assemble(self, prepared: Prepared, outputs: np.ndarray) -> np.ndarray:
        """(1, 1, I, J, K) or (I, J, K) -> (I, J, K)."""
        return outputs.reshape(prepared.grid.shape)
