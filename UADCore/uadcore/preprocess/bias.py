"""N4 bias-field correction (Tustison et al. 2010) with SimpleITK, inside the brain.

The field is smooth, so it is fitted on the scan shrunk to about 6 mm voxels and
then evaluated on the scan's own grid; the scan is divided by it. (On an IXI scan,
fitting at 6 mm instead of 4 mm took 1.2 s instead of 3.9 s and moved the log
field by at most 0.044, median 0.013; capping the iterations instead moved it by
0.2-0.3.)
"""

from __future__ import annotations

import numpy as np

from uadcore.io.scans import Scan
from uadcore.preprocess.itk import from_sitk, to_sitk

FIT_SPACING_MM = 6.0
ITERATIONS = (50, 50, 30)  # per fitting level (B-spline meshes doubling in resolution)


def correct_bias(scan: Scan, brain: np.ndarray) -> np.ndarray:
    """``scan``'s intensities divided by the N4 bias field fitted inside ``brain``;
    float32 (I, J, K), 0 outside the brain.

    N4 models a multiplicative field on positive intensities: a scan with values
    <= 0 inside the brain (z-scored, or interpolated int16) is shifted to start at
    a small positive value first.
    """
    import SimpleITK as sitk

    values = scan.array[brain]
    offset = 0.0
    if values.min() <= 0:
        offset = float(values.min()) - 0.01 * float(np.ptp(values) or 1.0)
    positive = np.where(brain, scan.array - offset, 0.0).astype(np.float32)
    image = to_sitk(positive, scan.grid)
    mask = to_sitk(brain, scan.grid, np.uint8)
    shrink = [max(1, int(round(FIT_SPACING_MM / s))) for s in scan.grid.spacing]
    small_image = sitk.Shrink(image, shrink)
    small_mask = sitk.Shrink(mask, shrink)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(ITERATIONS))
    n4.Execute(small_image, small_mask)
    log_field = from_sitk(n4.GetLogBiasFieldAsImage(image))
    return np.where(brain, positive / np.exp(log_field), 0.0).astype(np.float32)
