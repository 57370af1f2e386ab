"""Lesions painted into a synthetic subject, with their exact masks.

Each kind changes the subject's tissue intensities (before bias field and noise are
added, so lesions get both like the rest of the scan) inside a shape defined in
world millimetres, and returns the changed voxels as its mask. Kinds:

- ``tumour``: an irregular mass (radius 10-24 mm, whole tumour volumes like
  those of gliomas in BraTS), dark on (non-contrast) T1, half of them with a darker
  necrotic centre, surrounded by oedema that spreads along the white matter
  (mildly dark). The mask is core and oedema together.
- ``wm-lesions``: 3-10 small white-matter lesions (radius 3-6 mm), dark on T1 as
  chronic MS lesions ("black holes").
- ``cavity``: a resection-like cavity (radius 10-22 mm) near the cortex, filled
  with CSF-dark signal.
- ``small-mass``: one small mass (5-15 mm across) in the white matter, dark on T1,
  with a thin rim of mild oedema: the lesions a curation most easily misses. Not
  among the `DEFAULT_KINDS` a cohort cycles through; asked for by name.
"""

from __future__ import annotations

import numpy as np

from uadcore.io.grid import Grid
from uadcore.synth.fields import smooth_random_field

KINDS = ("tumour", "wm-lesions", "cavity", "small-mass")
DEFAULT_KINDS = ("tumour", "wm-lesions", "cavity")  # a cohort's unhealthy subjects cycle through these


def paint_lesion(kind: str, rng, image, tissue, grid: Grid) -> np.ndarray:
    """Paint one lesion of ``kind`` into ``image`` in place; return its bool mask.

    image: float32 subject intensities on ``grid`` (0 outside the brain).
    tissue: dict of arrays on ``grid``: "brain" (bool), "wm" and "gm" probabilities.
    """
    painters = {"tumour": _tumour, "wm-lesions": _wm_lesions, "cavity": _cavity, "small-mass": _small_mass}
    mask = np.zeros(grid.shape, bool)
    painters[kind](rng, image, tissue, grid, mask)
    return mask


def _tumour(rng, image, tissue, grid, mask, radius_mm=(10.0, 24.0), oedema=(1.4, 1.9)):
    wm_level = float(np.median(image[tissue["wm"] > 0.9]))
    centre = _pick_centre(rng, tissue["wm"] > 0.7, tissue["brain"])
    radius = rng.uniform(*radius_mm)
    oedema_reach = rng.uniform(*oedema)
    box, distance = _irregular_distance(rng, grid, centre, radius * oedema_reach + 2 * grid.spacing.max(), radius)
    brain = tissue["brain"][box]
    core = (distance < 1.0) & brain
    oedema = (distance < oedema_reach) & ~core & brain & (tissue["wm"][box] > 0.35)
    texture = 1.0 + 0.15 * smooth_random_field(rng, core.shape, (3, 3, 3))
    local = image[box]
    local[oedema] *= rng.uniform(0.72, 0.88)
    core_values = wm_level * rng.uniform(0.35, 0.6) * texture
    if rng.random() < 0.5:  # a necrotic centre, darker still
        core_values = np.where(distance < 0.45, wm_level * rng.uniform(0.2, 0.3), core_values)
    local[core] = core_values[core]
    mask[box] |= core | oedema


def _small_mass(rng, image, tissue, grid, mask):
    _tumour(rng, image, tissue, grid, mask, radius_mm=(2.5, 7.5), oedema=(1.1, 1.3))


def _wm_lesions(rng, image, tissue, grid, mask):
    for _ in range(int(rng.integers(3, 11))):
        centre = _pick_centre(rng, tissue["wm"] > 0.85, tissue["brain"])
        radius = rng.uniform(3.0, 6.0)
        box, distance = _irregular_distance(rng, grid, centre, 1.5 * radius + 2 * grid.spacing.max(), radius)
        lesion = (distance < 1.0) & tissue["brain"][box]
        image[box][lesion] *= rng.uniform(0.45, 0.7)
        mask[box] |= lesion


def _cavity(rng, image, tissue, grid, mask):
    wm_level = float(np.median(image[tissue["wm"] > 0.9]))
    centre = _pick_centre(rng, tissue["gm"] > 0.6, tissue["brain"])
    radius = rng.uniform(10.0, 22.0)
    box, distance = _irregular_distance(rng, grid, centre, 1.5 * radius + 2 * grid.spacing.max(), radius)
    cavity = (distance < 1.0) & tissue["brain"][box]
    level = wm_level * rng.uniform(0.08, 0.25)
    local = image[box]
    local[cavity] = level * (1.0 + 0.1 * rng.standard_normal(int(cavity.sum())))
    mask[box] |= cavity


def _pick_centre(rng, candidates: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A random voxel index among ``candidates`` (or anywhere in the brain)."""
    voxels = np.argwhere(candidates & brain)
    if len(voxels) == 0:
        voxels = np.argwhere(brain)
    return voxels[rng.integers(len(voxels))]


def _irregular_distance(rng, grid: Grid, centre, reach_mm: float, radius_mm: float):
    """Normalised ellipsoidal distance from a random, irregular ellipsoid.

    Returns (box, distance): the index box of voxels within ``reach_mm`` of the
    centre voxel and, on it, distance < 1 inside the ellipsoid, whose semi-axes are
    ``radius_mm`` times 0.75-1.25 in random directions and whose surface is
    perturbed by a smooth field (about +-20 %).
    """
    half = np.ceil(reach_mm / grid.spacing).astype(int)
    low = np.maximum(np.asarray(centre) - half, 0)
    high = np.minimum(np.asarray(centre) + half + 1, grid.shape)
    box = tuple(slice(l, h) for l, h in zip(low, high))
    shape = tuple(high - low)
    ijk = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(low, high)], indexing="ij"), -1).reshape(-1, 3)
    offset = grid.index_to_world(ijk) - grid.index_to_world(centre)
    rotation = _random_rotation(rng)
    semi_axes = radius_mm * rng.uniform(0.75, 1.25, size=3)
    distance = np.linalg.norm((offset @ rotation) / semi_axes, axis=1).reshape(shape)
    distance *= 1.0 + 0.2 * smooth_random_field(rng, shape, (3, 3, 3))
    return box, distance


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))
