"""Intensities robust to lesions: a T1 scan scaled by its white matter.

The reference is the median intensity of the scan's deep white matter, found
through the registration (the template's white-matter probability > 0.9 inside the
brain), then refined to the median of the values within 30 % of it. White matter
is the brightest and narrowest peak of a T1 brain; a lesion changes the reference
only through the share of deep white matter it covers, and hardly even then,
where a percentile of the whole brain moves with every bright voxel (a
hyperintense lesion used to darken its whole scan). The spatial prior also keeps
the reference off grey matter, which a histogram-peak finder picked on one glioma.

After scaling, white matter sits at `WHITE_MATTER_LEVEL` and values are clipped to
[0, 1] (up to 1 / WHITE_MATTER_LEVEL times white matter: enhancing tumour rims
and fat stay visible).
"""

from __future__ import annotations

import numpy as np

from uadcore.errors import ScanError

WHITE_MATTER_LEVEL = 0.75
DEEP_WHITE_MATTER_PROBABILITY = 0.9
MIN_REFERENCE_VOXELS = 50


def white_matter_reference(image: np.ndarray, white_matter: np.ndarray, path: str = "") -> float:
    """The white-matter intensity of ``image`` (I, J, K) given its deep white matter
    ``white_matter`` (bool, same shape)."""
    values = image[white_matter]
    values = values[values > 0]
    if values.size < MIN_REFERENCE_VOXELS:
        raise ScanError(f"{path}: intensity normalisation found no white matter (is it registered, and a T1 brain?)")
    first = float(np.median(values))
    near = values[(values > 0.7 * first) & (values < 1.3 * first)]
    return float(np.median(near)) if near.size >= MIN_REFERENCE_VOXELS else first


def normalise_intensity(image: np.ndarray, brain: np.ndarray, reference: float) -> np.ndarray:
    """``image`` scaled so white matter is at `WHITE_MATTER_LEVEL`, in [0, 1], 0 outside
    ``brain``; float32 (I, J, K)."""
    scaled = np.clip(image * (WHITE_MATTER_LEVEL / reference), 0.0, 1.0)
    return np.where(brain, scaled, 0.0).astype(np.float32)
