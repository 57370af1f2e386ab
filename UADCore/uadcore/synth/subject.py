"""One synthetic subject: the MNI152 anatomy, moved, deformed and re-contrasted,
written on a grid of its own orientation and spacing, optionally with lesions.

Everything is decided by the subject's random generator, so a subject depends only
on (seed, index), never on how many processes made the cohort.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from uadcore.io.grid import Grid
from uadcore.synth.fields import smooth_random_field
from uadcore.synth.lesions import DEFAULT_KINDS, paint_lesion
from uadcore.preprocess.template import Template

# How written files are laid out: axis codes (as in `orientation_code`), and spacings.
ORIENTATIONS = ("RAS", "LAS", "LPS", "LPI", "ASR", "PIL", "oblique")
SPACINGS_MM = ((2.0, 2.0, 2.0), (1.8, 1.8, 2.8), (2.2, 2.2, 2.2), (2.5, 2.0, 2.0), (1.9, 2.4, 1.9))
MARGIN_MM = 6.0  # room around the moved brain, for deformation and air

# Per-subject variation, each drawn uniformly. The anatomy moves only a little, as
# in scans affinely registered to a template (as the paper's were); how the file is
# laid out (orientation, spacing) varies freely, to exercise preprocessing.
ROTATION_DEG = 3.0  # about each axis, +-
SCALE = (0.96, 1.04)  # per axis
SHIFT_MM = 5.0  # per axis, +-
WARP_MM = (2.0, 4.0)  # amplitude of the smooth non-linear deformation
CONTRAST_GAMMA = (0.9, 1.1)
TISSUE_GAIN = 0.08  # +- relative gain of grey and of white matter
BIAS_STRENGTH = (0.02, 0.12)  # log-amplitude of the multiplicative bias field
NOISE_SIGMA = (0.03, 0.06)  # Rician noise, relative to the white-matter level
SCANNER_GAIN = (400.0, 1200.0)  # arbitrary units of the written int16 values
_UNIT = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


@dataclass
class Subject:
    """A subject ready to write: int16 image and bool lesion mask on ``grid``."""

    image: np.ndarray
    mask: np.ndarray | None
    grid: Grid
    info: dict = field(default_factory=dict)


def make_subject(template: Template, seed: int, index: int, lesion_kind: str | None) -> Subject:
    """Subject ``index`` of the cohort of ``seed``; ``lesion_kind`` None = healthy."""
    # three independent streams: anatomy, lesion, scanner; so the same subject
    # with and without its lesion differs only inside the lesion mask
    rng = np.random.default_rng([seed, index])
    lesion_rng, scanner_rng = np.random.default_rng([seed, index, 1]), np.random.default_rng([seed, index, 2])
    world_to_template, motion = _random_motion(rng, template)
    grid, layout = _random_grid(rng, template, world_to_template)

    # template position of every voxel: the inverse motion, then a smooth warp (mm)
    ijk = np.indices(grid.shape, dtype=np.float32).reshape(3, -1).T
    world = grid.index_to_world(ijk)
    warp_mm = rng.uniform(*WARP_MM)
    warp = np.stack([smooth_random_field(rng, grid.shape, (5, 6, 5)).ravel() for _ in range(3)], 1)
    in_template = template.grid.world_to_index(world @ world_to_template[:3, :3].T + world_to_template[:3, 3] + warp_mm * warp).T

    def sample(volume, where=None):
        """``volume`` (template grid) at every voxel, or only where ``where`` is True."""
        points = in_template if where is None else in_template[:, where.ravel()]
        values = ndimage.map_coordinates(volume, points, order=1, mode="constant", cval=0.0, prefilter=False)
        if where is None:
            return values.reshape(grid.shape)
        out = np.zeros(grid.shape, np.float32)
        out[where] = values
        return out

    brain = sample(template.brain.astype(np.float32)) > 0.5
    gm, wm = sample(template.gm, brain), sample(template.wm, brain)

    # tissue contrast: a gamma curve on the T1 contrast and per-tissue gains
    gamma = rng.uniform(*CONTRAST_GAMMA)
    gm_gain, wm_gain = rng.uniform(-TISSUE_GAIN, TISSUE_GAIN, size=2)
    image = np.power(np.clip(sample(template.t1, brain), 0.0, None), gamma) * (1.0 + gm_gain * gm + wm_gain * wm)
    image = (image * brain).astype(np.float32)

    mask = None
    if lesion_kind is not None:
        mask = paint_lesion(lesion_kind, lesion_rng, image, {"brain": brain, "gm": gm, "wm": wm}, grid)

    # scanner: smooth multiplicative bias field, Rician noise inside the brain, a gain
    bias_strength = scanner_rng.uniform(*BIAS_STRENGTH)
    image *= np.exp(bias_strength * smooth_random_field(scanner_rng, grid.shape, (3, 3, 3)))
    noise_sigma = scanner_rng.uniform(*NOISE_SIGMA)
    real = image + noise_sigma * scanner_rng.standard_normal(grid.shape, dtype=np.float32)
    imaginary = noise_sigma * scanner_rng.standard_normal(grid.shape, dtype=np.float32)
    image = np.sqrt(real * real + imaginary * imaginary) * brain
    gain = scanner_rng.uniform(*SCANNER_GAIN)
    image = np.clip(np.round(image * gain), 0, np.iinfo(np.int16).max).astype(np.int16)

    info = {
        "orientation": layout["orientation"],
        "spacing_mm": layout["spacing_mm"],
        "shape": list(grid.shape),
        **motion,
        "warp_mm": round(warp_mm, 3),
        "contrast_gamma": round(gamma, 3),
        "bias_strength": round(bias_strength, 3),
        "noise_sigma": round(noise_sigma, 4),
        "lesion": lesion_kind,
        "lesion_volume_ml": round(float(mask.sum() * np.prod(grid.spacing)) / 1000.0, 3) if mask is not None else 0.0,
    }
    return Subject(image, mask, grid, info)


def choose_lesion_kind(seed: int, index: int, kinds=DEFAULT_KINDS) -> str:
    """The lesion kind of unhealthy subject ``index``: cycles through ``kinds`` from
    a seed-dependent start, so every kind is present in any cohort that has room."""
    start = int(np.random.default_rng([seed, 10**9]).integers(len(kinds)))
    return kinds[(start + index) % len(kinds)]


def _random_motion(rng, template: Template):
    """A small rotation, scaling and shift about the brain centre. Returns the world-to-template 4x4 map and its values."""
    low, high = template.brain_bounds
    centre = (low + high) / 2.0
    angles = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG, size=3))
    scale = rng.uniform(*SCALE, size=3)
    shift = rng.uniform(-SHIFT_MM, SHIFT_MM, size=3)
    rotation = _rotation(angles)
    forward = rotation @ np.diag(scale)  # template -> subject world, about the centre
    inverse = np.linalg.inv(forward)
    world_to_template = np.eye(4)
    world_to_template[:3, :3] = inverse
    world_to_template[:3, 3] = centre - inverse @ (centre + shift)
    motion = {
        "rotation_deg": np.round(np.rad2deg(angles), 2).tolist(),
        "scale": np.round(scale, 3).tolist(),
        "shift_mm": np.round(shift, 2).tolist(),
    }
    return world_to_template, motion


def _random_grid(rng, template: Template, world_to_template: np.ndarray):
    """The written file's grid: a random orientation and spacing, covering the
    moved brain with a margin."""
    orientation = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    spacing = np.asarray(SPACINGS_MM[int(rng.integers(len(SPACINGS_MM)))])
    if orientation == "oblique":
        direction = _rotation(np.deg2rad(rng.uniform(-20.0, 20.0, size=3))) @ np.diag([-1.0, -1.0, 1.0])
    else:
        direction = np.array([_UNIT[letter] for letter in orientation], float).T
    low, high = template.brain_bounds
    box = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    template_to_world = np.linalg.inv(world_to_template)
    corners = box @ template_to_world[:3, :3].T + template_to_world[:3, 3]
    along_axes = corners @ direction  # corner coordinates along the grid's axes
    first = along_axes.min(axis=0) - MARGIN_MM
    shape = np.ceil((along_axes.max(axis=0) + MARGIN_MM - first) / spacing).astype(int) + 1
    grid = Grid.from_parts(shape, direction @ first, spacing, direction)
    return grid, {"orientation": orientation, "spacing_mm": spacing.tolist()}


def _rotation(angles) -> np.ndarray:
    """Rotation about x, then y, then z by ``angles`` (radians)."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    about_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    about_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return about_z @ about_y @ about_x
