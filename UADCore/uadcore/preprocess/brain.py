"""The brain preparation every brain preset runs before resampling a scan onto its
model grid in MNI space:

1. skull stripping (`skullstrip`: deepbet, skipped for a skull-stripped scan or
   when a brain mask is given);
2. N4 bias-field correction inside the brain (`bias`);
3. affine registration to the MNI152 2009a template (`register`), and with
   ``registration="deformable"`` a smooth warp on top of it;
4. intensities scaled by the deep white matter (`intensity`).

Each step is timed; the result says how well the registration went. A step that
fails raises `ScanError` naming the scan and the step. The brain mask and the
registration (steps 1 and 3, most of the time) are kept in the disk cache under
``brain/``, keyed by the scan's voxels, grid and options, so every preset shares them
(the warp in an entry of its own: the affine one serves both options).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from uadcore.errors import ScanError
from uadcore.io.grid import Grid
from uadcore.io.scans import Scan
from uadcore.preprocess import cache as disk_cache
from uadcore.preprocess.bias import correct_bias
from uadcore.preprocess.intensity import DEEP_WHITE_MATTER_PROBABILITY, normalise_intensity, white_matter_reference
from uadcore.preprocess.memory import RecentResults
from uadcore.preprocess.register import MIN_CORRELATION, deform_to_template, register_to_template
from uadcore.preprocess.resample import resample
from uadcore.preprocess.skullstrip import brain_mask, volume_ml
from uadcore.preprocess.template import load_template
from uadcore.preprocess.warp import Warp

# bump when the steps compute something else (it is part of the prepared-scan cache key;
# 3: lesion masks go to the model grid through the registration too)
REVISION = 3
REGISTRATION_CHOICES = ("affine", "deformable")
WARP_REVISION = 1  # bump when the deformable step computes something else


def revision(registration: str = "affine") -> int | str:
    """What the prepared-scan cache keys on for this preparation: `REVISION`, and
    `WARP_REVISION` with the deformable registration."""
    return REVISION if registration == "affine" else f"{REVISION} warp {WARP_REVISION}"


@dataclass
class BrainScan:
    """A scan's brain, ready to be resampled onto a template grid.

    image: float32 (I, J, K) on the scan's grid, bias-corrected, white matter at
        `intensity.WHITE_MATTER_LEVEL`, in [0, 1], 0 outside the brain.
    brain: bool (I, J, K), the brain.
    to_template: 4x4, scan world -> template world (RAS mm).
    warp: the deformable part of the registration (None: affine only).
    quality: brain_ml, skull_stripped_by ("scan", "mask" or "deepbet"),
        registration_correlation, white_matter_reference, and seconds per step.
    """

    image: np.ndarray
    brain: np.ndarray
    to_template: np.ndarray
    quality: dict = field(default_factory=dict)
    warp: Warp | None = None

    def grid_in_template(self, scan_grid: Grid) -> Grid:
        """The scan's voxels placed in template space."""
        return Grid(scan_grid.shape, self.to_template @ scan_grid.affine)


# Brains prepared in this process, by content: the presets of several models (3D,
# slices at 64 and at 224 pixels) share one skull stripping and registration per scan
BRAINS = RecentResults(max_bytes=1 << 30, size_of=lambda b: b.image.nbytes + b.brain.nbytes)


def prepare_brain(scan: Scan, brain: np.ndarray | None = None, skull_strip: str = "auto", registration: str = "affine",
                  device: str = "cpu") -> BrainScan:
    """Steps 1-4 on ``scan``; ``brain`` (bool on the scan's grid) replaces step 1;
    ``registration`` is one of `REGISTRATION_CHOICES`. Remembered in this process
    (the same voxels, grid and options give the same result); the brain mask, the
    registration and the warp are also kept in the disk cache, so another preset,
    or another process, only repeats the cheap steps 2 and 4."""
    key = _content(scan, brain, skull_strip)
    remembered = f"{key} {registration}"
    if remembered not in BRAINS:
        BRAINS.put(remembered, _prepare_brain(scan, brain, skull_strip, registration, device, key))
    return BRAINS.get(remembered)


def _content(scan: Scan, brain: np.ndarray | None, skull_strip: str) -> str:
    digest = hashlib.blake2b(np.ascontiguousarray(scan.array).tobytes(), digest_size=20)
    digest.update(np.asarray(scan.grid.affine).tobytes() + repr(scan.grid.shape).encode() + skull_strip.encode())
    digest.update(f"revision {REVISION}".encode())
    if brain is not None:
        digest.update(b"brain" + np.packbits(np.asarray(brain, bool)).tobytes())
    return digest.hexdigest()


def _prepare_brain(scan: Scan, brain: np.ndarray | None, skull_strip: str, registration: str, device: str,
                   key: str) -> BrainScan:
    if scan.is_2d or min(scan.grid.shape) < 8:
        raise ScanError(f"{scan.path}: is not a 3D brain volume ({scan.grid.describe()})")
    if not np.isfinite(scan.array).all():
        raise ScanError(f"{scan.path}: has NaN or infinite values")
    seconds = {}
    located = _load_located(key, scan.grid.shape)
    if located is not None:  # skull stripping and registration done before: only N4 again
        brain, source, to_template, correlation = located
        started = time.perf_counter()
        corrected = correct_bias(scan, brain)
        seconds["bias"] = time.perf_counter() - started
    else:
        started = time.perf_counter()
        if brain is not None:
            brain, source = np.asarray(brain, bool), "mask"
            if not brain.any():
                raise ScanError(f"{scan.path}: its brain mask is empty")
        else:
            brain, source = brain_mask(scan, skull_strip, device)
        seconds["skull_strip"] = time.perf_counter() - started

        started = time.perf_counter()
        corrected = correct_bias(scan, brain)
        seconds["bias"] = time.perf_counter() - started

        started = time.perf_counter()
        fitted = register_to_template(corrected, scan)
        seconds["register"] = time.perf_counter() - started
        if not fitted.ok:
            raise ScanError(
                f"{scan.path}: registration to MNI152 failed (correlation {fitted.correlation:.2f} with the "
                f"template, under {MIN_CORRELATION}); is it a T1 brain scan?"
            )
        to_template, correlation = fitted.to_template, fitted.correlation
        _store_located(key, brain, source, to_template, correlation)

    warp = None
    if registration == "deformable":
        warp = _load_warp(key)
        if warp is None:
            started = time.perf_counter()
            warp = deform_to_template(corrected, scan, to_template)
            seconds["deform"] = time.perf_counter() - started
            _store_warp(key, warp)

    started = time.perf_counter()
    template = load_template()
    scan_in_template = Grid(scan.grid.shape, to_template @ scan.grid.affine)
    white_matter = (resample(template.wm, template.grid, scan_in_template) > DEEP_WHITE_MATTER_PROBABILITY) & brain
    reference = white_matter_reference(corrected, white_matter, scan.path)
    image = normalise_intensity(corrected, brain, reference)
    seconds["intensity"] = time.perf_counter() - started

    quality = {
        "brain_ml": round(volume_ml(brain, scan), 1),
        "skull_stripped_by": source,
        "registration_correlation": round(correlation, 4),
        **({"warp_largest_mm": round(warp.largest_mm, 2)} if warp is not None else {}),
        "white_matter_reference": reference,
        "seconds": {step: round(value, 3) for step, value in seconds.items()},
    }
    return BrainScan(image, brain, to_template, quality, warp)


# The disk cache of steps 1 and 3 (the brain mask and the registration): most of the
# preparation's time, and the same for every preset
def _brain_root() -> str | None:
    root = disk_cache.cache_root()
    return os.path.join(root, "brain") if root else None


def _load_located(key: str, shape: tuple) -> tuple | None:
    """(brain, source, to_template, correlation) stored for ``key``, or None."""
    root = _brain_root()
    entry = disk_cache.load_entry(root, key) if root else None
    if entry is None:
        return None
    arrays, meta = entry
    try:
        brain = np.unpackbits(np.asarray(arrays["brain"]), count=int(np.prod(shape))).reshape(shape).astype(bool)
        return brain, meta["source"], np.asarray(meta["to_template"], float), float(meta["correlation"])
    except (KeyError, TypeError, ValueError):
        return None


def _store_located(key: str, brain: np.ndarray, source: str, to_template: np.ndarray, correlation: float) -> None:
    root = _brain_root()
    if root:
        disk_cache.store_entry(root, key, {"brain": np.packbits(brain.ravel())},
                               {"source": source, "to_template": np.asarray(to_template).tolist(), "correlation": correlation})


def _load_warp(key: str) -> Warp | None:
    root = _brain_root()
    entry = disk_cache.load_entry(root, f"{key}-warp-{WARP_REVISION}") if root else None
    try:
        return disk_cache.load_warp(*entry) if entry is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def _store_warp(key: str, warp: Warp) -> None:
    root = _brain_root()
    if root:
        disk_cache.store_entry(root, f"{key}-warp-{WARP_REVISION}", *disk_cache.with_warp({}, {}, warp))
