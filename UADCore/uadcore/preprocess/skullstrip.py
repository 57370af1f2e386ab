"""Skull stripping: which voxels of a scan are brain.

A scan that is already skull-stripped (a brain in a constant background) keeps its
foreground as the brain; any other head scan goes through deepbet (Fisch et al.
2024: two 3D U-Nets, one for the brain's box at 128^3, one for the mask at 256^3;
TorchScript weights inside its wheel, so nothing is downloaded). Only deepbet's
network module is imported, never its GUI (tkinter).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from uadcore.errors import ScanError
from uadcore.io.scans import Scan

SKULL_STRIP_CHOICES = ("auto", "yes", "no")
# a skull-stripped scan: at least this share of its voxels hold the one background
# value, and its foreground is no larger than a brain can be (adult brains are
# 1.0-1.8 l; a head with skull and neck is 3-7 l)
STRIPPED_BACKGROUND_SHARE = 0.25
STRIPPED_MAX_ML = 2600.0
# what deepbet may find and still be a brain (ml): below it, the scan is not a head
# or deepbet found no brain in it
BRAIN_ML_RANGE = (600.0, 2600.0)


def background_value(array: np.ndarray) -> float:
    """The most common voxel value (0 for most scans; the minimum of a z-scored one)."""
    values, counts = np.unique(array[::3, ::3, ::3], return_counts=True)
    return float(values[np.argmax(counts)])


def volume_ml(mask: np.ndarray, scan: Scan) -> float:
    return float(mask.sum() * np.prod(scan.grid.spacing) / 1000.0)


def is_skull_stripped(scan: Scan, foreground: np.ndarray | None = None) -> bool:
    """True for a brain alone in a constant background (``foreground``: the voxels
    that differ from the background value, when already known)."""
    foreground = scan.array != background_value(scan.array) if foreground is None else foreground
    share = 1.0 - float(np.mean(foreground[::3, ::3, ::3]))
    return share >= STRIPPED_BACKGROUND_SHARE and volume_ml(foreground, scan) <= STRIPPED_MAX_ML


def brain_mask(scan: Scan, skull_strip: str = "auto", device: str = "cpu") -> tuple[np.ndarray, str]:
    """The brain of ``scan``, bool (I, J, K), and where it came from: "scan" (its
    foreground) or "deepbet".

    skull_strip: "auto" (deepbet unless the scan is already skull-stripped), "yes"
    (always deepbet), "no" (the scan's foreground is the brain).
    """
    if skull_strip not in SKULL_STRIP_CHOICES:
        raise ValueError(f"skull_strip must be one of {SKULL_STRIP_CHOICES}, got {skull_strip}")
    if skull_strip != "yes":
        foreground = scan.array != background_value(scan.array)
        if skull_strip == "no" or is_skull_stripped(scan, foreground):
            if not foreground.any():
                raise ScanError(f"{scan.path}: has no nonzero voxels (a constant volume: no foreground)")
            return foreground, "scan"
    mask = run_deepbet(scan, device)
    brain_ml = volume_ml(mask, scan)
    if not BRAIN_ML_RANGE[0] <= brain_ml <= BRAIN_ML_RANGE[1]:
        raise ScanError(
            f"{scan.path}: skull stripping found {brain_ml:.0f} ml of brain (a brain is "
            f"{BRAIN_ML_RANGE[0]:.0f}-{BRAIN_ML_RANGE[1]:.0f} ml): not a T1 head scan, or no brain in it"
        )
    return mask, "deepbet"


def run_deepbet(scan: Scan, device: str = "cpu", threshold: float = 0.5) -> np.ndarray:
    """deepbet's brain mask of ``scan``, bool (I, J, K), as its own `run` computes it
    (on the scan reoriented to the closest RAS axes, largest component, holes filled)."""
    import nibabel as nib

    if min(scan.array.shape) < 8 or not np.isfinite(scan.array).all() or scan.array.max() <= scan.array.min():
        raise ScanError(f"{scan.path}: skull stripping needs a 3D head volume with varying values")
    orientation = nib.io_orientation(scan.grid.affine)
    canonical = nib.apply_orientation(scan.array, orientation).astype(np.float32)
    extractor = _extractor(device)
    try:
        probability = extractor.run_model(canonical.copy())
        mask = extractor.postprocess(probability > threshold)
    except (AssertionError, ValueError) as error:  # deepbet asserts when it finds no head
        raise ScanError(f"{scan.path}: skull stripping found no brain ({error or 'empty mask'})") from error
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), orientation)
    mask = nib.apply_orientation(mask.astype(bool), back)
    return ndimage.binary_fill_holes(np.ascontiguousarray(mask))


@functools.lru_cache(maxsize=2)
def _extractor(device: str):
    """deepbet's networks, loaded once per process and device (TorchScript files
    from its wheel)."""
    try:
        from deepbet.bet import BrainExtraction  # not `deepbet.ui`: that one imports tkinter
    except ImportError as error:
        raise ScanError(f"skull stripping needs the deepbet package (pip install deepbet): {error}") from error
    return BrainExtraction(no_gpu=device != "cuda")
