"""The deformable registration: a `Warp` and its inverse, resampling through it,
and a scan whose anatomy is deformed against the template, prepared with
``registration="deformable"``: closer to the template than the affine alone, a
marker still lands at its template point and comes back to its own voxel, the
warp kept in the cache."""

import numpy as np
import pytest

from uadcore.io import Grid, Scan
from uadcore.preprocess import make_preset, resample
from uadcore.preprocess.template import load_template
from uadcore.preprocess.warp import Warp, resample_warped
from volumes import assert_marker_round_trip, bright_centroid, template_scan

MARKER_MNI = np.array([24.0, -10.0, 18.0])
BULGE_CENTRE_MNI = np.array([0.0, -15.0, 15.0])  # between the lateral ventricles


def _bulge(grid: Grid, centre, strength_mm: float, radius_mm: float) -> np.ndarray:
    """(3, I, J, K): a smooth radial displacement around ``centre`` (world mm),
    ``strength_mm`` at ``radius_mm`` from it, fading to 0 far away."""
    points = grid.index_to_world(np.indices(grid.shape).reshape(3, -1).T) - centre
    distance = np.linalg.norm(points, axis=1, keepdims=True)
    field = strength_mm * points / radius_mm * np.exp(0.5 - 0.5 * (distance / radius_mm) ** 2)
    return field.T.reshape((3,) + grid.shape).astype(np.float32)


def _grid(spacing=4.0, shape=(30, 34, 30)):
    return Grid.centred(np.zeros(3), np.full(3, spacing), shape)


def test_the_inverse_undoes_the_warp():
    grid = _grid()
    warp = Warp(grid, _bulge(grid, np.zeros(3), 6.0, 20.0))
    points = grid.index_to_world(np.argwhere(np.ones(grid.shape, bool))[::37])
    moved = points + warp.at(points)
    back = moved + warp.inverse.at(moved)
    assert warp.largest_mm > 5.0
    error = np.linalg.norm(back - points, axis=1)
    # what is left is the trilinear sampling of both fields at 4 mm
    assert np.median(error) < 0.02 and error.max() < 0.3, (np.median(error), error.max())


def test_no_displacement_samples_as_plain_resampling():
    rng = np.random.default_rng(0)
    source = Grid.centred(np.zeros(3), (1.0, 1.2, 2.0), (50, 40, 30))
    target = Grid.centred(np.array([1.0, -2.0, 0.5]), np.full(3, 2.5), (20, 18, 22))
    array = rng.random(source.shape).astype(np.float32)
    array[:5] = 0.0
    still = Warp(_grid(), np.zeros((3, 30, 34, 30), np.float32))
    np.testing.assert_allclose(resample_warped(array, source, target, still), resample(array, source, target), atol=1e-5)


def test_a_blob_moves_where_the_warp_points():
    grid = _grid()
    shift = np.zeros((3,) + grid.shape, np.float32)
    shift[0] = 6.0  # every template point shows what lies 6 mm to its right
    source = Grid.centred(np.zeros(3), np.full(3, 1.0), (60, 60, 60))
    world = source.index_to_world(np.indices(source.shape).reshape(3, -1).T).reshape(*source.shape, 3)
    blob = (np.linalg.norm(world - [6.0, 0.0, 0.0], axis=-1) < 5.0).astype(np.float32)
    target = Grid.centred(np.zeros(3), np.full(3, 1.0), (60, 60, 60))
    moved = resample_warped(blob, source, target, Warp(grid, shift))
    np.testing.assert_allclose(bright_centroid(moved, target, 0.5), [0.0, 0.0, 0.0], atol=0.3)
    labels = resample_warped(blob, source, target, Warp(grid, shift), order=0)
    assert set(np.unique(labels)) == {0.0, 1.0}


def test_a_warp_needs_a_displacement_on_its_grid():
    with pytest.raises(ValueError, match="displacement"):
        Warp(_grid(), np.zeros((3, 4, 4, 4), np.float32))


@pytest.fixture(scope="module")
def deformed():
    """The template brain with its middle pushed outwards (ventricles and all, by
    up to 5 mm: enlarged as an older person's), then placed by a known affine, with
    a marker; prepared with the affine and with the deformable registration."""
    _, grid, template_to_scan, _ = template_scan()
    template = load_template()
    marked = template.t1.copy()
    world = template.grid.index_to_world(np.indices(template.grid.shape).reshape(3, -1).T).reshape(*template.grid.shape, 3)
    marked[np.linalg.norm(world - MARKER_MNI, axis=-1) <= 6.0] = 2.0 * float(np.percentile(template.t1[template.brain], 90))
    # each point y of the deformed brain shows the template at y + d(y), d pointing
    # inwards: the middle of the brain grows
    field_grid = Grid.centred((template.brain_bounds[0] + template.brain_bounds[1]) / 2.0, np.full(3, 4.0), (46, 56, 46))
    growth = Warp(field_grid, -_bulge(field_grid, BULGE_CENTRE_MNI, 5.0, 18.0))
    in_template = Grid(grid.shape, np.linalg.inv(template_to_scan) @ grid.affine)
    deformed = resample_warped(marked, template.grid, in_template, growth) * 1000.0
    deformed[deformed < 1.0] = 0.0
    # the marker's centre in the scan: the point that shows the template's MARKER_MNI
    in_deformed = MARKER_MNI + growth.inverse.at(MARKER_MNI[None])[0]
    marker = (template_to_scan @ np.append(in_deformed, 1.0))[:3]
    scan = Scan(deformed.astype(np.float32), grid, "deformed.nii.gz")
    # the deformable one first: it finds no affine registration in the cache and fits both
    warped = make_preset("brain3d-behrendt", registration="deformable").prepare(scan)
    affine = make_preset("brain3d-behrendt").prepare(scan)
    return scan, marker, affine, warped


def test_the_deformable_registration_brings_the_anatomy_closer_to_the_template(deformed):
    _, _, affine, warped = deformed
    template = load_template()
    reference = resample(template.t1, template.grid, affine.grid)
    inside = affine.region & warped.region

    def correlation(prepared):
        return np.corrcoef(prepared.image[inside], reference[inside])[0, 1]

    assert affine.warp is None and warped.warp is not None
    assert warped.quality["warp_largest_mm"] > 2.0
    assert correlation(warped) > correlation(affine) + 0.02, (correlation(warped), correlation(affine))


def test_a_marker_goes_through_the_warp_and_comes_back_to_its_native_voxel(deformed):
    scan, marker, _, warped = deformed
    assert_marker_round_trip(scan, marker, warped, MARKER_MNI)
    # a mask drawn on the scan lands on the model grid where the image's marker is
    sphere = (np.linalg.norm(scan.grid.index_to_world(np.indices(scan.grid.shape).reshape(3, -1).T) - marker, axis=1)
              <= 6.0).reshape(scan.grid.shape)
    on_grid = warped.from_scan(sphere.astype(np.float32), order=0) > 0.5
    on_model = bright_centroid(warped.image, warped.grid, 0.95)
    assert np.linalg.norm(bright_centroid(on_grid.astype(np.float32), warped.grid, 0.5) - on_model) <= 2.5


def test_a_point_of_the_model_grid_goes_to_the_same_anatomy_in_the_scan(deformed):
    """`Prepared.to_scan_points` (how the audit places a map's peak on the scan): the
    marker's centre on the model grid lands on the marker in the scan, through the
    affine registration alone and through the warp, as `to_scan` moves a volume."""
    scan, marker, affine, warped = deformed
    for prepared in (affine, warped):
        on_model = bright_centroid(prepared.image, prepared.grid, 0.95)
        assert np.linalg.norm(prepared.to_scan_points(on_model[None])[0] - marker) <= 2.5, prepared.warp
        moved = prepared.to_scan(prepared.image)
        assert np.linalg.norm(bright_centroid(moved, scan.grid, 0.95) - prepared.to_scan_points(on_model[None])[0]) <= 2.5
    # a model voxel's volume on the scan: the 2.5 mm voxel scaled as the brain was placed (by 1.08 in each axis)
    for prepared in (affine, warped):
        assert prepared.scan_ml_per_voxel() == pytest.approx(2.5**3 / 1000.0 * 1.08**3, rel=0.05)


def test_the_warp_is_cached_with_the_prepared_scan(deformed, tmp_path, monkeypatch):
    from uadcore.preprocess import cache

    _, _, _, warped = deformed
    cache.store(str(tmp_path), "k" * 64, warped, None)
    loaded, _ = cache.load(str(tmp_path), "k" * 64, warped.preset)
    np.testing.assert_array_equal(loaded.warp.displacement, warped.warp.displacement)
    np.testing.assert_array_equal(loaded.to_scan(loaded.image), warped.to_scan(warped.image))


def test_uad_train_score_and_evaluate_through_the_deformable_registration(cohort, tmp_path, capsys):
    import json

    import nibabel as nib

    from uadcore.cli import main
    from uadcore.io import read_manifest, write_manifest

    entries = read_manifest(cohort)
    healthy, unhealthy = [e for e in entries if e.label == "healthy"], [e for e in entries if e.label == "unhealthy"]
    train = write_manifest(healthy + unhealthy[:1], str(tmp_path / "train.csv"))
    run = tmp_path / "run"
    assert main(["train", "--data", train, "--model", "normative", "--registration", "deformable", "--out", str(run),
                 "--val-fraction", "0", "--json"]) == 0
    with open(run / "config.json") as handle:
        assert json.load(handle)["preset_params"]["registration"] == "deformable"
    capsys.readouterr()

    scan, out_path = unhealthy[1], tmp_path / "z.nii.gz"
    assert main(["score", str(run), scan.path, "--map", "abs-z", "--out", str(out_path), "--json"]) == 0
    z = np.asarray(nib.load(out_path).dataobj)
    lesion = np.asarray(nib.load(scan.mask).dataobj) > 0
    brain = np.asarray(nib.load(scan.path).dataobj) != 0
    assert z.shape == lesion.shape  # back on the scan's own grid, through the inverse warp
    assert np.median(z[lesion & brain]) > 1.5 * np.median(z[brain & ~lesion])
    capsys.readouterr()

    test = write_manifest(unhealthy[1:], str(tmp_path / "test.csv"))
    assert main(["evaluate", str(run), "--data", test, "--map", "abs-z", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["voxel_auroc"] > 0.6  # the masks went through the same warp
