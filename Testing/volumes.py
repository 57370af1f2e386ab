"""Test volumes with known geometry: a bright spherical marker at a known RAS point
inside an ellipsoidal "brain", written in any orientation and file format."""

from __future__ import annotations

import os

import numpy as np

from uadcore.io.grid import Grid

LETTERS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
BRAIN_RADII_MM = (40.0, 45.0, 35.0)
MARKER_RADIUS_MM = 8.0  # large enough (> 0.5 % of the brain) to survive percentile clipping
BRAIN_VALUE, MARKER_VALUE = 100.0, 1000.0


def direction_for(orientation: str) -> np.ndarray:
    """Columns = world directions of i, j, k, from a code like 'LPS' or 'oblique'."""
    if orientation == "oblique":
        a, b = np.deg2rad(17.0), np.deg2rad(-23.0)
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        return rz @ rx @ np.diag([-1.0, 1.0, 1.0])
    return np.array([LETTERS[letter] for letter in orientation], float).T


def marker_volume(orientation="RAS", spacing=(1.1, 0.9, 2.3), shape=(97, 111, 41), centre=(3.0, -12.0, 20.0), marker_offset=(14.0, -11.0, 6.0)):
    """(array [i, j, k], grid, marker RAS point) for a brain with a bright marker."""
    grid = Grid.centred(centre, spacing, shape, direction_for(orientation))
    world = grid.index_to_world(np.indices(grid.shape).reshape(3, -1).T).reshape(*grid.shape, 3)
    offset = world - np.asarray(centre)
    brain = np.sum((offset / np.asarray(BRAIN_RADII_MM)) ** 2, axis=-1) <= 1.0
    marker_point = np.asarray(centre) + np.asarray(marker_offset)
    marker = np.linalg.norm(world - marker_point, axis=-1) <= MARKER_RADIUS_MM
    array = np.where(brain, BRAIN_VALUE, 0.0).astype(np.float32)
    array[marker] = MARKER_VALUE
    return array, grid, marker_point


def bright_centroid(array: np.ndarray, grid: Grid, level: float) -> np.ndarray:
    """RAS centroid of the voxels above ``level``, weighted by how far above."""
    weights = np.clip(array - level, 0.0, None)
    ijk = np.argwhere(weights > 0)
    w = weights[weights > 0]
    return (grid.index_to_world(ijk) * w[:, None]).sum(axis=0) / w.sum()


def write_itk(array: np.ndarray, grid: Grid, path: str) -> str:
    """Write with SimpleITK (NRRD, MetaImage, ...): LPS geometry in the header."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.T))
    origin, spacing, direction = grid.lps_parts()
    image.SetOrigin(origin.tolist())
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(image, path)
    return path


def write_dicom_series(array: np.ndarray, grid: Grid, folder: str) -> str:
    """Write one DICOM file per k-slice, with positions and orientation tags."""
    import SimpleITK as sitk

    os.makedirs(folder, exist_ok=True)
    origin, spacing, direction = grid.lps_parts()
    volume = sitk.GetImageFromArray(np.ascontiguousarray(np.round(array).astype(np.int16).T))
    volume.SetOrigin(origin.tolist())
    volume.SetSpacing(spacing.tolist())
    volume.SetDirection(direction.ravel().tolist())
    orientation = "\\".join(f"{v:.8f}" for v in np.concatenate([direction[:, 0], direction[:, 1]]))
    series = "1.2.826.0.1.3680043.2.1125.1.42"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        piece = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.41",
            "0020|000e": series,
            "0008|0018": f"{series}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.8f}" for v in position),
            "0020|0037": orientation,
            "0018|0050": f"{spacing[2]:.8f}",
            "0028|0030": f"{spacing[1]:.8f}\\{spacing[0]:.8f}",
        }.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(os.path.join(folder, f"slice{k:04d}.dcm"))
        writer.Execute(piece)
    return folder


def template_scan(orientation="oblique", spacing=(1.3, 1.1, 2.4), shape=(130, 160, 70), scale=1.08, pitch_degrees=9.0,
                  shift_mm=(4.0, -7.0, 12.0), marker_mni=None):
    """A skull-stripped "scan" made from the MNI152 brain placed by a known affine:
    (array [i, j, k], grid, template_to_scan 4x4 RAS, marker point in scan world or None).

    The brain is rotated about the left-right axis, scaled and shifted, sampled on a
    grid of ``orientation`` with anisotropic voxels; ``marker_mni`` puts a bright
    sphere (2x white matter, radius 6 mm) at that template point.
    """
    from uadcore.preprocess import resample
    from uadcore.preprocess.template import load_template

    template = load_template()
    a = np.deg2rad(pitch_degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    template_to_scan = np.eye(4)
    template_to_scan[:3, :3] = scale * rotation
    template_to_scan[:3, 3] = shift_mm
    low, high = template.brain_bounds
    centre = template_to_scan[:3, :3] @ ((low + high) / 2.0) + template_to_scan[:3, 3]
    grid = Grid.centred(centre, spacing, shape, direction_for(orientation))
    in_template = Grid(grid.shape, np.linalg.inv(template_to_scan) @ grid.affine)
    array = resample(template.t1, template.grid, in_template) * 1000.0
    marker = None
    if marker_mni is not None:
        marker = (template_to_scan @ np.append(marker_mni, 1.0))[:3]
        world = grid.index_to_world(np.indices(grid.shape).reshape(3, -1).T).reshape(*grid.shape, 3)
        array[np.linalg.norm(world - marker, axis=-1) <= 6.0] = 2.0 * float(np.percentile(array[array > 0], 90))
    array[array < 1.0] = 0.0  # the background exactly 0, as a skull-stripped scan's
    return array.astype(np.float32), grid, template_to_scan, marker


def assert_marker_round_trip(scan, marker, prepared, marker_mni) -> None:
    """The bright marker of ``scan`` (at ``marker``, RAS) lands within a model voxel
    of ``marker_mni`` on ``prepared``'s model grid, and its map brought back to the
    scan's grid puts it within a scan voxel of where it was."""
    on_model = bright_centroid(prepared.image, prepared.grid, 0.95)
    assert np.linalg.norm(on_model - marker_mni) <= prepared.grid.spacing.max()
    back = prepared.to_scan(prepared.image)
    assert back.shape == scan.grid.shape
    assert np.linalg.norm(bright_centroid(back, scan.grid, 0.95) - marker) <= scan.grid.spacing.max()
