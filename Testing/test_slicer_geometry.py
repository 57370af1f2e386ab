"""3D Slicer's own reader (slicer-core's vtkSlicerVolumesLogic) puts the marker,
and the maps UAD writes back, at the same RAS points UAD does: overlays sit right."""

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is in the gui extra")

from SlicerUADLib.scene import StandaloneScene, ijk_to_ras, volume_array  # noqa: E402
from uadcore.io import Grid, read_scan, write_nifti  # noqa: E402
from uadcore.preprocess import make_preset  # noqa: E402
from volumes import MARKER_VALUE, bright_centroid, marker_volume, write_itk  # noqa: E402


def slicer_centroid(scene, path, level):
    node = scene.load_volume(str(path))
    array = volume_array(node)
    return bright_centroid(array, Grid(array.shape, ijk_to_ras(node)), level)


@pytest.fixture(scope="module")
def scene():
    return StandaloneScene()


@pytest.mark.parametrize("orientation", ["RAS", "LAS", "LPS", "PIL", "oblique"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_slicer_and_uad_agree_on_the_scan_and_on_the_map(tmp_path, scene, orientation, suffix):
    array, grid, marker = marker_volume(orientation)
    path = tmp_path / f"scan{suffix}"
    write_nifti(array, grid, str(path)) if suffix == ".nii.gz" else write_itk(array, grid, str(path))

    # the scan itself, as Slicer and as UAD read it
    in_slicer = slicer_centroid(scene, path, MARKER_VALUE / 2)
    scan = read_scan(str(path))
    in_uad = bright_centroid(scan.array, scan.grid, MARKER_VALUE / 2)
    assert np.linalg.norm(in_slicer - marker) < 0.5
    assert np.linalg.norm(in_slicer - in_uad) < 1e-3

    # a map made on the model grid and written back in the scan's geometry
    prepared = make_preset("brain3d-behrendt", version=1).prepare(scan)  # no registration: not a brain
    map_path = write_nifti(prepared.to_scan(prepared.image), scan.grid, str(tmp_path / "map.nii.gz"))
    assert np.linalg.norm(slicer_centroid(scene, map_path, 0.5) - marker) <= grid.spacing.max()

    # and the model-grid volume itself, if a user opens it
    model_path = write_nifti(prepared.image, prepared.grid, str(tmp_path / "model.nii.gz"))
    assert np.linalg.norm(slicer_centroid(scene, model_path, 0.5) - marker) <= prepared.grid.spacing.max()
