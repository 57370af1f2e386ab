"""The MNI152 2009a (symmetric, non-linear) T1 template and its grey- and
white-matter probability maps, as shipped inside the nilearn wheel (no download):
the space every brain scan is registered to, and the anatomy every synthetic
subject is made from."""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from uadcore.errors import UADError
from uadcore.io.grid import Grid
from uadcore.preprocess.resample import region_bounds

FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
BRAIN_THRESHOLD = 0.2  # T1 level above which a voxel is brain (as nilearn's brain mask)


@dataclass(frozen=True)
class Template:
    """Template volumes on one 1 mm grid, float32 in [0, 1]; brain is bool;
    brain_bounds is the world box (RAS mm, lowest and highest corner) around it."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    grid: Grid
    brain_bounds: tuple[np.ndarray, np.ndarray]


def template_folder() -> str:
    """nilearn's data folder, found without importing nilearn (slow to import)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise UADError("the MNI152 template comes with the nilearn package (pip install nilearn)")
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    import nibabel as nib

    folder = template_folder()
    volumes, affine = {}, None
    for key, name in FILES.items():
        image = nib.load(os.path.join(folder, name))
        volume = np.asarray(image.dataobj, dtype=np.float32)
        volumes[key] = volume / volume.max()  # stored as 0..255 codes without a scale
        affine = image.affine if affine is None else affine
    brain = ndimage.binary_fill_holes(volumes["t1"] > BRAIN_THRESHOLD)
    # keep only the largest connected piece: the template has specks outside the brain
    labels, count = ndimage.label(brain)
    if count > 1:
        sizes = ndimage.sum_labels(brain, labels, index=np.arange(1, count + 1))
        brain = labels == 1 + int(np.argmax(sizes))
    grid = Grid(volumes["t1"].shape, affine)
    return Template(
        t1=volumes["t1"] * brain,
        gm=volumes["gm"],
        wm=volumes["wm"],
        brain=brain,
        grid=grid,
        brain_bounds=region_bounds(grid, brain),  # once, not twice per subject
    )
