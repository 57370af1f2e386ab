"""The brain preparation (skull stripping, N4, registration to MNI152, white-matter
intensities): geometry through the registration, the lesion-robust intensities,
skull stripping on real scans, detection of skull-stripped scans, bad input."""

import os

import numpy as np
import pytest

from uadcore.errors import ScanError
from uadcore.io import Grid, Scan, read_scan, write_nifti
from uadcore.preprocess import make_preset, preset_from_dict
from uadcore.preprocess.intensity import WHITE_MATTER_LEVEL, normalise_intensity, white_matter_reference
from uadcore.preprocess.register import register_to_template
from uadcore.preprocess.skullstrip import brain_mask, is_skull_stripped, volume_ml
from uadcore.preprocess.template import load_template
from volumes import assert_marker_round_trip, bright_centroid, template_scan

REALDATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "realdata")
MARKER_MNI = np.array([24.0, -10.0, 18.0])  # right hemisphere white matter


@pytest.fixture(scope="module")
def marked():
    """A rotated, scaled, oblique, anisotropic brain with a marker, and its preparation."""
    array, grid, template_to_scan, marker = template_scan(marker_mni=MARKER_MNI)
    scan = Scan(array, grid, "marked.nii.gz")
    return scan, template_to_scan, marker, make_preset("brain3d-behrendt").prepare(scan)


def test_registration_recovers_the_known_placement(marked):
    scan, template_to_scan, _, prepared = marked
    template = load_template()
    points = template.grid.index_to_world(np.argwhere(template.brain)[::997])  # brain points in MNI mm
    in_scan = points @ template_to_scan[:3, :3].T + template_to_scan[:3, 3]
    back = in_scan @ prepared.to_template[:3, :3].T + prepared.to_template[:3, 3]
    error = np.linalg.norm(back - points, axis=1)
    assert np.median(error) < 1.5 and error.max() < 4.0, (np.median(error), error.max())
    assert prepared.quality["registration_correlation"] > 0.8
    assert prepared.quality["skull_stripped_by"] == "scan"


def test_a_marker_goes_to_mni_space_and_comes_back_to_its_native_voxel(marked, tmp_path):
    scan, _, marker, prepared = marked
    assert_marker_round_trip(scan, marker, prepared, MARKER_MNI)
    back = prepared.to_scan(prepared.image)

    # and where 3D Slicer's reader puts the map written in the scan's geometry
    pytest.importorskip("slicer", reason="slicer-core is in the gui extra")
    from SlicerUADLib.scene import StandaloneScene, ijk_to_ras, volume_array

    node = StandaloneScene().load_volume(write_nifti(back, scan.grid, str(tmp_path / "map.nii.gz")))
    array = volume_array(node)
    in_slicer = bright_centroid(array, Grid(array.shape, ijk_to_ras(node)), 0.95)
    assert np.linalg.norm(in_slicer - marker) <= scan.grid.spacing.max()


def test_the_model_grid_is_fixed_in_mni_space(marked):
    _, _, _, prepared = marked
    other = make_preset("brain3d-behrendt").prepare(Scan(*template_scan("LPS", (2.0, 2.0, 2.0), (90, 110, 80), 0.95, -5.0)[:2], "b"))
    assert prepared.grid.shape == (64, 77, 66) and np.allclose(prepared.grid.affine, other.grid.affine)
    np.testing.assert_allclose(prepared.grid.spacing, 2.5)
    # white matter lands at the white-matter level, the marker (2x white matter) at the top
    from uadcore.preprocess import resample

    template = load_template()
    white_matter = (resample(template.wm, template.grid, prepared.grid) > 0.9) & prepared.region
    assert np.median(prepared.image[white_matter]) == pytest.approx(WHITE_MATTER_LEVEL, rel=0.05)
    assert prepared.image.max() == pytest.approx(1.0)
    assert (prepared.image[~prepared.region] == 0).all()


def _lesioned(image, brain, share, factor, centre):
    """``image`` with a sphere around ``centre`` (index) covering ``share`` of the brain scaled by ``factor``."""
    distance = np.linalg.norm(np.indices(image.shape).reshape(3, -1).T - centre, axis=1).reshape(image.shape)
    order = np.sort(distance[brain])
    lesion = (distance <= order[int(share * brain.sum())]) & brain
    out = image.copy()
    out[lesion] *= factor
    return out, lesion


@pytest.mark.parametrize("factor", [2.5, 0.2], ids=["hyperintense", "hypointense"])
def test_a_lesion_of_5_percent_of_the_brain_barely_changes_the_intensities_outside_it(factor):
    template = load_template()
    image, brain = template.t1 * 800.0, template.brain
    white_matter = (template.wm > 0.9) & brain
    centre = np.argwhere(white_matter).mean(axis=0) + [18, 0, 5]  # off-centre, in white matter
    with_lesion, lesion = _lesioned(image, brain, 0.05, factor, centre)
    assert (lesion & white_matter).sum() > 0.05 * white_matter.sum()  # the lesion takes white matter away
    clean = normalise_intensity(image, brain, white_matter_reference(image, white_matter))
    ill = normalise_intensity(with_lesion, brain, white_matter_reference(with_lesion, white_matter))
    outside = brain & ~lesion & (clean > 0.05)
    change = np.abs(ill[outside] - clean[outside]) / clean[outside]
    assert change.max() < 0.01, change.max()
    assert np.median(clean[white_matter]) == pytest.approx(WHITE_MATTER_LEVEL, rel=0.02)


def test_version_1_checkpoints_keep_their_preparation():
    array, grid, _, _ = template_scan()
    preset = preset_from_dict({"name": "brain3d-behrendt", "version": 1, "params": {}})
    assert preset.version == 1 and not preset.prepares_brain
    prepared = preset.prepare(Scan(array, grid, "old"))
    np.testing.assert_array_equal(prepared.to_template, np.eye(4))
    with pytest.raises(Exception, match="version 3"):
        preset_from_dict({"name": "brain3d-behrendt", "version": 3, "params": {}})


def test_skull_stripped_scans_are_recognised():
    array, grid, _, _ = template_scan()
    assert is_skull_stripped(Scan(array, grid, "brain"))
    head = array + 30.0 * (np.indices(grid.shape)[0] % 7)  # nothing constant around the brain
    assert not is_skull_stripped(Scan(head, grid, "head"))


def test_a_registration_that_fails_names_the_scan_and_the_step():
    grid = Grid.from_parts((60, 60, 60), (-60, -60, -60), (2.0, 2.0, 2.0))
    noise = np.random.default_rng(0).random(grid.shape).astype(np.float32)
    cube = np.zeros(grid.shape, np.float32)
    cube[10:50, 10:50, 10:50] = noise[10:50, 10:50, 10:50]  # a skull-stripped-looking block of noise
    with pytest.raises(ScanError, match=r"noise\.nii\.gz: registration to MNI152 failed"):
        make_preset("brain3d-behrendt").prepare(Scan(cube, grid, "noise.nii.gz"))


def test_registration_quality_of_the_template_itself_is_high():
    template = load_template()
    assert register_to_template(template.t1, Scan(template.t1, template.grid, "mni")).correlation > 0.95


def _ixi(n):
    folder = os.path.join(REALDATA, "ixi")
    if not os.path.isdir(folder):
        pytest.skip("../shared/realdata is not here")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:n]]


def test_deepbet_strips_real_ixi_heads_to_a_brain_sized_mask():
    for path in _ixi(2):
        scan = read_scan(path)
        assert not is_skull_stripped(scan)
        mask, _ = brain_mask(scan)
        assert 1000.0 < volume_ml(mask, scan) < 2000.0
        # the mask is one piece in the middle of the head, not the skull: brighter than the head around it
        assert scan.array[mask].mean() > 1.5 * scan.array[~mask & (scan.array > 0)].mean()
    import sys

    assert "tkinter" not in sys.modules and "customtkinter" not in sys.modules  # deepbet's GUI stays out (headless, Slicer)


def test_a_brain_mask_in_the_manifest_replaces_skull_stripping(cohort, tmp_path, capsys):
    import json

    import nibabel as nib

    from uadcore.cli import main
    from uadcore.io import ScanEntry, read_manifest, write_manifest

    entry = read_manifest(cohort)[0]
    image = nib.load(entry.path)
    brain = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(image.dataobj) > 0).astype(np.uint8), image.affine), brain)
    manifest = write_manifest([ScanEntry(entry.path, "healthy", None, str(brain))], str(tmp_path / "with-brain.csv"))
    assert "brain" in open(manifest).readline()
    assert main(["check", manifest, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["scans"]
    assert row["brain_from"] == "mask"

    # a brain mask on another grid: one line naming the mask, exit 2
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.uint8), np.eye(4)), other)
    bad = write_manifest([ScanEntry(entry.path, "healthy", None, str(other))], str(tmp_path / "bad-brain.csv"))
    assert main(["check", bad, "--json"]) == 2
    assert str(other) in capsys.readouterr().err


def test_a_lesion_mask_goes_to_the_model_grid_through_the_registration(tmp_path):
    from uadcore.io import ScanEntry
    from uadcore.preprocess.dataset import prepare_scan

    # far from MNI's origin: a mask resampled without the registration would miss
    array, grid, _, marker = template_scan("LPS", (2.0, 2.0, 2.0), (90, 110, 80), shift_mm=(30.0, -40.0, 25.0), marker_mni=MARKER_MNI)
    world = grid.index_to_world(np.indices(grid.shape).reshape(3, -1).T).reshape(*grid.shape, 3)
    mask = (np.linalg.norm(world - marker, axis=-1) <= 6.0).astype(np.float32)
    scan_path, mask_path = write_nifti(array, grid, str(tmp_path / "s.nii.gz")), write_nifti(mask, grid, str(tmp_path / "m.nii.gz"))
    prepared, on_model = prepare_scan((ScanEntry(scan_path, "unhealthy", mask_path), make_preset("brain3d-behrendt")))
    assert on_model.any()
    centre = prepared.grid.index_to_world(np.argwhere(on_model)).mean(axis=0)
    assert np.linalg.norm(centre - MARKER_MNI) <= prepared.grid.spacing.max()


def test_the_brain_mask_and_registration_are_shared_by_presets_through_the_disk_cache(marked, tmp_path, monkeypatch):
    from uadcore.preprocess import brain

    scan, _, _, _ = marked
    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "cache"))
    brain.BRAINS.clear()
    first = make_preset("brain3d-behrendt").prepare(scan)
    assert "register" in first.quality["seconds"]
    brain.BRAINS.clear()  # as in a new process: only the disk remains
    slices = make_preset("brain2d-slices").prepare(scan)
    assert set(slices.quality["seconds"]) == {"bias", "intensity"}  # no skull stripping, no registration
    np.testing.assert_array_equal(slices.to_template, first.to_template)

    monkeypatch.setenv("UAD_CACHE", "off")  # the same result computed from scratch
    brain.BRAINS.clear()
    fresh = make_preset("brain2d-slices").prepare(scan)
    assert "register" in fresh.quality["seconds"]
    # the same up to ITK's multithreaded sums (a micrometre here)
    np.testing.assert_allclose(fresh.to_template, slices.to_template, atol=1e-4)
    np.testing.assert_allclose(fresh.image, slices.image, atol=1e-3)
    brain.BRAINS.clear()


def test_a_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path):
    from uadcore.preprocess import cache

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="entry not written"):
        cache.store_entry(str(blocked), "ab" * 10, {"x": np.zeros(3)}, {})
    assert cache.load_entry(str(blocked), "ab" * 10) is None


def test_brain_patches_tile_the_mni_grid_and_keep_the_marker_in_place(marked):
    scan, _, _, _ = marked
    prepared = make_preset("patches2d", patch=32, stride=16, spacing_mm=2.0).prepare(scan)
    assert prepared.preset.prepares_brain and "registration_correlation" in prepared.quality
    np.testing.assert_allclose(prepared.grid.spacing, 2.0)
    assert np.linalg.norm(bright_centroid(prepared.image, prepared.grid, 0.95) - MARKER_MNI) <= 2.0
    tiles = prepared.inputs()
    assert tiles.shape[1:] == (1, 32, 32) and len(tiles) == len(prepared.units) > 100
    # the grid is the template's, whatever the scan
    other = make_preset("patches2d", patch=32, stride=16, spacing_mm=2.0).prepare(
        Scan(*template_scan("LPS", (2.0, 2.0, 2.0), (90, 110, 80), 0.95, -5.0)[:2], "b"))
    assert np.allclose(other.grid.affine, prepared.grid.affine) and other.grid.shape == prepared.grid.shape
    # any other 3D image keeps the plain path
    plain = make_preset("patches2d", patch=32, stride=16, brain=False).prepare(scan)
    assert not plain.preset.prepares_brain and np.allclose(plain.to_template, np.eye(4))
